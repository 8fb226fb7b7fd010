"""Reading a dataset the way a training loop does: random items through ``FarmDataset``,
``FarmReader.get_sample``, batches, and one whole column, for each file given (say a
parted ``NAME.h5`` and a one-file copy of the same rows), in one run. Also a row read
through a dataset opened for it, as a reader that looks datasets up per row does: a
parted file's virtual dataset opens the parts behind a read again for every new handle.

    python bench/read.py PARTED.h5 [ONE.h5 ...] [--items 200]

Make the pair with ``farm submit ... --part-rows 10000 -o parted.h5`` and the same spec
with ``--part-rows 0 -o one.h5``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import h5py
import numpy as np

from farm.dataset import FarmDataset
from farm.storage import schema
from farm.storage.reader import FarmReader


def _per(fn: Callable[[int], object], items: np.ndarray) -> float:
    """Milliseconds per call of ``fn(i)`` over ``items`` (after one warm-up call)."""
    fn(int(items[0]))
    t0 = time.perf_counter()
    for i in items:
        fn(int(i))
    return (time.perf_counter() - t0) / len(items) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--items", type=int, default=200)
    a = ap.parse_args()
    for path in a.files:
        with h5py.File(path, "r") as f:
            audio = f[schema.AUDIO]
            mappings = audio.id.get_create_plist().get_virtual_count() if audio.is_virtual else 0
            n = int(audio.shape[0])
            del audio  # a handle still open would keep the parts open for the loop below
            rows = np.random.default_rng(1).integers(0, n, 50)
            t0 = time.perf_counter()
            for i in rows:
                f[schema.AUDIO][int(i)]  # a new handle each time
            reopen_ms = (time.perf_counter() - t0) / len(rows) * 1e3
            t0 = time.perf_counter()
            f[schema.meta("midi_note")][...]
            column_s = time.perf_counter() - t0
        items = np.random.default_rng(0).integers(0, n, a.items)
        ds = FarmDataset(path, as_torch=False)
        reader = FarmReader(path)
        item_ms = _per(ds.__getitem__, items)
        sample_ms = _per(reader.get_sample, items)
        t0 = time.perf_counter()
        ds[items[:64]]
        batch_ms = (time.perf_counter() - t0) * 1e3
        reader.close()
        ds.close()
        print(
            f"{path}: {n} rows, {mappings} mappings per dataset; audio row through a new "
            f"handle {reopen_ms:.2f} ms; FarmDataset item {item_ms:.2f} ms; get_sample "
            f"{sample_ms:.2f} ms; batch of 64 {batch_ms:.1f} ms; midi_note column "
            f"{column_s * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
