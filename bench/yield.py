"""Yield per tier and what each constraint buys: accepted rows / renders, silent fraction.

Renders real presets (every default note, clean state) for each constraint set, in 2
processes. Prints a markdown table for the README.

    python bench/yield.py [--presets 96] [--tiers 1,2,3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections import Counter

from farm.config import Constraints, RunSpec, SamplingSettings
from farm.jobs.plan import sample_job
from farm.jobs.render import render_job
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.engine import RenderEngine

NONE = Constraints(fixed={}, ranges={}, rules=())
HEURISTIC = Constraints(rules=())
CONFIGS = {
    "none (uniform)": NONE,
    "heuristic ranges": HEURISTIC,
    "+ routing": Constraints(rules=("routing",)),
    "+ routing + amp_envelope (default)": Constraints(),
}


def _run(args: tuple[int, str, list[int], int]) -> tuple[int, Counter[str], list[tuple[int, str]]]:
    tier, config, jobs, batch = args
    spec = RunSpec(
        tier=tier,
        n=1,
        seed=2026,
        batch_size=batch,
        sampling=SamplingSettings(constraints=CONFIGS[config]),
    )
    tp = tier_params(get_registry(), tier)
    engine = RenderEngine(tp, spec.render)
    accepted, rejections = 0, Counter[str]()
    hashes: list[tuple[int, str]] = []
    for j in jobs:
        r = render_job(engine, spec, j, sample_job(spec, tp, j))
        accepted += len(r.rows)
        rejections.update(r.rejections)
        hashes += [(j, row.audio_hash) for row in r.rows]
    return accepted, rejections, hashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", type=int, default=96, help="presets per tier and config")
    ap.add_argument("--tiers", default="1,2,3")
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    batch = 8
    jobs = list(range(max(1, a.presets // batch)))
    print(f"{len(jobs) * batch} presets x 3 notes per cell, seed 2026, {a.procs} processes")
    print("| tier | constraints | accepted / renders | silent | duplicate audio | "
          "distinct rows / renders | other rejections |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with mp.get_context("fork").Pool(a.procs) as pool:
        for tier in (int(t) for t in a.tiers.split(",")):
            for config in CONFIGS:
                t0 = time.monotonic()
                parts = pool.map(
                    _run, [(tier, config, jobs[i :: a.procs], batch) for i in range(a.procs)]
                )
                acc = sum(p[0] for p in parts)
                rej = sum((p[1] for p in parts), Counter())
                renders = acc + sum(rej.values())
                silent = rej.pop("SILENT", 0)
                # The farm's audio dedup: in canonical (job) order, later copies go.
                ordered = sorted((h for p in parts for h in p[2]), key=lambda x: x[0])
                distinct = len({h for _, h in ordered})
                other = ", ".join(f"{k} {v}" for k, v in sorted(rej.items())) or "-"
                print(
                    f"| {tier} | {config} | {acc}/{renders} = {acc / renders:.1%} | "
                    f"{silent / renders:.1%} | {acc - distinct} | "
                    f"{distinct}/{renders} = **{distinct / renders:.1%}** | {other} |"
                    f"  <!-- {time.monotonic() - t0:.0f}s -->",
                    flush=True,
                )


if __name__ == "__main__":
    main()
