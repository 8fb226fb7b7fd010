"""A worker process's context (workers.context) on real vita: a worker that served other
runs renders a run's rows as a fresh worker does, and keeps a bounded number of engines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from workers.context import ENGINES_KEPT

# Renders job 0 of each (tier, sample rate) in turn through one WorkerContext of a fresh
# process (a Synth's renders depend on its history in the process, so each sequence needs
# its own process); prints per step the rows' audio sizes and sha256, and the engines kept.
_SCRIPT = """
import hashlib, json, sys
from farm.config import RenderSettings, RunSpec
from farm.jobs.plan import sample_job
from farm.settings import FarmSettings
from workers.context import WorkerContext
ctx = WorkerContext(FarmSettings(data_dir=sys.argv[1]))
out = []
for tier, rate in json.loads(sys.argv[2]):
    render = RenderSettings(notes=(60,), note_duration=0.2, render_duration=0.3,
                            sample_rate=rate)
    spec = RunSpec(tier=tier, n=1, seed=5, batch_size=3, render=render)
    engine = ctx.engine(spec)
    rows = [r for label in sample_job(spec, engine.tp, 0) for r in engine.render(label)]
    audio = [r.audio.tobytes() if r.audio is not None else b"" for r in rows]
    out.append({"sizes": [len(a) for a in audio],
                "sha": hashlib.sha256(b"".join(audio)).hexdigest(),
                "engines": len(ctx._engines)})
ctx.close()
print(json.dumps(out))
"""


def _steps(tmp: Path, steps: list[tuple[int, int]]) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp), json.dumps(steps)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_worker_renders_a_run_as_a_fresh_worker_does(tmp_path: Path) -> None:
    """Tier 3 rows from a worker that rendered a tier-2 run first are the rows a fresh
    worker renders: the second engine does not prepare the shared Synth again (which
    changed tier-3 renders). Tier 1 rows after a run at another sample rate are the
    fresh worker's rows too, and that run's rows have its own length."""
    fresh3 = _steps(tmp_path, [(3, 44100)])[0]
    after2 = _steps(tmp_path, [(2, 44100), (3, 44100)])[1]
    assert after2["sha"] == fresh3["sha"]
    fresh1 = _steps(tmp_path, [(1, 44100)])[0]
    mixed = _steps(tmp_path, [(1, 44100), (1, 22050), (1, 44100)])
    assert mixed[0]["sha"] == mixed[2]["sha"] == fresh1["sha"]
    assert [2 * s for s in mixed[1]["sizes"]] == fresh1["sizes"]
    assert min(fresh1["sizes"]) > 0


def test_mixed_sample_rates_render_at_their_own_rate_and_engines_are_bounded(
    tmp_path: Path,
) -> None:
    """A tier-3 run at 44.1 kHz, one at 22.05 kHz and the first again in one worker: every
    row renders at its run's rate (one shared, unprepared Synth rendered the first run's
    rows at the second run's rate, and the engine rejected them all). Engines beyond
    ENGINES_KEPT are closed."""
    steps = [(3, 44100), (3, 22050), (3, 44100), (1, 8000), (2, 16000), (3, 44100)]
    out = _steps(tmp_path, steps)
    for (_, rate), step in zip(steps, out, strict=True):
        assert step["sizes"] == [2 * 4 * round(0.3 * rate)] * 3
    assert max(step["engines"] for step in out) == ENGINES_KEPT
