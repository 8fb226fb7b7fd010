"""The end of a run: one file copied from the shards (the merge) against parts joined in
place (``--part-rows``), on the same embedded run, in one session: the collector's seconds
(``farm status --json``: ``collect_s``), its share of the run's wall time, and the data
folder's peak size against the dataset's size (sampled every 0.2 s).

    python bench/collect.py [--n 1200] [--tier 1] [--workers 2] [--part-rows 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # renamed or deleted while we looked
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def _run(root: Path, args: list[str]) -> dict[str, float]:
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _size(root / "data"))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample)
    watcher.start()
    t0 = time.monotonic()
    farm = [sys.executable, "-m", "farm.cli"]
    r = subprocess.run([*farm, "submit", *args], cwd=root, capture_output=True, text=True)
    wall = time.monotonic() - t0
    stop.set()
    watcher.join()
    if r.returncode:
        raise SystemExit(r.stderr)
    st = json.loads(
        subprocess.run([*farm, "status", "--json"], cwd=root, capture_output=True, text=True).stdout
    )[-1]
    final = sum(
        _size(p) if p.is_dir() else p.stat().st_blocks * 512
        for p in (root / "data").glob("out*")
        if p.suffix != ".md"
    )
    return {"wall": wall, "collect": float(st["collect_s"]), "peak": peak, "final": final}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--tier", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--part-rows", type=int, default=300)
    a = ap.parse_args()
    spec = ["--tier", str(a.tier), "-n", str(a.n), "--workers", str(a.workers), "--seed", "3"]
    spec += ["--notes", "48,60", "--note-duration", "0.3", "--render-duration", "1.0"]
    layouts = {
        "one file (merge)": ["--part-rows", "0"],
        f"parts of {a.part_rows} rows": ["--part-rows", str(a.part_rows)],
    }
    for name, extra in layouts.items():
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            m = _run(Path(tmp), [*spec, *extra, "-o", "out.h5"])
        print(
            f"{name:20} wall {m['wall']:6.1f} s  collect {m['collect']:6.2f} s "
            f"({m['collect'] / m['wall']:.2%} of the run)  peak disk {m['peak'] / 1e6:7.0f} MB "
            f"= {m['peak'] / m['final']:.2f} x the dataset ({m['final'] / 1e6:.0f} MB)"
        )


if __name__ == "__main__":
    main()
