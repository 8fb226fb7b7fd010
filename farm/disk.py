"""Disk space: what a run needs, what a folder has, and a full disk said plainly.

A run's peak is its shards and its final file side by side (the collector copies one into
the other), and shards hold whole jobs: every job done, including those past the n-th row
that the window let start, stays on disk until the merge.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from farm.config import RunSpec
from farm.errors import DiskFullError, DiskSpaceError


def row_bytes(spec: RunSpec) -> int:
    """Bytes of one stored row, uncompressed (audio, labels, metadata, features)."""
    sample = 2 if spec.compression.audio_dtype == "float16" else 4
    r = spec.render
    row = r.channels * r.samples * sample + 4 * 448 + 64 * 4
    if spec.features is not None:
        fs = spec.features
        row += 4 * r.channels * fs.n_mels * fs.frames(r.samples) + 8 * 2 * fs.n_mels
    if spec.tier == 3:
        row += 4 * 32 * 428 * 4 // 50  # the modulation matrix, mostly zeros, gzip-1
    return row


#: Runs of more rows than this, or of more bytes than :data:`PARTED_BYTES`, are parted by
#: default (``--part-rows``), in parts of at most this many rows...
PARTED_ROWS = 10_000
#: ... and of about this many bytes: a 2 s stereo tier-2 row is 0.7 MB, so one file of
#: 10,000 of them would be 7 GB, copied once more by the collector (twice the dataset on
#: disk while it copies, and a copy whose share of the run grows with the workers).
PARTED_BYTES = 1_000_000_000


def default_part_rows(spec: RunSpec) -> int:
    """The part size a run gets without ``--part-rows``: 0 (one file) for a dataset of at
    most :data:`PARTED_ROWS` rows and :data:`PARTED_BYTES` bytes, else parts of about
    :data:`PARTED_BYTES` bytes and at most :data:`PARTED_ROWS` rows."""
    size = row_bytes(spec)
    if spec.n <= PARTED_ROWS and spec.n * size <= PARTED_BYTES:
        return 0
    return max(1, min(PARTED_ROWS, PARTED_BYTES // size))


def estimate_bytes(spec: RunSpec, extra_jobs: int = 0, rows: int | None = None) -> int:
    """Disk a run needs at its peak: the shards (whole jobs: the rows of ``rows`` rounded
    up to jobs, plus ``extra_jobs`` that may finish past the last needed one) and the
    final file of ``rows`` rows (default ``spec.n``)."""
    rows = spec.n if rows is None else rows
    per_job = spec.batch_size * spec.render.notes_per_preset
    jobs = -(-rows // per_job) + max(extra_jobs, 0)
    final = 0 if spec.part_rows else rows  # a parted dataset is its shards, not a copy
    return row_bytes(spec) * (jobs * per_job + final)


def human(size: float) -> str:
    """``12 MB`` below a gigabyte, ``3.4 GB`` above."""
    return f"{size / 1e6:.0f} MB" if size < 1e9 else f"{size / 1e9:.1f} GB"


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free space of the file system that holds ``path`` (or its nearest existing parent:
    nothing is created to ask)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_disk(spec: RunSpec, data_dir: str | os.PathLike[str], extra_jobs: int = 0) -> int:
    """Refuse a run larger than the data folder's free space; returns the estimate.

    Raises:
        DiskSpaceError: the estimate exceeds the free space.
    """
    need = estimate_bytes(spec, extra_jobs)
    free = free_bytes(data_dir)
    if need > free:
        raise DiskSpaceError(
            f"the run needs about {human(need)} (shards of whole jobs + the final file, "
            f"uncompressed) but {data_dir} has {human(free)} free"
        )
    return need


def is_disk_full(e: BaseException) -> bool:
    """True for "no space left on device" however it arrives (an OSError, or h5py's
    RuntimeError/OSError that only carries the text)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:  # the cause may sit down the chain
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(cur).lower()
        if "no space left" in text or "errno = 28" in text or "quota exceeded" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def disk_full(
    where: str | os.PathLike[str], need: int | None = None, run_id: str | None = None
) -> DiskFullError:
    """The error for a full disk in ``where``, with how much more the run needs and, when
    the run is known, how to finish it."""
    more = f" (about {human(need)} more needed)" if need else ""
    then = f"; free space, then `farm resume {run_id}` finishes the run" if run_id else ""
    return DiskFullError(f"disk full in {where}{more}{then}")
