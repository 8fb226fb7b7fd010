"""Where to put the loudness floor: the distribution of BS.1770 integrated loudness (LUFS)
of real renders, against RMS and DC offset, per tier (default spec: every default note,
clean state, no validation). Prints what each candidate floor would reject.

    python bench/loudness.py [--presets 96] [--tiers 1,2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

import numpy as np

from farm.config import RunSpec
from farm.jobs.plan import sample_job
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.engine import RenderEngine
from farm.render.loudness import dc_offset, integrated_loudness

FLOORS = (-80.0, -70.0, -60.0, -55.0, -50.0, -45.0, -40.0)


def _measure(args: tuple[int, list[int], int]) -> list[tuple[float, float, float]]:
    """(rms, lufs, dc) of every note of the given jobs."""
    tier, jobs, batch = args
    spec = RunSpec(tier=tier, n=1, seed=2027, batch_size=batch)
    tp = tier_params(get_registry(), tier)
    engine = RenderEngine(tp, spec.render)
    out = []
    for j in jobs:
        for label in sample_job(spec, tp, j):
            for r in engine.render(label):
                if r.audio is None or not np.isfinite(r.audio).all():
                    continue
                flat = r.audio.reshape(-1).astype(np.float64)
                rms = float(np.sqrt(np.mean(flat * flat)))
                out.append((rms, integrated_loudness(r.audio, spec.render.sample_rate),
                            dc_offset(r.audio)))  # fmt: skip
    engine.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", type=int, default=96)
    ap.add_argument("--tiers", default="1,2")
    a = ap.parse_args()
    batch = 8
    jobs = list(range(max(a.presets // batch, 2)))
    for tier in (int(t) for t in a.tiers.split(",")):
        with mp.get_context("fork").Pool(2) as pool:
            parts = pool.map(_measure, [(tier, jobs[i::2], batch) for i in range(2)])
        m = np.array([x for p in parts for x in p])
        rms, lufs, dc = m[:, 0], m[:, 1], m[:, 2]
        rms_ok = rms >= 1e-3
        dc_heavy = np.abs(dc) > 0.5 * np.maximum(rms, 1e-12)
        finite = np.isfinite(lufs)
        print(f"\n## tier {tier}: {len(m)} renders, {rms_ok.sum()} pass RMS >= 1e-3 (-60 dBFS)")
        q = (
            np.percentile(lufs[rms_ok & finite], [1, 5, 10, 50, 90])
            if (rms_ok & finite).any()
            else []
        )
        print("LUFS of RMS-accepted renders, p1/p5/p10/p50/p90:", np.round(q, 1).tolist())
        print(f"-inf loudness (no gated block): {int((~finite).sum())} renders, of which "
              f"{int((~finite & rms_ok).sum())} pass the RMS check")  # fmt: skip
        print(f"DC-heavy (|mean| > 0.5 RMS) and RMS-accepted: {int((dc_heavy & rms_ok).sum())}")
        print("| floor (LUFS) | RMS-accepted rows it rejects | DC-heavy ones it rejects |")
        print("|---|---|---|")
        for floor in FLOORS:
            below = ~(lufs >= floor)
            heavy = rms_ok & dc_heavy
            print(f"| {floor:.0f} | {int((below & rms_ok).sum())} of {int(rms_ok.sum())} | "
                  f"{int((below & heavy).sum())} of {int(heavy.sum())} |")  # fmt: skip


if __name__ == "__main__":
    main()
