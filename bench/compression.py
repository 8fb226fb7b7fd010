"""Audio codecs measured on real renders: ratio, write cost per row, and that cost relative
to the render time of a row (the farm's efficiency). Prints a markdown table.

    python bench/compression.py [--rows 120] [--tier 2]

Renders the rows first (clean state, default notes, accepted rows only), then writes the
same rows with every option in one process, one thread.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from farm.config import CompressionSettings, RunSpec
from farm.jobs.local import generate
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.storage.reader import FarmReader
from farm.storage.shard import Row, ShardWriter

OPTIONS: dict[str, CompressionSettings] = {
    "none": CompressionSettings(codec="none"),
    "gzip-4 (no shuffle)": CompressionSettings(codec="gzip", level=4, shuffle=False),
    "shuffle + gzip-1": CompressionSettings(codec="gzip", level=1),
    "shuffle + lzf": CompressionSettings(codec="lzf"),
    "float16 + shuffle + gzip-1": CompressionSettings(codec="gzip", level=1, audio_dtype="float16"),
    "float16, no codec": CompressionSettings(codec="none", audio_dtype="float16"),
}
try:  # plugin codecs only when hdf5plugin is installed (farm[plugins])
    import hdf5plugin  # noqa: F401

    OPTIONS["blosc2 zstd-1 + shuffle"] = CompressionSettings(codec="blosc2-zstd")
    OPTIONS["bitshuffle + lz4"] = CompressionSettings(codec="bitshuffle-lz4")
except ImportError:
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=120)
    ap.add_argument("--tier", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "src.h5"
        spec = RunSpec(tier=a.tier, n=a.rows, seed=1)
        p = generate(spec, src)
        render_ms = 1000 * p.elapsed / p.renders  # one process: wall time per rendered note
        with FarmReader(src) as r:
            batch = r.get_batch(np.arange(len(r)))
        tp = tier_params(get_registry(), a.tier)
        from farm.params.label import Label

        rows = [
            Row(
                0,
                i,
                int(batch["midi_note"][i]),
                Label(a.tier, batch["continuous"][i], batch["categorical"][i]),
                batch["audio"][i],
                0.0,
                0.0,
            )
            for i in range(len(batch["audio"]))
        ]
        raw_mb = sum(x.audio.nbytes for x in rows) / 1e6
        print(
            f"{len(rows)} real tier-{a.tier} rows ({raw_mb / len(rows):.2f} MB each); "
            f"render cost {render_ms:.0f} ms per rendered note on one core"
        )
        print("| codec | ratio | write MB/s | ms/row | cost / render time | plain h5py |")
        print("|---|---|---|---|---|---|")
        for name, c in OPTIONS.items():
            out = Path(d) / "out.h5"
            s = spec.model_copy(update={"compression": c})
            t0 = time.perf_counter()
            with ShardWriter(out, s, tp, "bench") as w:
                for i in range(0, len(rows), 3):  # a preset's rows at a time, as the farm
                    w.append(rows[i : i + 3])
                    w.flush()
            dt = time.perf_counter() - t0
            size = os.path.getsize(out)
            ms = 1000 * dt / len(rows)
            plain = "no (hdf5plugin)" if c.codec in ("blosc2-zstd", "bitshuffle-lz4") else "yes"
            print(
                f"| {name} | {raw_mb * 1e6 / size:.2f} | {raw_mb / dt:.0f} | {ms:.1f} | "
                f"{ms / render_ms:.1%} | {plain} |",
                flush=True,
            )
            out.unlink()


if __name__ == "__main__":
    main()
