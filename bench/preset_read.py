"""Reading a preset library: presets per second on one process, on every core, and again
from the read cache, in one run. The library is the shared community presets, each copied
``--copies`` times with a different volume (distinct presets, distinct bytes). Last, what a
streamed library (``--stream-presets``) costs before the first render.

    python bench/preset_read.py [--copies 8] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from farm.presets.ingest import prepare_sources

COMMUNITY = Path(__file__).resolve().parents[2] / "shared" / "presets" / "community"


def library_copies(root: Path, copies: int) -> int:
    """Write the shared presets ``copies`` times each into ``root``; returns how many."""
    n = 0
    for src in sorted(COMMUNITY.glob("*.vital")):
        doc = json.loads(src.read_text())
        for k in range(copies):
            doc["settings"]["volume"] = 3000.0 + 10.0 * k + n  # distinct, audible
            (root / f"{src.stem}-{k}.vital").write_text(json.dumps(doc))
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "lib").mkdir()
        n = library_copies(root / "lib", a.copies)
        print(f"{n} presets, {a.workers} cores")
        runs = (("one process", 1, "a"), (f"{a.workers} processes", a.workers, "b"))
        for what, workers, data in (*runs, ("again, cached", a.workers, "b")):
            t0 = time.perf_counter()
            p = prepare_sources(root / data, [root / "lib"], workers=workers)
            dt = time.perf_counter() - t0
            read = sum(p.counts.values())
            print(
                f"{what:16} {dt:6.2f} s  {n / dt:6.1f} presets/s  {n / dt / workers:5.1f} per "
                f"core  ({read} kept, {p.cached} from the cache)"
            )
        # --stream-presets: what the submitter does before the first render can start.
        t0 = time.perf_counter()
        p = prepare_sources(root / "c", [root / "lib"], workers=a.workers, stream=True)
        dt = time.perf_counter() - t0
        print(
            f"{'streamed':16} {dt:6.2f} s  before the first render ({sum(p.counts.values())} "
            "files stored unread; the workers read them as they render)"
        )


if __name__ == "__main__":
    main()
