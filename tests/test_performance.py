"""Variation per row: notes, velocity and note length drawn from the seed and the global
preset index, stored per row, rendered exactly as stored, never changed by scheduling."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from farm.config import NoteDraw, RenderSettings
from farm.params.normalize import continuous_from_raw
from farm.params.tiers import TierParams
from farm.render.engine import RenderEngine
from farm.render.performance import Played, performances
from tests.conftest import init_label
from tests.farm_helpers import farm
from tests.test_farm import _everything

VARIED = ["--tier", "2", "--notes", "40:80", "--notes-per-preset", "2"]
VARIED += ["--velocity", "0.1:1.0", "--note-duration", "0.1:0.4", "--render-duration", "0.5"]
VARIED += ["--seed", "3", "-n", "16"]


def test_fixed_settings_play_exactly_the_settings() -> None:
    """A single value keeps today's rows: the settings' own floats, in the settings' order."""
    s = RenderSettings(notes=(72, 48), velocity=0.8, note_duration=1.5)
    assert performances(s, 9, 123) == (Played(72, 0.8, 1.5), Played(48, 0.8, 1.5))


def test_ranges_are_drawn_per_preset_from_seed_and_index() -> None:
    s = RenderSettings(
        notes=NoteDraw(lo=40, hi=50, per_preset=4), velocity=(0.2, 0.9), note_duration=(0.1, 1.0)
    )
    rows = [performances(s, 5, g) for g in range(200)]
    assert rows[17] == performances(s, 5, 17)  # a pure function of (seed, g)
    assert performances(s, 6, 17) != rows[17]
    assert len(set(rows)) == 200
    for played in rows:
        notes = [p.note for p in played]
        assert notes == sorted(set(notes)) and len(notes) == 4
        assert all(40 <= n <= 50 for n in notes)
        for p in played:
            assert 0.2 <= p.velocity <= 0.9 and 0.1 <= p.note_duration <= 1.0
            # Stored as float32 exactly: the value stored is the value rendered.
            assert float(np.float32(p.velocity)) == p.velocity
    velocities = np.array([p.velocity for r in rows for p in r])
    assert velocities.min() < 0.25 and velocities.max() > 0.85  # the whole range is used


def test_velocity_is_heard_through_velocity_track(tp2: TierParams) -> None:
    """vita's init patch ignores velocity (velocity_track 0); velocity_track 1 makes it
    heard. Documented with the --velocity option."""
    engine = RenderEngine(tp2, RenderSettings(notes=(60,), note_duration=0.3, render_duration=0.5))
    try:
        label = init_label(tp2)
        soft, loud = Played(60, 0.2, 0.3), Played(60, 1.0, 0.3)
        (a,), (b,) = engine.render(label, (soft,)), engine.render(label, (loud,))
        assert a.audio is not None and b.audio is not None
        assert np.array_equal(a.audio, b.audio)
        col = tp2.continuous_index("velocity_track")
        cont = label.continuous.copy()
        cont[col] = continuous_from_raw(tp2, np.array([s.default for s in tp2.continuous]))[col]
        cont[col] = 1.0  # raw +1
        tracked = replace(label, continuous=cont)
        (a,), (b,) = engine.render(tracked, (soft,)), engine.render(tracked, (loud,))
        assert a.audio is not None and b.audio is not None
        assert np.abs(b.audio).max() > 2 * np.abs(a.audio).max()
    finally:
        engine.close()


def test_varied_rows_are_stored_rerender_and_ignore_the_schedule(tmp_path: Path) -> None:
    """The farm (2 workers, batch 2) and one process (batch 8) make the same file; every
    row stores its velocity and note length, and renders again bit for bit from them."""
    out = farm(tmp_path, "submit", *VARIED, "--batch-size", "2", "--workers", "2", "-o", "a.h5")
    assert out.returncode == 0, out.stderr
    out = farm(tmp_path, "generate", *VARIED, "--batch-size", "8", "-o", "b.h5")
    assert out.returncode == 0, out.stderr
    one, other = (_everything(tmp_path / "data" / n) for n in ("a.h5", "b.h5"))
    assert one.keys() == other.keys()
    assert all(one[k] == other[k] for k in one)
    path = tmp_path / "data" / "a.h5"
    with h5py.File(path, "r") as f:
        notes = f["metadata/midi_note"][:]
        velocity = f["metadata/velocity"][:]
        duration = f["metadata/note_duration"][:]
        keys = list(zip(f["metadata/job"][:], f["metadata/preset"][:], strict=True))
        audio = f["audio/waveforms"][:]
    assert len(notes) == 16 and notes.min() >= 40 and notes.max() <= 80
    assert len(set(velocity.tolist())) == 16 and 0.1 <= velocity.min() <= velocity.max() <= 1.0
    assert 0.1 <= duration.min() <= duration.max() <= 0.4
    for key in set(keys):  # the notes of one preset are distinct
        mine = [int(n) for n, k in zip(notes, keys, strict=True) if k == key]
        assert len(mine) == len(set(mine))
    # A fresh process renders with the workers' random history (vita's oscillator phase is
    # process-wide and each Synth made moves it), so the stored velocity and note length
    # give the stored bytes again: one row per process.
    for i in (0, 7, 15):
        same = subprocess.run(
            [sys.executable, "-c", _RERENDER, str(path), str(i)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert same.stdout.split() == ["True"], (i, same.stderr)
    assert audio.shape[0] == 16


_RERENDER = """
import sys, h5py, numpy as np
from farm.tools.rerender import rerender
path, i = sys.argv[1], int(sys.argv[2])
with h5py.File(path, "r") as f:
    stored = f["audio/waveforms"][i]
print(np.array_equal(rerender(path, i)[0], stored))
"""


def test_fixed_values_are_stored_too(dataset_file: Path) -> None:
    with h5py.File(dataset_file, "r") as f:
        assert np.all(f["metadata/velocity"][:] == np.float32(0.8))
        assert np.all(f["metadata/note_duration"][:] == np.float32(0.2))
        assert float(f.attrs["velocity"]) == 0.8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--notes", "40:80"], "needs --notes-per-preset"),
        (["--notes", "60:62", "--notes-per-preset", "4"], "do not fit"),
        (["--notes-per-preset", "2"], "goes with a --notes LO:HI"),
        (["--velocity", "0.9:0.1"], "LO <= HI"),
        (["--velocity", "0.5:2"], "within 0..1"),
        (["--note-duration", "1:x"], "give a value or LO:HI"),
        (["--note-duration", "0.5:3"], "render_duration must be >= note_duration"),
    ],
)
def test_bad_ranges_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = farm(tmp_path, "generate", "-n", "2", *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
