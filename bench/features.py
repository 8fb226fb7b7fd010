"""The price of ``--features logmel`` per row against the render it comes from, in one run
on the same presets: the log-mel spectrogram and its band moments the worker computes,
and the extra bytes the worker writes to its shard (the same rows appended with and
without features).

    python bench/features.py [--presets 12] [--tier 2] [--mono]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from farm.config import FeatureSettings, RenderSettings, RunSpec
from farm.jobs.plan import sample_job
from farm.jobs.render import render_job
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.engine import RenderEngine
from farm.render.features import logmel
from farm.storage.features import band_moments
from farm.storage.shard import ShardWriter


def _append_s(path: Path, spec: RunSpec, rows: list, reps: int = 3) -> float:
    """Seconds per row to append ``rows`` to a fresh shard and flush (best of ``reps``)."""
    tp = tier_params(get_registry(), spec.tier)
    best = float("inf")
    for k in range(reps):
        target = path.with_name(f"{path.stem}{k}.h5")
        with ShardWriter(target, spec, tp, get_registry().fingerprint, atomic=False) as w:
            t0 = time.perf_counter()
            w.append(rows)
            w.flush()
            best = min(best, time.perf_counter() - t0)
    return best / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", type=int, default=12)
    ap.add_argument("--tier", type=int, default=2)
    ap.add_argument("--mono", action="store_true")
    a = ap.parse_args()
    plain = RunSpec(
        tier=a.tier, n=1, seed=5, batch_size=a.presets, render=RenderSettings(mono=a.mono)
    )
    feats = FeatureSettings()
    spec = plain.model_copy(update={"features": feats})
    tp = tier_params(get_registry(), a.tier)
    engine = RenderEngine(tp, plain.render)
    try:
        t0 = time.perf_counter()
        result = render_job(engine, plain, 0, sample_job(plain, tp, 0))
        render_s = time.perf_counter() - t0
    finally:
        engine.close()
    rows = result.rows
    if not rows:
        raise SystemExit("no accepted rows: try another --tier or more --presets")
    per_render = render_s / max(result.renders, 1)
    print(f"rendered {result.renders} notes ({len(rows)} accepted) in {render_s:.2f}s: "
          f"{per_render * 1e3:.1f} ms per note")  # fmt: skip
    rate = plain.render.sample_rate
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        out = [logmel(r.audio, feats, rate) for r in rows]
    mel_s = (time.perf_counter() - t0) / reps / len(rows)
    t0 = time.perf_counter()
    for _ in range(reps):
        for x in out:
            band_moments(x)
    mom_s = (time.perf_counter() - t0) / reps / len(rows)
    with_features = [replace(r, features=x) for r, x in zip(rows, out, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        base = _append_s(Path(tmp) / "plain.h5", plain, rows)
        more = _append_s(Path(tmp) / "feats.h5", spec, with_features)
    write_s = max(more - base, 0.0)
    shape = out[0].shape
    print(f"logmel {shape} ({np.prod(shape) * 4 / 1e3:.0f} KB per row): {mel_s * 1e3:.2f} ms")
    print(f"band moments: {mom_s * 1e3:.3f} ms per row")
    print(f"shard append: {base * 1e3:.2f} ms per row, {more * 1e3:.2f} ms with features")
    total = mel_s + mom_s + write_s
    print(
        f"features: {total * 1e3:.2f} ms per row = {total / per_render:.2%} of render time "
        "(target <= 5%)"
    )


if __name__ == "__main__":
    main()
