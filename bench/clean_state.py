"""The price of clean state: the forking engine against a loop that reuses one Synth
(faster, but it leaks state between renders), on the same presets and notes, one process.
Prints the throughput ratio measured in this run.

    python bench/clean_state.py [--presets 24] [--tier 2]
"""

from __future__ import annotations

import argparse
import time

from farm.config import RunSpec
from farm.jobs.plan import sample_job
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.apply import LabelApplier
from farm.render.engine import RenderEngine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", type=int, default=24)
    ap.add_argument("--tier", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per method")
    a = ap.parse_args()
    import vita

    spec = RunSpec(tier=a.tier, n=1, seed=9, batch_size=a.presets)
    tp = tier_params(get_registry(), a.tier)
    labels = sample_job(spec, tp, 0)
    r = spec.render
    engine = RenderEngine(tp, r)
    synth = vita.Synth()
    applier = LabelApplier(synth, tp)

    def forked() -> None:
        for label in labels:
            engine.render(label)

    def reused() -> None:
        for label in labels:
            synth.load_init_preset()
            applier.apply(label)
            for note in r.notes:
                synth.render(note, r.velocity, r.note_duration, r.render_duration)

    times: dict[str, float] = {"forked": 0.0, "reused": 0.0}
    for _ in range(a.rounds):  # alternate so machine noise hits both alike
        for name, fn in (("reused", reused), ("forked", forked)):
            t0 = time.perf_counter()
            fn()
            times[name] += time.perf_counter() - t0
    n = a.rounds * len(labels) * len(r.notes)
    for name, t in times.items():
        print(f"{name:7} {1000 * t / n:6.1f} ms per note")
    print(
        f"clean-state throughput / reused-Synth throughput = "
        f"{times['reused'] / times['forked']:.3f} "
        f"(price of clean state {times['forked'] / times['reused'] - 1:+.1%})"
    )


if __name__ == "__main__":
    main()
