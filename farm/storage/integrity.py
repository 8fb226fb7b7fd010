"""Row checksums: made where a row is rendered, checked wherever it is copied or read back.

A row's checksum is blake2b-128 over the bytes it has in every other per-row dataset, in
the fixed order of :func:`farm.storage.schema.row_datasets` (audio as stored, labels,
wavetables, the modulation matrix, metadata). The worker computes it from the arrays it is
about to write; the collector recomputes it from what it copies (the raw chunk bytes for
uncompressed audio, so the check costs a hash and no decode), and ``farm verify`` from the
final file. A shard damaged on disk (a bad sector, a stray ``dd``) therefore never becomes
data: its rows are treated as lost and their jobs rendered again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.errors import DatasetError
from farm.storage import schema

#: Rows of the small per-row datasets read at once by :func:`verify_rows`.
_BLOCK = 1024


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
    out = np.empty(n, dtype="S32")
    for i in range(n):
        h = new_hash()
        for c in columns:
            h.update(c[i : i + 1].tobytes())
        out[i] = digest(h)
    return out


def row_bytes_reader(ds: Any) -> Callable[[int], bytes]:
    """A function giving row ``i``'s stored bytes of a one-row-per-chunk dataset: the raw
    chunk when it has no filters (no decode), else the decoded row."""
    # A virtual dataset (a parted file) has no chunks of its own: read rows through it.
    filtered = ds.is_virtual or bool(ds._filters)
    tail = (0,) * (ds.ndim - 1)

    def read(i: int) -> bytes:
        if not filtered:
            _, data = ds.id.read_direct_chunk((i, *tail))
            return bytes(data)
        return bytes(ds[i : i + 1].tobytes())

    return read


def _row_chunked(ds: Any) -> bool:
    """Stored a row per chunk (audio, features, the tier-3 matrix), or a virtual view of
    such a dataset: read a row at a time, never a block of rows."""
    if ds.is_virtual:
        return len(ds.shape) > 2  # the virtual twins of the one-row-per-chunk datasets
    return bool(ds.chunks and ds.chunks[0] == 1)


@dataclass
class Verified:
    """What :func:`verify_rows` found."""

    rows: int = 0
    bad: list[int] = field(default_factory=list)
    unchecked: bool = False
    """True for a file older than checksums (schema < 2.4.0): nothing could be checked."""


def verify_rows(
    f: Any, lo: int = 0, hi: int | None = None, on_block: Callable[[int], None] | None = None
) -> Verified:
    """Recompute rows ``lo..hi`` of an open file (a shard or a dataset) and list the rows
    whose checksum differs (or cannot be read).

    Args:
        f: an open ``h5py.File``.
        lo: first row.
        hi: past the last row (default: every row).
        on_block: called with the rows checked so far (progress).
    """
    if schema.CHECKSUM not in f:
        return Verified(unchecked=True)
    n = int(f[schema.AUDIO].shape[0])
    hi = n if hi is None else min(hi, n)
    # What the file's schema version has (the schema check reports anything missing).
    names = [
        n for n in schema.row_datasets(schema.MODULATION in f, schema.features_in(f))[:-1] if n in f
    ]
    big = {name for name in names if _row_chunked(f[name])}
    readers = {name: row_bytes_reader(f[name]) for name in big}
    out = Verified(rows=max(hi - lo, 0))
    for start in range(lo, hi, _BLOCK):
        stop = min(start + _BLOCK, hi)
        try:
            small = {name: f[name][start:stop] for name in names if name not in big}
            stored = f[schema.CHECKSUM][start:stop]
        except (OSError, ValueError, RuntimeError):
            out.bad.extend(range(start, stop))
            continue
        for i in range(start, stop):
            h = new_hash()
            try:
                for name in names:
                    if name in big:
                        h.update(readers[name](i))
                    else:
                        h.update(small[name][i - start : i - start + 1].tobytes())
            except (OSError, ValueError, RuntimeError):
                out.bad.append(i)
                continue
            if digest(h) != bytes(stored[i - start]):
                out.bad.append(i)
        if on_block is not None:
            on_block(stop - lo)
    return out


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
