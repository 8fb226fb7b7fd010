"""The merge: per-worker shards into one final file, exactly n rows in canonical order.

The ledger says where each job's rows are (:class:`Piece`: shard, first row, count); the
merge takes jobs in order, keeps the shortest prefix that reaches n (:func:`plan_rows`),
and copies the rows in blocks of about 32 MB: each block is gathered from each shard with
one read per dataset and written with one write per dataset, and a compressed dataset
moves as its compressed chunks (``read_direct_chunk``/``write_direct_chunk``) wherever the
shard's and the final file's layouts match, which they do when both come from
:class:`ShardWriter` with one spec. Memory stays flat in n: one block at a time. (Copying
a job at a time, with a read and a write per dataset and row, cost 1.3 ms per row in
h5py's Python layer: 26 s for 20,000 short rows, against 3 s now.)

Every piece is verified first (readable shard, rows present, keys of the right job), and
every row copied is checked against the checksum the worker made, on the bytes copied (see
:mod:`farm.storage.integrity`), so a shard lost or damaged (a killed worker, a bad disk) is
reported as the jobs to render again instead of a short or corrupt file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from farm.config import RunSpec
from farm.errors import CollectError
from farm.params.tiers import TierParams
from farm.paths import remove_dead_temps
from farm.storage import integrity, schema
from farm.storage.shard import ShardWriter, is_lock_error

log = logging.getLogger("farm.merge")

if TYPE_CHECKING:
    from farm.presets.library import Library

#: A piece's rows' keys: sampling block, preset index and MIDI note columns.
Keys = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Seconds to wait for a shard that a worker holds open (it appends one job: milliseconds).
LOCK_WAIT_S = 60.0


@dataclass(frozen=True)
class Piece:
    """Where one job's accepted rows are: ``count`` rows from row ``start`` of ``shard``,
    less the rows at offsets ``skip`` (their audio is an earlier row's)."""

    job: int
    shard: Path
    start: int
    count: int
    skip: tuple[int, ...] = ()
    #: (first preset, presets) of the job; None: ``job * batch_size`` onwards.
    presets: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        """Rows this piece adds to the dataset."""
        return self.count - len(self.skip)


class MissingRowsError(CollectError):
    """Rows the ledger counts are not in the shards (a worker killed mid-write, a shard
    deleted): the listed jobs must be rendered again."""

    def __init__(self, jobs: Sequence[int], why: str) -> None:
        super().__init__(f"{len(jobs)} job(s) missing from the shards ({why})")
        self.jobs = list(jobs)


@dataclass
class MergeResult:
    """What the merge wrote."""

    path: Path
    rows: int
    jobs: int
    raw_chunks: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    parts: int = 0
    """Part files a parted dataset joins (0: rows copied into one file)."""
    shards: list[Path] = field(default_factory=list)


class Shards:
    """Shards opened read-only on first use (kept open; a worker appending waits)."""

    def __init__(self) -> None:
        self.files: dict[Path, Any] = {}
        self.broken: dict[Path, str] = {}
        self._keys: dict[Path, Keys] = {}

    def get(self, path: Path) -> Any | None:
        if path in self.files:
            return self.files[path]
        if path in self.broken:
            return None
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                f = h5py.File(path, "r")
            except (OSError, ValueError) as e:
                if is_lock_error(e) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                self.broken[path] = f"{path.name}: {e}"
                return None
            self.files[path] = f
            return f

    def keys(self, path: Path) -> Keys:
        """The key columns of every row of an opened shard (:func:`row_keys`), read once."""
        if path not in self._keys:
            f = self.files[path]
            self._keys[path] = row_keys(f, 0, int(f[schema.AUDIO].shape[0]))
        return self._keys[path]

    def rows(self, path: Path) -> int:
        """The rows an opened shard holds."""
        return len(self.keys(path)[0])

    def close(self) -> None:
        self._keys.clear()
        for f in self.files.values():
            f.close()
        self.files.clear()


def counted_rejections(
    spec: RunSpec,
    by_preset: Mapping[int, Mapping[str, int]],
    last: int,
    duplicates: Sequence[int] = (),
) -> tuple[dict[str, int], int]:
    """Rejections and renders of the presets a dataset covers, global indices 0..``last``
    (the preset of its last row), whatever the jobs were: (reasons -> notes, renders).

    Args:
        spec: the run spec (its notes per preset).
        by_preset: global preset index -> reason -> rejected notes.
        last: the global index of the dataset's last preset.
        duplicates: the global preset index of each row left out as DUPLICATE_AUDIO.
    """
    out: Counter[str] = Counter()
    for g, reasons in by_preset.items():
        if g <= last:
            out.update({str(k): int(v) for k, v in reasons.items()})
    dup = sum(1 for g in duplicates if g <= last)
    if dup:
        out["DUPLICATE_AUDIO"] += dup
    return dict(sorted(out.items())), (last + 1) * spec.render.notes_per_preset


def take_pieces(pieces: Sequence[Piece], n: int) -> list[Piece]:
    """The shortest prefix of ``pieces`` (in job order) that holds at least n rows."""
    out, rows = [], 0
    for p in pieces:
        if rows >= n:
            break
        out.append(p)
        rows += p.rows
    if rows < n:
        raise CollectError(f"the ledger's jobs hold {rows} rows, fewer than n={n}")
    return out


def verify(
    pieces: Sequence[Piece], shards: Shards, batch: int, block: int
) -> tuple[list[int], str]:
    """Jobs whose rows are not where the ledger says, and the first reason."""
    bad: list[int] = []
    why = ""
    for p in pieces:
        if p.count == 0:
            continue
        f = shards.get(p.shard)
        problem = shards.broken.get(p.shard, "") if f is None else ""
        if f is not None:
            try:
                if shards.rows(p.shard) < p.start + p.count:
                    problem = f"{p.shard.name} holds fewer rows than job {p.job} needs"
                else:
                    blocks, index, _ = (
                        c[p.start : p.start + p.count] for c in shards.keys(p.shard)
                    )
                    # Row keys are (sampling block, index): the global preset index.
                    first, size = p.presets or (p.job * batch, batch)
                    g = blocks.astype(np.int64) * block + index
                    if not np.all((g >= first) & (g < first + size)):
                        problem = f"{p.shard.name} rows {p.start}+ are not job {p.job}"
            except (OSError, KeyError, ValueError) as e:
                problem = f"{p.shard.name}: {e}"
        if problem:
            bad.append(p.job)
            why = why or problem
    return bad, why


def open_pieces(
    out: Path, spec: RunSpec, pieces: Sequence[Piece], shards: Shards
) -> tuple[list[Piece], MergeResult]:
    """The shortest prefix of ``pieces`` that holds ``spec.n`` rows, its shards opened in
    ``shards`` and checked (rows present, keys of the right job), and the result to fill.

    Raises:
        MissingRowsError: some jobs' rows are unreadable or absent.
        CollectError: the pieces hold fewer than n rows.
    """
    chosen = take_pieces([p for p in pieces if p.rows > 0], spec.n)
    bad, why = verify(chosen, shards, spec.batch_size, spec.sampling.block)
    if bad:
        raise MissingRowsError(bad, why)
    return chosen, MergeResult(out, spec.n, len(chosen), shards=sorted(shards.files))


def finish(
    writer: ShardWriter,
    spec: RunSpec,
    by_preset: Mapping[int, Mapping[str, int]],
    duplicates: Sequence[int],
    attrs: Mapping[str, Any] | None,
) -> None:
    """Give a final file its rejection counts (those of the presets its rows cover) and
    extra attributes, and close it (renamed into place)."""
    f, n = writer.file, spec.n
    last = int(f[schema.meta("job")][n - 1]) * spec.sampling.block + int(
        f[schema.meta("preset")][n - 1]
    )
    writer.set_rejections(*counted_rejections(spec, by_preset, last, duplicates))
    if writer.library is not None:
        writer.unreadable = writer.library.unreadable(by_preset, last)
    for key, value in (attrs or {}).items():
        f.attrs[key] = value
    writer.close()


def merge(
    out: Path,
    spec: RunSpec,
    tp: TierParams,
    fingerprint: str,
    pieces: Sequence[Piece],
    *,
    by_preset: Mapping[int, Mapping[str, int]],
    attrs: Mapping[str, Any] | None = None,
    library: Library | None = None,
) -> MergeResult:
    """Write ``spec.n`` rows from ``pieces`` (job order) into ``out`` (``.tmp``, renamed).

    Args:
        out: the final file.
        spec: the run spec (the final file's layout and attributes).
        tp: the run's tier parameters.
        fingerprint: the registry fingerprint.
        pieces: every done job with rows, in job order (jobs past the prefix are ignored).
        by_preset: rejected notes of the done jobs, by global preset index and reason: the
            file counts those of the presets it covers (see :func:`counted_rejections`).
        attrs: extra file attributes (run id, ...).
        library: the run's library (its tables go into the final file).

    Raises:
        MissingRowsError: some jobs' rows are unreadable or absent; nothing is written.
        CollectError: the pieces hold fewer than n rows.
    """
    t0 = time.monotonic()
    n = spec.n
    shards = Shards()
    try:
        chosen, result = open_pieces(out, spec, pieces, shards)
        plan, duplicates = plan_rows(chosen, shards, n, result, spec.sampling.block)
        remove_dead_temps(out)  # a collector killed while writing (its run was resumed)
        with ShardWriter(out, spec, tp, fingerprint, atomic=True, library=library) as writer:
            for ds in writer.datasets():
                ds.resize(n, axis=0)
            damaged = _copy_rows(writer, shards, plan, result)
            if damaged:
                raise MissingRowsError(sorted(damaged), next(iter(damaged.values())))
            finish(writer, spec, by_preset, duplicates, attrs)
    finally:
        shards.close()
    result.seconds = time.monotonic() - t0
    return result


#: What a dataset takes: each chosen piece with the offsets of the rows it keeps.
Plan = list[tuple[Piece, list[int]]]


def plan_rows(
    chosen: Sequence[Piece], shards: Shards, n: int, result: MergeResult, block: int
) -> tuple[Plan, list[int]]:
    """The rows a dataset of n rows takes from the chosen pieces (:func:`keep_rows`), and
    the global preset indices of the rows left out as duplicate audio.

    Raises:
        CollectError: fewer than n distinct rows.
    """
    plan: Plan = []
    duplicates: list[int] = []
    k = 0
    for p in chosen:
        blocks, presets, notes = (c[p.start : p.start + p.count] for c in shards.keys(p.shard))
        keep = keep_rows((blocks, presets, notes), p, n - k, result, duplicates, block)
        plan.append((p, keep))
        k += len(keep)
        if k >= n:
            break
    if k < n:
        raise CollectError(f"only {k} distinct rows in the shards, fewer than n={n}")
    return plan, duplicates


def damaged_jobs(plan: Plan, shards: Shards) -> dict[int, str]:
    """The jobs some of whose chosen rows fail their checksum or cannot be read, and why:
    every chosen row of a shard checked in place, in one pass over the shard."""
    by_shard: dict[Path, Plan] = {}
    for p, keep in plan:
        by_shard.setdefault(p.shard, []).append((p, keep))
    damaged: dict[int, str] = {}
    for shard, items in by_shard.items():
        rows = [p.start + i for p, keep in items for i in keep]
        # Ranges of nearby chosen rows: the rows between that the dataset leaves out
        # (duplicates, jobs past n) cost less to read than the many small reads of the
        # exact runs would.
        ranges = row_ranges(rows, gap=1024)
        try:
            bad = set(integrity.verify_rows(shards.files[shard], ranges).bad)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            for p, _ in items:
                damaged[p.job] = f"{shard.name}: job {p.job} unreadable: {e}"
            continue
        for p, keep in items:
            failed = bad.intersection(p.start + i for i in keep)
            if failed:
                why = f"{len(failed)} row(s) of job {p.job} fail their checksum"
                damaged[p.job] = f"{shard.name}: {why}"
    return dict(sorted(damaged.items()))


def _copy_rows(writer: ShardWriter, shards: Shards, plan: Plan, res: MergeResult) -> dict[int, str]:
    """Copy the plan's rows into the writer's file in blocks, checking each row against its
    checksum on the bytes copied; the damaged jobs, and why.

    Each block of output rows is gathered from each shard with one read per dataset and run
    of nearby rows (:func:`_gather`) and written with one write per dataset; a dataset
    compressed the same way in both files moves as its compressed chunks, one per
    row, and is decoded only to be hashed. A block's rows are hashed on every core while the
    next block is read and written.
    """
    paths = sorted({p.shard for p, _ in plan})
    which = {path: i for i, path in enumerate(paths)}
    shard = np.concatenate([np.full(len(keep), which[p.shard]) for p, keep in plan])
    row = np.concatenate([p.start + np.asarray(keep, dtype=np.int64) for p, keep in plan])
    job = np.concatenate([np.full(len(keep), p.job) for p, keep in plan])
    dst = writer.datasets()
    src = [[shards.files[path][d.name] for d in dst] for path in paths]
    raw = [
        bool(d._filters) and d.chunks[0] == 1 and all(_same_layout(s[i], d) for s in src)
        for i, d in enumerate(dst)
    ]
    damaged: dict[int, str] = {}
    step = integrity.block_rows(dst)

    def check(k: int, digests: integrity.Digests, expected: np.ndarray, at: np.ndarray) -> None:
        for j in digests.mismatched(expected):
            p = int(job[k + j])
            damaged[p] = f"{paths[at[j]].name}: row(s) of job {p} fail their checksum"

    # A block is hashed on the pool while the next is read and written.
    hashing: tuple[int, integrity.Digests, np.ndarray, np.ndarray] | None = None
    with integrity.hash_pool() as pool:
        for k in range(0, len(row), step):
            at, rows = shard[k : k + step], row[k : k + step]
            try:
                columns = [_gather([s[i] for s in src], at, rows) for i in range(len(dst))]
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                # Damage on disk: find exactly which jobs' rows cannot be read.
                found = damaged_jobs(plan, shards)
                if not found:
                    raise
                log.debug("block at row %d unreadable (%s)", k, e)
                return found
            for i, d in enumerate(dst):
                if not raw[i]:
                    d[k : k + len(rows)] = columns[i]
                    continue
                tail = (0,) * (d.ndim - 1)
                for j, (a, r) in enumerate(zip(at.tolist(), rows.tolist(), strict=True)):
                    mask, data = src[a][i].id.read_direct_chunk((r, *tail))
                    d.id.write_direct_chunk((k + j, *tail), data, mask)
                res.raw_chunks += len(rows)
            if hashing is not None:
                check(*hashing)
            hashing = (k, integrity.start_digests(columns[:-1], pool), columns[-1], at)
        if hashing is not None:
            check(*hashing)
    return damaged


def _gather(src: Sequence[Any], at: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the datasets ``src[at]``: one read per shard and run of nearby rows
    (rows between that are left out cost less to read than another read would; a job sent
    again lands far later in its shard, and is read on its own)."""
    first = src[int(at[0])]
    out = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
    for a in np.unique(at).tolist():
        mine = np.flatnonzero(at == a)
        for lo, hi in row_ranges(rows[mine].tolist()):
            part = mine[(rows[mine] >= lo) & (rows[mine] < hi)]
            out[part] = src[a][lo:hi][rows[part] - lo]
    return out


def row_ranges(rows: Sequence[int], gap: int = 64) -> list[tuple[int, int]]:
    """Ranges (first, past the last) covering ``rows``, split where more than ``gap`` rows
    lie between two of them (``gap=0``: the runs of consecutive rows)."""
    out: list[tuple[int, int]] = []
    for r in sorted(set(rows)):
        if out and r - out[-1][1] <= gap:
            out[-1] = (out[-1][0], r + 1)
        else:
            out.append((r, r + 1))
    return out


def row_keys(src: Any, lo: int, hi: int) -> Keys:
    """Rows ``lo..hi``'s keys (sampling block, preset index, MIDI note) in an open shard."""
    block, preset, note = (src[schema.meta(m)][lo:hi] for m in ("job", "preset", "midi_note"))
    return block, preset, note


def keep_rows(
    keys: Keys, p: Piece, room: int, res: MergeResult, duplicates: list[int], block: int
) -> list[int]:
    """The offsets in ``p`` of the rows a dataset takes from it, at most ``room``: the first
    occurrence of each key, less the rows whose audio an earlier row has (their global
    preset indices are added to ``duplicates``; repeated keys are counted in ``res``).

    Args:
        keys: the piece's rows' keys (:func:`row_keys`).
    """
    keep: list[int] = []
    seen: set[tuple[int, int, int]] = set()
    skip = set(p.skip)
    for i, key in enumerate(zip(*(k.tolist() for k in keys), strict=True)):
        if key in seen:
            res.duplicates += 1
            continue
        seen.add(key)
        if i in skip:
            duplicates.append(key[0] * block + key[1])
            continue
        keep.append(i)
    return keep[:room]


def _same_layout(a: Any, b: Any) -> bool:
    return bool(
        a.chunks == b.chunks and a.dtype == b.dtype and dict(a._filters) == dict(b._filters)
    )
