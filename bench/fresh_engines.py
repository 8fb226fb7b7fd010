"""The price of clean state on presets a worker has not seen yet: K processes side by side,
each with a new engine, render their own presets, once through the engine (its resident
renderer) and once with a reused Synth (which leaks state), alternating rounds, all in this
one run.

``bench/clean_state.py`` renders its presets once before timing, so its resident child
already knows every page those renders write. A farm worker meets new presets all the time,
and at tier 2 the pages a render writes keep growing for the first few dozen presets: this
bench times that part too, with the workers' own contention for memory.

    python bench/fresh_engines.py [--processes 2] [--presets 30] [--rounds 3] [--tier 2]
        [--render-duration 2.0 --note-duration 1.5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any


def _run(method: str, a: Any, first: int, out: Any) -> None:
    """Render presets ``first`` .. ``first + presets - 1`` in a new engine; put
    (seconds, resident children started) on ``out``."""
    from farm.config import RenderSettings, RunSpec
    from farm.jobs.plan import sample_presets
    from farm.params.registry import get_registry
    from farm.params.tiers import tier_params
    from farm.render.engine import RenderEngine

    r = RenderSettings(render_duration=a.render_duration, note_duration=a.note_duration)
    spec = RunSpec(tier=a.tier, n=1, seed=9, render=r)
    tp = tier_params(get_registry(), a.tier)
    engine = RenderEngine(tp, r)
    labels = sample_presets(spec, tp, range(first, first + a.presets))
    t0 = time.perf_counter()
    for label in labels:
        if method == "engine":
            engine.render(label)
            continue
        engine.synth.load_init_preset()
        engine.applier.apply(label)
        for note in r.notes:
            engine.synth.render(note, r.velocity, r.note_duration, r.render_duration)
    seconds = time.perf_counter() - t0
    resident = engine.resident
    out.put((seconds, resident.starts if resident is not None else 0))
    engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--presets", type=int, default=30, help="per process and round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per method")
    ap.add_argument("--tier", type=int, default=2)
    ap.add_argument("--render-duration", type=float, default=2.0)
    ap.add_argument("--note-duration", type=float, default=1.5)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")  # fresh processes, as a worker starts
    times = {"reused": 0.0, "engine": 0.0}
    starts = []
    for _ in range(a.rounds):  # alternate so machine noise hits both alike
        for method in times:
            out = ctx.Queue()
            procs = [
                ctx.Process(target=_run, args=(method, a, k * a.presets, out))
                for k in range(a.processes)
            ]
            for p in procs:
                p.start()
            got = [out.get() for _ in procs]
            for p in procs:
                p.join()
            times[method] += sum(s for s, _ in got)
            if method == "engine":
                starts += [c for _, c in got]
    print(
        f"tier {a.tier}, {a.processes} processes x {a.presets} new presets x {a.rounds} "
        f"rounds, {a.render_duration:g} s renders"
    )
    print(f"resident children started per engine: {starts}")
    print(
        f"engine / reused-Synth throughput = {times['reused'] / times['engine']:.3f} "
        f"(price of clean state {times['engine'] / times['reused'] - 1:+.1%})"
    )


if __name__ == "__main__":
    main()
