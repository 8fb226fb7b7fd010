"""Where clean state's cost goes, and a remedy that was tried. Each note is rendered the
engine's way (a grandchild forked from a preset child that applied the label); the
grandchild counts its minor page faults and system time, and the audio is hashed, so every
variant must give the same bytes. Variants, each in a fresh process:

* ``none``: the engine as it is;
* ``zero``: the preset child first drops every all-zero page of its private anonymous
  memory (``MADV_DONTNEED``: the content is unchanged), so a render writing there faults a
  fresh zero page instead of copying one;
* ``zerohuge``: the same plus ``MADV_HUGEPAGE`` on those regions, so a write into a vacated
  2 MB extent faults one huge page instead of 512 small ones.

    python bench/clean_state_faults.py [--tier 2] [--presets 6]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import mmap
import os
import resource
import subprocess
import sys
import time

import numpy as np

PAGE = 4096
MADV_DONTNEED, MADV_HUGEPAGE = 4, 14


def _regions() -> list[tuple[int, int]]:
    """Private anonymous read-write mappings of 1 MiB or more (the heap included)."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5] if len(parts) > 5 else ""
            if parts[1] == "rw-p" and path in ("", "[heap]") and hi - lo >= 1 << 20:
                out.append((lo, hi))
    return out


def _drop_zero_pages(huge: bool) -> int:
    """Drop all-zero pages (in a single-threaded child). Finding them allocates, and an
    allocation may land in a page judged zero a moment before: so each run of pages is
    checked again right before it is dropped (dropping a page the process has just
    written corrupts it: the first version of this bench crashed with "double free")."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    runs: list[tuple[int, int]] = []
    regions = _regions()
    for lo, hi in regions:
        view = (ctypes.c_char * (hi - lo)).from_address(lo)
        pages = np.frombuffer(view, dtype=np.uint64).reshape(-1, PAGE // 8)
        idx = np.flatnonzero(~pages.any(axis=1))
        if idx.size:
            cut = np.flatnonzero(np.diff(idx) != 1)
            starts, ends = np.r_[idx[0], idx[cut + 1]], np.r_[idx[cut], idx[-1]] + 1
            runs += [
                (lo + a * PAGE, (b - a) * PAGE)
                for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
            ]
    dropped = 0
    for addr, size in runs:
        if not np.frombuffer((ctypes.c_char * size).from_address(addr), np.uint64).any():
            libc.madvise(addr, size, MADV_DONTNEED)
            dropped += size // PAGE
    if huge:
        for lo, hi in regions:
            libc.madvise(lo, hi - lo, MADV_HUGEPAGE)
    return dropped


def variant(trick: str, tier: int, presets: int) -> None:
    """Render ``presets`` presets at every note the engine's way; print one line."""
    import vita

    from farm.config import RunSpec
    from farm.jobs.plan import sample_job
    from farm.params.registry import get_registry
    from farm.params.tiers import tier_params
    from farm.render.apply import LabelApplier

    spec = RunSpec(tier=tier, n=1, seed=9, batch_size=presets)
    tp = tier_params(get_registry(), tier)
    labels = sample_job(spec, tp, 0)
    synth = vita.Synth()
    synth.set_sample_rate(spec.render.sample_rate)
    synth.load_init_preset()
    applier = LabelApplier(synth, tp)
    r = spec.render
    notes = list(r.notes)  # type: ignore[arg-type]
    shape = (len(labels), len(notes), 2, r.samples)
    size = int(np.prod(shape)) * 4
    shared = mmap.mmap(-1, size + 8 * 3 * len(labels) * len(notes))
    audio = np.ndarray(shape, np.float32, shared)
    stats = np.ndarray((len(labels), len(notes), 3), np.float64, shared, size)
    t0 = time.perf_counter()
    for i, label in enumerate(labels):
        if os.fork() == 0:
            applier.apply(label)
            if trick != "none":
                _drop_zero_pages(huge=trick == "zerohuge")
            for j, note in enumerate(notes):
                if os.fork() == 0:
                    a, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                    out = synth.render(note, r.velocity, r.note_duration, r.render_duration)
                    b = resource.getrusage(resource.RUSAGE_SELF)
                    audio[i, j] = np.asarray(out)
                    faults, sys_ms = b.ru_minflt - a.ru_minflt, 1000 * (b.ru_stime - a.ru_stime)
                    stats[i, j] = (faults, sys_ms, 1000 * (time.perf_counter() - t))
                    os._exit(0)
                os.wait()
            os._exit(0)
        os.wait()
    wall = time.perf_counter() - t0
    digest = hashlib.sha256(audio.tobytes()).hexdigest()[:12]
    print(
        f"{trick:9} faults/note {stats[..., 0].mean():6.0f}  sys {stats[..., 1].mean():5.1f} "
        f"ms/note  render {stats[..., 2].mean():6.1f} ms/note  all {wall:5.2f} s  audio {digest}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tier", type=int, default=2)
    ap.add_argument("--presets", type=int, default=6)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant:
        variant(a.variant, a.tier, a.presets)
        return
    for _ in range(2):  # alternate, so machine noise hits every variant alike
        for trick in ("none", "zero", "zerohuge"):
            args = ["--variant", trick, "--tier", str(a.tier), "--presets", str(a.presets)]
            subprocess.run([sys.executable, __file__, *args], check=True)


if __name__ == "__main__":
    main()
