"""Row checksums: made where a row is rendered, checked wherever it is copied or read back.

A row's checksum is blake2b-128 over the bytes it has in every other per-row dataset, in
the fixed order of :func:`farm.storage.schema.row_datasets` (audio as stored, labels,
wavetables, the modulation matrix, metadata). The worker computes it from the arrays it is
about to write; the collector recomputes it from the rows it copies (or checks in place),
and ``farm verify`` from the final file, a block of rows at a time, hashed on every core.
A shard damaged on disk (a bad sector, a stray ``dd``) therefore never becomes data: its
rows are treated as lost and their jobs rendered again.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.errors import DatasetError
from farm.storage import schema

#: At most this many rows, and about this many bytes, are read at once by :func:`verify_rows`.
_BLOCK = 1024
_BLOCK_BYTES = 32 << 20
#: Threads that hash a block's rows: the cores this process may run on.
_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: A column with at least this many bytes a row is hashed in place; smaller ones are joined.
_LARGE_ROW = 4096


def new_hash() -> Any:
    """An empty row hash."""
    return hashlib.blake2b(digest_size=16)


def digest(h: Any) -> bytes:
    """The checksum value stored for a finished row hash (32 hex characters)."""
    return bytes(h.hexdigest().encode())


def audio_digest(audio: np.ndarray, dtype: Any = np.float32) -> str:
    """A row's audio as stored (``dtype``), hashed: equal digests are bit-identical audio
    (clean renders are bit-exact, so exact equality is the right test)."""
    data = np.ascontiguousarray(audio, dtype=dtype)
    return str(hashlib.blake2b(data.data, digest_size=16).hexdigest())


def checksums(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Checksums of rows given as columns (each with rows on its first axis, in the
    dtype it is stored with, in :func:`~farm.storage.schema.row_datasets` order)."""
    n = len(columns[0]) if columns else 0
    if n == 0:
        return np.empty(0, dtype="S32")
    return np.array(_digest_rows(_segments(columns), 0, n), dtype="S32")


@dataclass
class Verified:
    """What :func:`verify_rows` found."""

    rows: int = 0
    bad: list[int] = field(default_factory=list)
    unchecked: bool = False
    """True for a file older than checksums (schema < 2.4.0): nothing could be checked."""


def verify_rows(
    f: Any,
    ranges: Sequence[tuple[int, int]] | None = None,
    on_block: Callable[[int], None] | None = None,
) -> Verified:
    """Recompute rows of an open file (a shard or a dataset) and list the rows whose
    checksum differs (or cannot be read).

    Rows are read in blocks of every dataset at once (one HDF5 read per dataset per
    block, about :data:`_BLOCK_BYTES`), never a row at a time: a file's decoded rows are
    the bytes its writer hashed. A block that cannot be read is read again row by row, so
    damage costs only the rows it touches.

    Args:
        f: an open ``h5py.File``.
        ranges: the rows to check, as (first, past the last) pairs (default: every row).
        on_block: called with the rows checked so far (progress).
    """
    if schema.CHECKSUM not in f:
        return Verified(unchecked=True)
    n = int(f[schema.AUDIO].shape[0])
    spans = [(lo, min(hi, n)) for lo, hi in ([(0, n)] if ranges is None else ranges) if lo < hi]
    # What the file's schema version has (the schema check reports anything missing).
    datasets = _checked_datasets(f)
    stored = f[schema.CHECKSUM]
    step = block_rows(datasets)
    out = Verified(rows=sum(hi - lo for lo, hi in spans))
    blocks = [(s, min(s + step, hi)) for lo, hi in spans for s in range(lo, hi, step)]
    done = 0

    def settle(verdict: Callable[[], tuple[int, list[int]]]) -> None:
        nonlocal done
        rows, bad = verdict()
        out.bad.extend(bad)
        done += rows
        if on_block is not None:
            on_block(done)

    with hash_pool() as pool:
        # One block is hashed on the pool while the next is read: reading and hashing
        # take turns on one core otherwise (1.5 s of reading and 3.1 s of hashing for
        # 4.6 GB of tier-2 shards on 2 cores, measured).
        waiting = None
        for start, stop in blocks:
            block = _start_block(datasets, stored, start, stop, pool)
            if waiting is not None:
                settle(waiting)
            waiting = block
        if waiting is not None:
            settle(waiting)
    return out


def _start_block(
    datasets: Sequence[Any], stored: Any, start: int, stop: int, pool: Executor
) -> Callable[[], tuple[int, list[int]]]:
    """Read rows ``start..stop`` and start hashing them; returns what waits for the verdict:
    (rows, rows whose checksum differs or which cannot be read)."""
    try:
        columns = [ds[start:stop] for ds in datasets]
        expected = stored[start:stop]
    except (OSError, ValueError, RuntimeError):
        return lambda: (stop - start, _bad_rows(datasets, stored, start, stop, pool))
    digests = start_digests(columns, pool)
    return lambda: (stop - start, [start + j for j in digests.mismatched(expected)])


def _checked_datasets(f: Any) -> list[Any]:
    """The datasets a row's checksum covers that the file's schema version has, in order."""
    modulation, kinds = schema.MODULATION in f, schema.features_in(f)
    return [f[name] for name in schema.row_datasets(modulation, kinds)[:-1] if name in f]


def _bad_rows(
    datasets: Sequence[Any], stored: Any, start: int, stop: int, pool: Executor
) -> list[int]:
    """Rows ``start..stop`` whose checksum differs or which cannot be read."""
    try:
        columns = [ds[start:stop] for ds in datasets]
        expected = stored[start:stop]
    except (OSError, ValueError, RuntimeError):
        if stop - start == 1:
            return [start]
        each: list[int] = []
        for i in range(start, stop):  # which rows of the block are unreadable
            each += _bad_rows(datasets, stored, i, i + 1, pool)
        return each
    return [start + j for j in mismatched(columns, expected, pool)]


def block_rows(datasets: Sequence[Any]) -> int:
    """How many rows of ``datasets`` to read at once: about :data:`_BLOCK_BYTES`."""
    row_bytes = sum(ds.dtype.itemsize * math.prod(ds.shape[1:]) for ds in datasets)
    return int(max(1, min(_BLOCK, _BLOCK_BYTES // max(row_bytes, 1))))


def hash_pool() -> Executor:
    """Threads to hash rows with: hashlib lets go of the GIL while it hashes a large
    buffer, so rows hash on every core."""
    return ThreadPoolExecutor(_THREADS)


def mismatched(columns: Sequence[np.ndarray], expected: np.ndarray, pool: Executor) -> list[int]:
    """The rows (offsets) of ``columns`` (one block of rows of every per-row dataset but the
    checksum, in checksum order, as stored) whose checksum is not ``expected``'s."""
    return start_digests(columns, pool).mismatched(expected)


class Digests:
    """The checksum values of one block of rows, being made on a pool."""

    def __init__(self, parts: Sequence[Future[list[bytes]]]) -> None:
        self._parts = parts

    def result(self) -> list[bytes]:
        """The values, in row order (waits for them)."""
        return [d for part in self._parts for d in part.result()]

    def mismatched(self, expected: np.ndarray) -> list[int]:
        """The rows (offsets in the block) whose checksum is not ``expected``'s (waits)."""
        return [j for j, d in enumerate(self.result()) if d != bytes(expected[j])]


def start_digests(columns: Sequence[np.ndarray], pool: Executor) -> Digests:
    """Start hashing one block of rows (columns as in :func:`mismatched`) on ``pool``.

    The columns must not change until :meth:`Digests.result` returns."""
    rows = len(columns[0])
    segments = _segments(columns)
    cut = -(-rows // _THREADS)
    return Digests(
        [pool.submit(_digest_rows, segments, lo, min(lo + cut, rows)) for lo in range(0, rows, cut)]
    )


def _segments(columns: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The rows' bytes as (rows, bytes) matrices that cover the columns in order."""
    # A row's checksum covers its bytes in every dataset in turn. A large column (audio)
    # is hashed where it lies, without a copy; runs of small ones are joined side by side
    # so that they cost one update per row.
    rows = len(columns[0])
    segments: list[np.ndarray] = []
    small: list[np.ndarray] = []
    for c in columns:
        m = np.ascontiguousarray(c).reshape(rows, -1).view(np.uint8)
        if m.shape[1] < _LARGE_ROW:
            small.append(m)
            continue
        if small:
            segments.append(np.concatenate(small, axis=1))
            small = []
        segments.append(m)
    if small:
        segments.append(np.concatenate(small, axis=1))
    return segments


def _digest_rows(segments: Sequence[np.ndarray], lo: int, hi: int) -> list[bytes]:
    """The checksum values of rows ``lo..hi`` of ``segments`` (see :func:`_segments`)."""
    out = []
    for i in range(lo, hi):
        h = new_hash()
        for s in segments:
            h.update(s[i])
        out.append(digest(h))
    return out


def block_digests(columns: Sequence[np.ndarray], pool: Executor) -> list[bytes]:
    """The checksum values of one block of rows (columns as in :func:`mismatched`)."""
    return start_digests(columns, pool).result()


def restamp(f: Any, start: int) -> None:
    """Make the checksums of rows ``start`` onwards of an open file again from what it
    holds now.

    Only for a final file whose library references were renumbered (:mod:`farm.storage.
    tables`) after its rows were checked as they were copied: the worker's checksum covers
    the run-wide references, and a file that keeps them would fail ``farm verify``.
    """
    if schema.CHECKSUM not in f:
        return
    n = int(f[schema.AUDIO].shape[0])
    datasets = _checked_datasets(f)
    stored = schema.stored_here(f, schema.CHECKSUM)
    step = block_rows(datasets)
    with hash_pool() as pool:
        for lo in range(start, n, step):
            hi = min(lo + step, n)
            digests = block_digests([ds[lo:hi] for ds in datasets], pool)
            stored[lo:hi] = np.array(digests, dtype=stored.dtype)


def verify_file(
    path: str | os.PathLike[str], on_progress: Callable[[int, int], None] | None = None
) -> Verified:
    """Every row of the dataset at ``path`` checked against its checksum (``farm verify``).

    Args:
        path: the dataset.
        on_progress: called with (rows checked, rows) as blocks finish.

    Raises:
        DatasetError: no such file, or not a readable farm dataset.
    """
    import h5py

    if not os.path.isfile(path):
        raise DatasetError(f"no such dataset: {os.fspath(path)}")
    try:
        with h5py.File(path, "r") as f:
            n = int(f[schema.AUDIO].shape[0]) if schema.AUDIO in f else 0
            report = None if on_progress is None else (lambda done: on_progress(done, n))
            return verify_rows(f, on_block=report)
    except (OSError, KeyError) as e:
        raise DatasetError(f"{os.fspath(path)} is not a readable farm dataset: {e}") from e
