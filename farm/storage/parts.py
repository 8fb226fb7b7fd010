"""Parted datasets: the run's shards become the dataset's part files, and ``NAME.h5`` joins
them without copying a row.

With ``--part-rows K`` every worker process starts a new shard once its shard holds K rows,
and the collector, instead of copying the rows into one file (:mod:`farm.storage.merge`):

1. checks every chosen row against its checksum, reading the shards in place (the same
   choice of rows as a merge: job order, the first n rows, duplicates left out);
2. moves the shards that hold chosen rows into ``NAME.parts/`` beside ``NAME.h5`` (a rename
   on one file system) and deletes the others;
3. writes ``NAME.h5``: the file attributes, the preset and wavetable tables and, for every
   per-row dataset, an HDF5 virtual dataset whose pieces map the chosen rows of each part,
   by paths relative to ``NAME.h5``.

So the collector writes kilobytes, the disk holds the dataset once (plus the few rows of
jobs past n in the same parts), and plain h5py reads ``NAME.h5`` as one dataset wherever
the pair ``NAME.h5`` + ``NAME.parts/`` is moved. HDF5 fills a virtual dataset's rows from a
missing part with zeros, silently, so the schema check
(:func:`farm.storage.schema.missing_parts`) refuses a parted file whose parts are not all
there.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
from h5py import h5d, h5p, h5s

from farm.config import RunSpec
from farm.params.tiers import TierParams
from farm.paths import remove_dead_temps
from farm.storage.merge import (
    MergeResult,
    MissingRowsError,
    Piece,
    Plan,
    Shards,
    damaged_jobs,
    finish,
    open_pieces,
    plan_rows,
    row_ranges,
)
from farm.storage.shard import ShardWriter

if TYPE_CHECKING:
    from farm.presets.library import Library


def parts_dir(out: Path) -> Path:
    """The folder of a parted dataset's parts: ``NAME.parts`` beside ``NAME.h5``."""
    return out.with_name(out.name.removesuffix(".h5") + ".parts")


def link(
    out: Path,
    spec: RunSpec,
    tp: TierParams,
    fingerprint: str,
    pieces: Sequence[Piece],
    *,
    by_preset: Mapping[int, Mapping[str, int]],
    attrs: Mapping[str, Any] | None = None,
    library: Library | None = None,
    isolate: Callable[[Callable[[], None]], None] | None = None,
) -> MergeResult:
    """Make ``out`` a parted dataset of ``spec.n`` rows from ``pieces`` (see the module).

    Args:
        isolate: runs the writing of ``NAME.h5`` (given as a function) elsewhere, e.g. in
            a child process. Building a virtual dataset costs about 25 KB per mapped piece
            (one per job and dataset), which the process never gives back: a long-lived
            worker should not keep it. Default: here.

    Raises:
        MissingRowsError: some jobs' rows are unreadable, absent or fail their checksum;
            nothing is moved or written.
        CollectError: the pieces hold fewer than n rows.
    """
    t0 = time.monotonic()
    n = spec.n
    parts = parts_dir(out)
    shards = Shards()
    try:
        chosen, result = open_pieces(out, spec, [_located(p, parts) for p in pieces], shards)
        plan, duplicates = plan_rows(chosen, shards, n, result, spec.sampling.block)
        damaged = damaged_jobs(plan, shards)
        if damaged:
            raise MissingRowsError(sorted(damaged), next(iter(damaged.values())))
        sizes = {p.shard.name: shards.rows(p.shard) for p, _ in plan}
    finally:
        shards.close()
    _move_in(parts, {p.shard for p, _ in plan})
    remove_dead_temps(out)

    def write() -> None:
        with ShardWriter(out, spec, tp, fingerprint, atomic=True, library=library) as writer:
            rel = parts.name
            mappings = _mappings(plan)
            for ds in writer.datasets():
                _make_virtual(writer.file, ds.name.lstrip("/"), n, mappings, rel, sizes)
            finish(writer, spec, by_preset, duplicates, {**(attrs or {}), "parts": rel})

    (isolate or _here)(write)
    keep_names = {p.shard.name for p, _ in plan}
    for old in parts.iterdir():  # parts of a dataset this one replaced
        if old.name not in keep_names:
            old.unlink(missing_ok=True)
    result.parts = len(keep_names)
    result.seconds = time.monotonic() - t0
    return result


def _here(fn: Callable[[], None]) -> None:
    fn()


def _located(p: Piece, parts: Path) -> Piece:
    """The piece, pointing into ``parts`` when an earlier collector already moved its
    shard there (it stopped before ``NAME.h5`` was written)."""
    moved = parts / p.shard.name
    if not p.shard.exists() and moved.exists():
        return dataclasses.replace(p, shard=moved)
    return p


def _move_in(parts: Path, shards: set[Path]) -> None:
    parts.mkdir(exist_ok=True)
    for shard in sorted(shards):
        target = parts / shard.name
        if shard == target:
            continue
        try:
            os.replace(shard, target)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.copy2(shard, target)  # another file system: copied once, then freed
            shard.unlink()


def _mappings(plan: Plan) -> list[tuple[str, int, int]]:
    """The dataset's rows in order as (shard name, first row there, rows): every run of
    consecutive rows of one shard is one mapping, across jobs too."""
    out: list[tuple[str, int, int]] = []
    for p, keep in plan:
        for lo, hi in row_ranges(keep, gap=0):
            start, count = p.start + lo, hi - lo
            if out and out[-1][0] == p.shard.name and sum(out[-1][1:]) == start:
                out[-1] = (p.shard.name, out[-1][1], out[-1][2] + count)
            else:
                out.append((p.shard.name, start, count))
    return out


def _make_virtual(
    f: Any,
    name: str,
    n: int,
    mappings: Sequence[tuple[str, int, int]],
    rel: str,
    sizes: Mapping[str, int],
) -> None:
    """Replace the empty dataset ``name`` by a virtual one over the mapped rows.

    Built with HDF5's own calls: h5py's ``VirtualLayout`` deep-copies a selection object
    for every slice it maps (under a profiler, 26 s for the 77,000 mappings of a
    20,000-row run), where ``H5Pset_virtual`` costs microseconds.
    """
    empty = f[name]
    shape, attrs, tid = empty.shape[1:], dict(empty.attrs), empty.id.get_type()
    del f[name]
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_layout(h5d.VIRTUAL)
    view = h5s.create_simple((n, *shape))
    sources: dict[str, Any] = {}
    tail = (0,) * len(shape)
    key = name.encode()
    k = 0
    for shard, start, count in mappings:
        if shard not in sources:
            sources[shard] = h5s.create_simple((sizes[shard], *shape))
        source = sources[shard]
        source.select_hyperslab((start, *tail), (count, *shape))
        view.select_hyperslab((k, *tail), (count, *shape))
        # The selections are copied into the property list, so both spaces are reused.
        dcpl.set_virtual(view, f"{rel}/{shard}".encode(), key, source)
        k += count
    made = h5d.create(f.id, key, tid, h5s.create_simple((n, *shape)), dcpl=dcpl)
    h5py.Dataset(made).attrs.update(attrs)
