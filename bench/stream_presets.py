"""A library read first against a streamed one (``--stream-presets``), in one run: the same
embedded ``farm submit`` of every preset of a library no run has read (a fresh data folder
each), its wall time (``bench/preset_read.py`` times what comes before the first render).

The library is the shared community presets, each copied ``--copies`` times with another
volume (distinct presets, distinct bytes), plus one file that is not JSON. Each preset
renders the notes of ``--notes``; ``-n`` is one row per preset and note, so both runs render
the whole library (and synthetic presets for the notes that are silent). The rows must be
the same audio: the bench checks it.

    python bench/stream_presets.py [--copies 4] [--workers 2] [--tier 2] [--notes 60]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).parent))
from preset_read import library_copies  # the bench beside this one


def _audio(path: Path) -> list[str]:
    """Every row's audio digest, by preset name and note (the two runs number presets
    differently: the streamed one gives the bad file an index)."""
    with h5py.File(path, "r") as f:
        names = [s.decode() for s in f["presets/name"][...]]
        lp, notes = f["metadata/library_preset"][...], f["metadata/midi_note"][...]
        return sorted(
            f"{names[p] if p >= 0 else 'synthetic'}/{n}/"
            + hashlib.sha256(f["audio/waveforms"][i].tobytes()).hexdigest()
            for i, (p, n) in enumerate(zip(lp.tolist(), notes.tolist(), strict=True))
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tier", type=int, default=2)
    ap.add_argument("--notes", default="60")
    a = ap.parse_args()
    notes = len(a.notes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "lib").mkdir()
        presets = library_copies(root / "lib", a.copies)
        (root / "lib" / "broken.vital").write_text("{ not json")
        print(f"{presets} presets + a bad file, tier {a.tier}, notes {a.notes}", end="")
        print(f", {a.workers} workers")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        found: dict[str, list[str]] = {}
        walls: dict[str, float] = {}
        for what, extra in (("read first", []), ("streamed", ["--stream-presets"])):
            data = root / what.replace(" ", "-")
            argv = [
                sys.executable, "-m", "farm.cli", "submit", "--tier", str(a.tier),
                "-n", str(presets * notes), "--notes", a.notes, "--community-dir", "lib",
                "--workers", str(a.workers), "--data-dir", str(data), "-o", "x.h5",
                *extra,
            ]  # fmt: skip
            t0 = time.perf_counter()
            res = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if res.returncode != 0:
                sys.exit(f"{what}: {res.stderr[-2000:]}")
            rows = re.search(r"(\d+) rows from (\d+) renders", res.stdout + res.stderr)
            found[what] = _audio(data / "x.h5")
            print(
                f"{what:11} {wall:7.1f} s  ({rows.group(1) if rows else '?'} rows, "
                f"{rows.group(2) if rows else '?'} renders)"
            )
            walls[what] = wall
        same = found["read first"] == found["streamed"]
        ratio = walls["streamed"] / walls["read first"]
        print(f"streamed / read first: {ratio:.3f}   the same rows and audio: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
