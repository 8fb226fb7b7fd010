"""The price of what every row gets besides its render: the checksum the worker makes
(over the row's columns as they are written), the check the collector makes (hashing the
bytes it copies, as `farm verify` does), the BS.1770 loudness and DC measures of
validation, the audio hash of the dedup and the active-parameter mask, against the time
the same rows take to render, in one run on the same presets.

    python bench/integrity.py [--presets 12] [--tier 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py

from farm.config import RunSpec
from farm.jobs.plan import sample_job
from farm.jobs.render import render_job
from farm.params.active import active_mask
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.engine import RenderEngine
from farm.render.loudness import dc_offset, integrated_loudness
from farm.storage import schema
from farm.storage.compression import audio_dtype
from farm.storage.integrity import audio_digest, checksums, verify_rows
from farm.storage.shard import ShardWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", type=int, default=12)
    ap.add_argument("--tier", type=int, default=2)
    a = ap.parse_args()
    spec = RunSpec(tier=a.tier, n=1, seed=5, batch_size=a.presets)
    registry = get_registry()
    tp = tier_params(registry, a.tier)
    engine = RenderEngine(tp, spec.render)
    labels = sample_job(spec, tp, 0)

    t0 = time.perf_counter()
    result = render_job(engine, spec, 0, labels)
    render_s = time.perf_counter() - t0
    rows = result.rows
    per_render = render_s / max(result.renders, 1)
    print(f"rendered {result.renders} notes ({len(rows)} accepted) in {render_s:.2f}s: "
          f"{per_render * 1e3:.1f} ms per note")  # fmt: skip
    if not rows:
        raise SystemExit("no accepted rows: try another --tier or more --presets")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shard.h5"
        with ShardWriter(path, spec, tp, registry.fingerprint, atomic=False) as w:
            # The worker's share: the checksum over the columns as they are written.
            columns = w._columns(rows)  # the exact arrays append hashes
            names = schema.row_datasets(tp.modulation)[:-1]
            arrays = [columns[n].astype(w.file[n].dtype, copy=False) for n in names]
            reps = 5
            t0 = time.perf_counter()
            for _ in range(reps):
                checksums(arrays)
            make_s = (time.perf_counter() - t0) / reps / len(rows)
            w.append(rows)
            w.flush()
        # The collector's share and `farm verify`: hash the stored bytes again.
        with h5py.File(path, "r") as f:
            t0 = time.perf_counter()
            found = verify_rows(f)
            check_s = (time.perf_counter() - t0) / len(rows)
        assert not found.bad
    t0 = time.perf_counter()
    for r in rows:
        integrated_loudness(r.audio, spec.render.sample_rate)
        dc_offset(r.audio)
    loud_s = (time.perf_counter() - t0) / len(rows)
    stored = audio_dtype(spec.compression)
    t0 = time.perf_counter()
    for r in rows:
        audio_digest(r.audio, stored)
    hash_s = (time.perf_counter() - t0) / len(rows)
    t0 = time.perf_counter()
    for label in labels:  # once per preset; charged to its accepted rows
        active_mask(label, tp)
    mask_s = (time.perf_counter() - t0) / len(rows)
    print(f"checksum made in the worker: {make_s * 1e3:.3f} ms per row")
    print(f"audio hash (dedup): {hash_s * 1e3:.3f} ms per row")
    print(f"active-parameter mask: {mask_s * 1e3:.3f} ms per row")
    print(f"checksum checked (collector / farm verify): {check_s * 1e3:.3f} ms per row")
    print(f"loudness + dc in validation: {loud_s * 1e3:.3f} ms per row")
    ratio = (make_s + check_s) / per_render
    print(f"checksums: {ratio:.2%} of render time per row (target <= 1%)")
    worker = (make_s + loud_s + hash_s + mask_s) / per_render
    print(
        f"in the worker, checksum + loudness + audio hash + mask: {worker:.2%} of render "
        "time (target <= 2%)"
    )


if __name__ == "__main__":
    main()
