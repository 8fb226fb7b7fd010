"""farm inspect --wav/--png on a real farm file: the WAV is the stored audio, the pictures
are real PNGs, outputs stay in the data folder and nothing is half-written."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
from scipy.io import wavfile

from farm.storage.reader import FarmReader
from farm.tools.pictures import IMPORTANCE, important_parameters
from tests.farm_helpers import farm

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_row_wav_and_picture(dataset_file: Path, tmp_path: Path) -> None:
    res = farm(
        tmp_path, "inspect", str(dataset_file), "-s", "3", "--wav", "r.wav", "--png", "r.png"
    )
    assert res.returncode == 0, res.stderr
    rate, audio = wavfile.read(tmp_path / "data" / "r.wav")
    with h5py.File(dataset_file, "r") as f:
        assert rate == f.attrs["sample_rate"]
        np.testing.assert_array_equal(audio.T, f["audio/waveforms"][3])
    width, height = _png_size(tmp_path / "data" / "r.png")
    assert width >= 1000 and height >= 500
    assert not list((tmp_path / "data").glob("*.tmp"))


def test_overview_picture(dataset_file: Path, tmp_path: Path) -> None:
    res = farm(tmp_path, "inspect", str(dataset_file), "--png", "overview.png")
    assert res.returncode == 0, res.stderr
    assert "overview of 40 rows" in res.stdout
    width, height = _png_size(tmp_path / "data" / "overview.png")
    assert width >= 1000 and height >= 500


def test_bad_picture_requests_are_one_line(dataset_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "taken.png").write_bytes(b"keep me")
    for args, message in (
        (["--wav", "x.wav"], "--wav needs a row"),
        (["-s", "0", "--png", "/nonexistent-dir/x.png"], "does not exist"),
        (["-s", "0", "--wav", "new.wav", "--png", "taken.png"], "exists"),
        (["-s", "99", "--png", "y.png"], "out of range"),
        (["-s", "0", "--png", "x.jpg"], ".png"),
    ):
        res = farm(tmp_path, "inspect", str(dataset_file), *args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.count("\n") == 1 and message in res.stderr, (args, res.stderr)
    # Refused before anything was written: the WAV of the refused pair is not there either.
    assert sorted(p.name for p in data.iterdir()) == ["taken.png"]
    assert (data / "taken.png").read_bytes() == b"keep me"
    assert not (tmp_path / "x.png").exists()


def test_importance_weights_decide_what_is_shown(dataset_file: Path, tmp_path: Path) -> None:
    copy = tmp_path / "weighted.h5"
    shutil.copy(dataset_file, copy)
    with FarmReader(copy) as r:
        row = r.get_sample(0)
        plain = important_parameters(r, row, 5)
        active = r.file["params/active_continuous"][0]
        ranked = important_parameters(r, row, len(r.continuous_names))
        heard = [n for n in ranked if active[r.continuous_names.index(n)]]
        assert ranked[: len(heard)] == heard  # what the row can hear comes first
        last = r.continuous_names.index(heard[-3])
        weights = np.ones(len(r.continuous_names))
    weights[last] = 1e6
    with h5py.File(copy, "a") as f:
        f[IMPORTANCE] = weights
    with FarmReader(copy) as r:
        weighted = important_parameters(r, r.get_sample(0), 5)
    assert weighted[0] == r.continuous_names[last] and weighted[0] not in plain


def test_the_overview_shows_what_can_be_heard(dataset_file: Path) -> None:
    """The overview picks the parameters the active mask says are heard in the most rows,
    categoricals too, and never one no row can hear."""
    from farm.tools.pictures import shown_columns

    with FarmReader(dataset_file) as r:
        active = r.file["params/active_continuous"][...].mean(axis=0)
        shown = shown_columns(r, 10)
        assert len(shown) == 10 and all(active[j] > 0 for j in shown)
        assert active[shown[0]] == active.max()
        assert list(active[shown]) == sorted(active[shown], reverse=True)
        never = [j for j in range(len(active)) if active[j] == 0]
        assert not set(shown_columns(r, len(active))) & set(never)
        cats = shown_columns(r, 8, categorical=True)
        cat_active = r.file["params/active_categorical"][...].mean(axis=0)
        assert cats and all(cat_active[j] > 0 for j in cats)


def test_export_wav_and_labels(dataset_file: Path, tmp_path: Path) -> None:
    """farm export --format wav: every row's WAV is its stored audio, labels.jsonl names
    every parameter (raw as the reader gives it), an existing folder is refused."""
    import json

    out = tmp_path / "exported"
    res = farm(tmp_path, "export", str(dataset_file), "-o", str(out))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and sorted(p.name for p in (out / "rows").iterdir())[0] == "0000000.wav"
    with FarmReader(dataset_file) as r, h5py.File(dataset_file, "r") as f:
        for row in (lines[0], lines[17], lines[39]):
            i = row["index"]
            rate, audio = wavfile.read(out / row["file"])
            assert rate == f.attrs["sample_rate"]
            np.testing.assert_array_equal(audio.T, f["audio/waveforms"][i])
            raw = r.raw_values(i)
            assert row["raw"] == {n: raw[n] for n in r.continuous_names}
            assert row["categorical"] == {n: raw[n] for n in r.categorical_names}
            assert row["midi_note"] == int(f["metadata/midi_note"][i])
    res = farm(tmp_path, "export", str(dataset_file), "-o", str(out))
    assert res.returncode == 2 and "exists" in res.stderr
    assert not list(tmp_path.glob("exported.*.tmp"))
