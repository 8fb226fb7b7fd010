"""Storage: schema, reader, atomic writes, compression, a killed writer."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from farm.config import CompressionSettings, RenderSettings, RunSpec
from farm.disk import PARTED_BYTES, PARTED_ROWS, default_part_rows, row_bytes
from farm.errors import DatasetError, OutputExistsError, OutputPathError
from farm.params.label import Label
from farm.params.registry import Registry
from farm.params.tiers import TierParams, tier_params
from farm.paths import check_output, resolve_output, run_output, stored_output
from farm.settings import FarmSettings, settings_env, settings_from_env
from farm.storage import integrity, schema
from farm.storage.integrity import verify_file, verify_rows
from farm.storage.merge import MissingRowsError, Piece, merge
from farm.storage.reader import FarmReader
from farm.storage.shard import Row, ShardWriter

from .conftest import fake_rows, small_spec


def write(path: Path, spec: RunSpec, tp: TierParams, registry: Registry) -> list[Row]:
    rows = fake_rows(spec, tp)
    with ShardWriter(path, spec, tp, registry.fingerprint) as w:
        w.append(rows[:3])
        w.append(rows[3:])
        w.close({"SILENT": 2}, renders=len(rows) + 2)
    return rows


@pytest.mark.parametrize("tier", [1, 3])
def test_written_file_passes_schema_and_reads_back(
    tmp_path: Path, registry: Registry, tier: int
) -> None:
    spec = small_spec(tier=tier)
    tp = tier_params(registry, tier)
    path = tmp_path / "x.h5"
    rows = write(path, spec, tp, registry)
    assert not (tmp_path / "x.h5.tmp").exists()
    with h5py.File(path, "r") as f:
        assert schema.check_file(f) == []
        assert f[schema.AUDIO].chunks == (1, 2, spec.render.samples)
        # The data part of the spec: no batch size (scheduling never shows in a file).
        assert json.loads(f.attrs["run_spec"]) == json.loads(spec.data_json())
        assert "batch_size" not in json.loads(f.attrs["run_spec"])
        assert f.attrs["registry_fingerprint"] == registry.fingerprint
        for a in ("names", "raw_min", "raw_max"):
            assert a in f[schema.CONTINUOUS].attrs
        assert set(json.loads(f[schema.CATEGORICAL].attrs["options"])) == {
            s.name for s in tp.categorical
        }
        assert (schema.MODULATION in f) == (tier == 3)
        if tier == 3:
            assert f[schema.MODULATION].shape[1:] == (4, 32, 428)
            assert list(f[schema.MODULATION].attrs["channels"]) == [
                "amount",
                "bipolar",
                "power",
                "stereo",
            ]
    with FarmReader(path) as r:
        info = r.info()
        assert info["rows"] == len(rows) and info["tier"] == tier
        assert info["rejections"] == {"SILENT": 2} and info["renders"] == len(rows) + 2
        assert r.totals() == {k: info[k] for k in ("rows", "renders", "rejections")}
        s = r.get_sample(4)
        assert np.array_equal(s["audio"], rows[4].audio)
        assert np.array_equal(s["continuous"], rows[4].label.continuous)
        assert s["preset_hash"] == rows[4].label.hash and s["midi_note"] == rows[4].note
        assert (s["job"], s["preset"]) == (0, rows[4].preset)
        b = r.get_batch([5, 1, 5])
        assert np.array_equal(b["audio"][0], rows[5].audio)
        assert np.array_equal(b["audio"][1], rows[1].audio)
        assert list(b["midi_note"]) == [rows[5].note, rows[1].note, rows[5].note]
        raw = r.raw_values(0)
        assert raw["osc_1_on"] == "On"
        with pytest.raises(DatasetError, match="out of range"):
            r.get_sample(len(rows))


def test_schema_check_catches_damage(tmp_path: Path, registry: Registry, tp1: TierParams) -> None:
    path = tmp_path / "x.h5"
    write(path, small_spec(), tp1, registry)
    with h5py.File(path, "a") as f:
        f["params/continuous"][0, 0] = 1.5
        del f.attrs["seed"]
    with h5py.File(path, "r") as f:
        problems = schema.check_file(f)
    assert any("seed" in p for p in problems)
    with pytest.raises(DatasetError):
        FarmReader(path)


def test_abort_leaves_nothing(tmp_path: Path, registry: Registry, tp1: TierParams) -> None:
    path = tmp_path / "x.h5"
    spec = small_spec()
    with pytest.raises(KeyboardInterrupt), ShardWriter(path, spec, tp1, registry.fingerprint) as w:
        w.append(fake_rows(spec, tp1))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "settings",
    [
        CompressionSettings(codec="none"),
        CompressionSettings(codec="gzip", level=4, shuffle=False),
        CompressionSettings(codec="gzip", level=1, shuffle=True),
        CompressionSettings(codec="lzf", shuffle=True),
        CompressionSettings(codec="gzip", audio_dtype="float16"),
    ],
)
def test_compression_options_round_trip(
    tmp_path: Path, registry: Registry, tp1: TierParams, settings: CompressionSettings
) -> None:
    spec = small_spec(compression=settings)
    path = tmp_path / "x.h5"
    rows = write(path, spec, tp1, registry)
    with FarmReader(path) as r:
        got = r.get_sample(2)["audio"]
        assert got.dtype == np.float32
        if settings.audio_dtype == "float16":
            assert r.file[schema.AUDIO].dtype == np.float16
            assert np.allclose(got, rows[2].audio, atol=1e-3)
        else:
            assert np.array_equal(got, rows[2].audio)
        expected = None if settings.codec == "none" else settings.codec
        assert r.file[schema.AUDIO].compression == expected


def test_a_rows_checksum_is_blake2b_of_its_bytes_in_schema_order(
    tmp_path: Path, registry: Registry, tp1: TierParams
) -> None:
    """The checksum other tools can recompute without farm (docs/faults.md): blake2b-128, as
    hex, over the row's bytes in every per-row dataset in ``row_datasets`` order."""
    path = tmp_path / "x.h5"
    rows = write(path, small_spec(), tp1, registry)
    with h5py.File(path, "r") as f:
        names = [n for n in schema.row_datasets(schema.MODULATION in f)[:-1] if n in f]
        assert names[0] == schema.AUDIO and len(names) > 5
        for i in range(len(rows)):
            h = hashlib.blake2b(digest_size=16)
            for name in names:  # a slice: fixed-width strings keep their NUL padding
                h.update(f[name][i : i + 1].tobytes())
            assert h.hexdigest().encode() == f[schema.CHECKSUM][i]


@pytest.mark.parametrize("codec", ["none", "gzip"])
@pytest.mark.parametrize("block", [1024, 2])
def test_verify_names_exactly_the_damaged_rows(
    tmp_path: Path,
    registry: Registry,
    tp1: TierParams,
    codec: str,
    block: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows are checked in blocks, one hashed while the next is read; a changed row and an
    unreadable chunk (read again row by row) each cost only their own row, and ranges check
    only the rows asked for."""
    monkeypatch.setattr(integrity, "_BLOCK", block)  # one block, or four of two rows
    spec = small_spec(compression=CompressionSettings(codec=codec))  # type: ignore[arg-type]
    path = tmp_path / "x.h5"
    rows = write(path, spec, tp1, registry)
    with h5py.File(path, "a") as f:
        f[schema.AUDIO][1, 0, 0] += 0.5  # decodes fine, no longer matches its checksum
        if codec == "gzip":  # a chunk that no longer decodes
            f[schema.AUDIO].id.write_direct_chunk((4, 0, 0), b"not gzip at all", 0)
    with h5py.File(path, "r") as f:
        progress: list[int] = []
        assert verify_rows(f, on_block=progress.append).rows == len(rows)
        assert progress == sorted(progress) and progress[-1] == len(rows)
        assert len(progress) == -(-len(rows) // block)
        assert verify_rows(f).bad == ([1, 4] if codec == "gzip" else [1])
        some = verify_rows(f, [(2, 5), (0, 1)])
        assert some.rows == 4 and some.bad == ([4] if codec == "gzip" else [])
    with h5py.File(path, "a") as f:
        f[schema.CHECKSUM][2] = b"0" * 32  # a damaged checksum is a damaged row too
    with h5py.File(path, "r") as f:
        assert verify_rows(f).bad == ([1, 2, 4] if codec == "gzip" else [1, 2])


@pytest.mark.parametrize("codec", ["none", "gzip"])
def test_merge_copies_interleaved_jobs_and_names_damaged_ones(
    tmp_path: Path, registry: Registry, tp1: TierParams, codec: str
) -> None:
    """Jobs 0 and 2 in one shard, job 1 in another: the merge takes them in job order (in
    blocks gathered across shards; compressed chunks moved as they are), and a row that no
    longer matches its checksum or a chunk that no longer decodes names exactly its job."""
    spec = small_spec(n=20, compression=CompressionSettings(codec=codec))  # type: ignore[arg-type]
    rows = {j: fake_rows(spec, tp1, j) for j in range(3)}
    block = spec.sampling.block
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    # Between jobs 0 and 2 in shard a, 72 rows the dataset does not take (jobs past n):
    # job 2 is far from job 0 there, as a job sent again lands late in its shard.
    later = [row for j in range(3, 12) for row in fake_rows(spec, tp1, j)]
    for path, parts in ((a, [rows[0], later, rows[2]]), (b, [rows[1]])):
        with ShardWriter(path, spec, tp1, registry.fingerprint) as w:
            for part in parts:
                w.append(part)
            w.close({}, renders=0)
    pieces = [
        Piece(0, a, 0, 8, presets=(0, 4)),
        Piece(1, b, 0, 8, presets=(block, 4)),
        Piece(2, a, 80, 8, presets=(2 * block, 4)),
    ]
    out = tmp_path / "out.h5"
    done = merge(out, spec, tp1, registry.fingerprint, pieces, by_preset={})
    assert done.raw_chunks == (20 if codec == "gzip" else 0)
    expected = [*rows[0], *rows[1], *rows[2][:4]]
    with FarmReader(out) as r:
        for i, row in enumerate(expected):
            got = r.get_sample(i)
            assert (got["job"], got["preset"], got["midi_note"]) == (row.job, row.preset, row.note)
            np.testing.assert_array_equal(got["audio"], row.audio)
    assert verify_file(out).bad == []
    out.unlink()
    with h5py.File(a, "a") as f:
        f[schema.AUDIO][81, 0, 0] += 0.5  # job 2's second row
    with h5py.File(b, "a") as f:
        if codec == "gzip":  # job 1's third row no longer decodes
            f[schema.AUDIO].id.write_direct_chunk((2, 0, 0), b"not gzip at all", 0)
    with pytest.raises(MissingRowsError) as e:
        merge(out, spec, tp1, registry.fingerprint, pieces, by_preset={})
    assert e.value.jobs == ([1, 2] if codec == "gzip" else [2])
    assert not out.exists() and not list(tmp_path.glob("out.h5*"))


def test_large_datasets_are_parted_by_default() -> None:
    """One file up to 10,000 rows and 1 GB; beyond, parts of about 1 GB, at most 10,000
    rows (a 6,000-row tier-2 run of 2 s notes is 4.2 GB)."""
    short = RenderSettings(render_duration=0.1, note_duration=0.05)
    assert default_part_rows(RunSpec(tier=1, n=10_000, render=short)) == 0
    assert default_part_rows(RunSpec(tier=1, n=10_001, render=short)) == PARTED_ROWS
    assert default_part_rows(RunSpec(tier=2, n=1_000)) == 0  # 0.7 GB
    parts = default_part_rows(RunSpec(tier=2, n=6_000))
    assert 0 < parts < 6_000 and parts * row_bytes(RunSpec(tier=2, n=1)) <= PARTED_BYTES


def test_killed_writer_leaves_a_readable_file_up_to_its_last_flush(tmp_path: Path) -> None:
    """kill -9 of a process that appends and flushes: the file reads back every flushed row."""
    path = tmp_path / "shard.h5"
    code = f"""
import sys, time
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from tests.conftest import fake_rows, small_spec
from farm.storage.shard import ShardWriter
spec = small_spec(batch_size=2)
reg = get_registry(); tp = tier_params(reg, 1)
w = ShardWriter({str(path)!r}, spec, tp, reg.fingerprint, atomic=False)
for job in range(3):
    w.append(fake_rows(spec, tp, job)); w.flush()
print("flushed", w.rows, flush=True)
w.append(fake_rows(spec, tp, 9))  # appended, never flushed
time.sleep(60)
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("flushed"), line
    flushed = int(line.split()[1])
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with h5py.File(path, "r") as f:
        assert f[schema.AUDIO].shape[0] >= flushed
        assert f["metadata/job"][:flushed].tolist() == sorted(f["metadata/job"][:flushed])
        assert np.isfinite(f[schema.AUDIO][flushed - 1]).all()


def test_output_paths_stay_in_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_output(data, None, "tier1_5.h5") == data / "tier1_5.h5"
    assert resolve_output(data, "data/x.h5", "d.h5") == data / "x.h5"
    assert resolve_output(data, "x.h5", "d.h5") == data / "x.h5"
    assert resolve_output(data, str(data / "sub" / "x.h5"), "d.h5") == data / "sub" / "x.h5"
    for bad in ("../x.h5", "/etc/x.h5", "data/../../x.h5", str(tmp_path / "x.h5")):
        with pytest.raises(OutputPathError):
            resolve_output(data, bad, "d.h5")
        # A command writing in its own process goes where its user says.
        assert resolve_output(data, bad, "d.h5", confine=False).name == "x.h5"
    assert resolve_output(data, "/etc/x.h5", "d.h5", confine=False) == Path("/etc/x.h5")
    with pytest.raises(OutputPathError, match=r"\.h5"):
        resolve_output(data, "x.txt", "d.h5")
    (data / "x.h5").write_bytes(b"")
    with pytest.raises(OutputExistsError):
        check_output(data / "x.h5", force=False)
    check_output(data / "x.h5", force=True)
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output(data / "nope" / "x.h5", force=False)


def test_stored_outputs_stay_in_the_data_folder_or_granted_roots(tmp_path: Path) -> None:
    """A path from the ledger is confined; an absolute one only inside a granted root."""
    data, granted = tmp_path / "data", tmp_path / "granted"
    assert stored_output(data, "x.h5") == data / "x.h5"
    for bad in ("../x.h5", "/etc/x.h5", str(granted / "x.h5"), str(granted / ".." / "x.h5")):
        with pytest.raises(OutputPathError):
            stored_output(data, bad)
    roots = (str(granted),)
    assert stored_output(data, str(granted / "x.h5"), roots=roots) == granted / "x.h5"
    with pytest.raises(OutputPathError):
        stored_output(data, str(granted / ".." / "x.h5"), roots=roots)
    settings = FarmSettings(data_dir=str(data))
    same, rel = run_output(settings, data / "sub" / "x.h5", embedded=True)
    assert (same, rel) == (settings, "sub/x.h5")
    given, rel = run_output(settings, granted / "x.h5", embedded=True)
    assert rel == str(granted / "x.h5") and given.output_roots == roots
    with pytest.raises(OutputPathError, match="FARM_OUTPUT_ROOTS"):
        run_output(settings, granted / "x.h5", embedded=False)
    # The grant reaches a worker process's environment and back.
    env = settings_env(given)
    assert env["FARM_OUTPUT_ROOTS"] == str(granted)
    assert settings_from_env(env).output_roots == roots


def test_label_round_trip_through_file(tmp_path: Path, registry: Registry, tp1: TierParams) -> None:
    path = tmp_path / "x.h5"
    rows = write(path, small_spec(), tp1, registry)
    with FarmReader(path) as r:
        s = r.get_sample(0)
        again = Label(1, s["continuous"], s["categorical"])
    assert again.hash == rows[0].label.hash
