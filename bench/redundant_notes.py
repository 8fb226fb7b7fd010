"""The redundant-note corner: presets whose notes all sound the same (key tracking off).

For each sampling option, renders the same number of presets at every default note and
reports: the share of presets with at least two bit-identical notes, the rows that the
audio dedup (DUPLICATE_AUDIO) removes, and the yield (distinct accepted rows per render).
Options: the default sampler (dedup only), and a rule that keeps key tracking on for
every oscillator (the `key_tracking` rule, `--key-tracking`). One run, 2 processes.

    python bench/redundant_notes.py [--presets 96] [--tier 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

from farm.config import Constraints, RunSpec, SamplingSettings
from farm.jobs.plan import sample_job
from farm.jobs.render import render_job
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.engine import RenderEngine


def _spec(tier: int, tracking: bool, batch: int) -> RunSpec:
    rules = (*Constraints().rules, "key_tracking") if tracking else Constraints().rules
    sampling = SamplingSettings(constraints=Constraints(rules=rules))
    return RunSpec(tier=tier, n=1, seed=2028, batch_size=batch, sampling=sampling)


def _run(args: tuple[int, bool, list[int], int]) -> tuple[int, int, int, int]:
    """(renders, accepted rows, rows left after the dedup, presets with equal notes)."""
    tier, tracking, jobs, batch = args
    spec = _spec(tier, tracking, batch)
    tp = tier_params(get_registry(), tier)
    engine = RenderEngine(tp, spec.render)
    renders = accepted = distinct = same_notes = 0
    for j in jobs:
        result = render_job(engine, spec, j, sample_job(spec, tp, j))
        renders += result.renders
        accepted += len(result.rows)
        by_preset: dict[int, list[str]] = {}
        for r in result.rows:
            by_preset.setdefault(r.preset, []).append(r.audio_hash)
        for hashes in by_preset.values():
            distinct += len(set(hashes))
            same_notes += len(set(hashes)) < len(hashes)
    engine.close()
    return renders, accepted, distinct, same_notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", type=int, default=96)
    ap.add_argument("--tier", type=int, default=1)
    a = ap.parse_args()
    batch = 8
    jobs = list(range(max(a.presets // batch, 2)))
    print(f"tier {a.tier}, {len(jobs) * batch} presets x 3 notes per option")
    print("| sampling | presets with equal notes | rows the dedup removes | "
          "distinct rows / renders |")  # fmt: skip
    print("|---|---|---|---|")
    for tracking in (False, True):
        with mp.get_context("fork").Pool(2) as pool:
            parts = pool.map(_run, [(a.tier, tracking, jobs[i::2], batch) for i in range(2)])
        renders, accepted, distinct, same = (sum(p[i] for p in parts) for i in range(4))
        name = "key tracking kept on" if tracking else "default (dedup only)"
        presets = len(jobs) * batch
        print(f"| {name} | {same} of {presets} ({same / presets:.0%}) | "
              f"{accepted - distinct} of {accepted} | {distinct / renders:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
