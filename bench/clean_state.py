"""The price of clean state: the engine (its resident renderer for plain labels), the
engine with a fork per note (the resident renderer off), and a loop that reuses one Synth
(faster, but it leaks state between renders), on the same presets and notes, in one
process. Checks that the two clean ways give the same bytes, and prints the throughput
ratios measured in this run.

    python bench/clean_state.py [--presets 24] [--tier 2] [--rounds 2]
        [--render-duration 2.0 --note-duration 1.5]
"""

from __future__ import annotations

import argparse
import time

from farm.config import RenderSettings, RunSpec
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
    ap.add_argument("--render-duration", type=float, default=2.0)
    ap.add_argument("--note-duration", type=float, default=1.5)
    a = ap.parse_args()
    import vita

    r = RenderSettings(render_duration=a.render_duration, note_duration=a.note_duration)
    spec = RunSpec(tier=a.tier, n=1, seed=9, batch_size=a.presets, render=r)
    tp = tier_params(get_registry(), a.tier)
    labels = sample_job(spec, tp, 0)
    engine = RenderEngine(tp, r)
    resident = engine.resident
    synth = vita.Synth()
    applier = LabelApplier(synth, tp)
    audio: dict[str, list[bytes]] = {"clean": [], "forked": []}

    def run(name: str) -> None:
        out = audio[name]
        out.clear()
        for label in labels:
            out.extend(b"" if x.audio is None else x.audio.tobytes() for x in engine.render(label))

    def clean() -> None:
        engine.resident = resident
        run("clean")

    def forked() -> None:
        engine.resident = None
        run("forked")

    def reused() -> None:
        for label in labels:
            synth.load_init_preset()
            applier.apply(label)
            for note in r.notes:
                synth.render(note, r.velocity, r.note_duration, r.render_duration)

    clean()  # the resident child learns the pages renders write (not timed)
    times: dict[str, float] = {"clean": 0.0, "forked": 0.0, "reused": 0.0}
    for _ in range(a.rounds):  # alternate so machine noise hits all alike
        for name, fn in (("reused", reused), ("clean", clean), ("forked", forked)):
            t0 = time.perf_counter()
            fn()
            times[name] += time.perf_counter() - t0
    assert resident is not None
    same = audio["clean"] == audio["forked"]
    notes = len(r.notes) if isinstance(r.notes, tuple) else 1
    n = a.rounds * len(labels) * notes
    print(f"tier {a.tier}, {len(labels)} presets x {notes} notes, {a.render_duration:g} s")
    for name, t in times.items():
        print(f"{name:7} {1000 * t / n:6.1f} ms per note")
    print(
        f"resident rows byte-identical to forked rows: {same}; resident children started "
        f"{resident.starts} for {resident.rows} rows"
    )
    for name in ("clean", "forked"):
        print(
            f"{name} / reused-Synth throughput = {times['reused'] / times[name]:.3f} "
            f"(price of clean state {times[name] / times['reused'] - 1:+.1%})"
        )


if __name__ == "__main__":
    main()
