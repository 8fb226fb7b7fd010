"""farm preview driven headlessly by Textual's pilot on a real farm file: move, filter,
export; and its pure parts (filter syntax, sketches)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import wavfile

from farm.errors import UsageError
from farm.storage.reader import FarmReader
from farm.tools.preview import RowFilter, make_app, read_meta, spectrogram_sketch, waveform_sketch


def test_pilot_moves_filters_and_exports(dataset_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("textual")
    data = tmp_path / "data"
    exported: list[int] = []
    with h5py.File(dataset_file, "r") as f:
        # Not half: a note that repeats another note's audio is not a row.
        at_60 = int((f["metadata/midi_note"][:] == 60).sum())

    async def drive() -> None:
        app = make_app(str(dataset_file), str(data))
        async with app.run_test(size=(180, 50)) as pilot:
            await pilot.pause()
            assert app.current == 0
            assert "40 of 40 rows" in app.last_message
            await pilot.press("down", "down")
            await pilot.pause()
            assert app.current == 2
            await pilot.press("slash")
            await pilot.press(*"note=60", "enter")
            await pilot.pause()
            assert len(app.shown) == at_60 and f"{at_60} of 40 rows" in app.last_message
            await pilot.press("down")
            await pilot.pause()
            exported.append(int(app.shown[1]))
            assert app.current == exported[0]
            await pilot.press("e")
            await pilot.pause()
            assert "wrote" in app.last_message
            await pilot.press("slash", *"note=banana", "enter")
            await pilot.pause()
            assert "needs a number" in app.last_message
            await pilot.press("q")

    asyncio.run(drive())
    second = exported[0]
    wavs = list(data.glob("*.wav"))
    assert [w.name for w in wavs] == [f"preview_ds_row{second}.wav"]
    _, audio = wavfile.read(wavs[0])
    with h5py.File(dataset_file, "r") as f:
        assert f["metadata/midi_note"][second] == 60
        np.testing.assert_array_equal(audio.T, f["audio/waveforms"][second])


def test_filter_syntax(dataset_file: Path) -> None:
    with FarmReader(dataset_file) as r:
        meta = read_meta(r)
    assert len(RowFilter.parse("").rows(meta)) == 40
    at_48 = int((meta["midi_note"] == 48).sum())
    assert 0 < at_48 < 40
    assert len(RowFilter.parse("note=48 tier=1 source=synthetic").rows(meta)) == at_48
    assert len(RowFilter.parse("source=community").rows(meta)) == 0
    name = meta["preset_name"][7]
    assert 7 in RowFilter.parse(name.upper()).rows(meta)
    with pytest.raises(UsageError, match="unknown filter"):
        RowFilter.parse("colour=red")


def test_sketches_follow_the_sound() -> None:
    t = np.arange(22050) / 44100.0
    tone = np.sin(2 * np.pi * 440 * t) * np.linspace(1, 0, t.size)
    audio = np.stack([tone, tone]).astype(np.float32)
    wave = waveform_sketch(audio, width=20, height=4).splitlines()
    heights = [sum(line[c] == "█" for line in wave) for c in range(20)]
    assert len(wave) == 4 and heights[0] == 4 and heights[-1] <= 1  # it fades out
    assert heights == sorted(heights, reverse=True)
    spec = spectrogram_sketch(audio, 44100, width=20, height=12).splitlines()
    loudest = max(range(12), key=lambda r: sum(ch != " " for ch in spec[r]))
    assert 3 <= loudest <= 8  # 440 Hz sits in the middle rows of a 40 Hz..22 kHz log axis
