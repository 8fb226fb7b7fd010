"""The library tables of a final dataset: each wavetable and real preset it uses, once.

Shards store library-wide indices (``params/wavetable``, ``metadata/library_preset``); the
final file keeps only what its rows use, so these columns are renumbered to rows of the
``wavetables/*`` and ``presets/*`` tables written here. Small columns only: the audio is
untouched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from farm.storage import schema
from farm.storage.integrity import restamp
from farm.store import canonical

if TYPE_CHECKING:
    from farm.presets.library import Library

_STR = h5py.string_dtype("utf-8")


def write_library_tables(
    f: Any, library: Library | None, unreadable: Sequence[Sequence[str]] = ()
) -> None:
    """Write ``wavetables/*`` and ``presets/*`` for the rows of open file ``f`` and renumber
    their references (a file without a library gets empty tables); ``unreadable``: files of
    a streamed library that its presets could not use, listed with its skipped files."""
    wt, lp = f[schema.WAVETABLE][...], f[schema.meta("library_preset")][...]
    used_w = np.unique(wt[wt >= 0]) if library is not None else np.zeros(0, np.int64)
    used_p = np.unique(lp[lp >= 0]) if library is not None else np.zeros(0, np.int64)
    # One table row per distinct wavetable: a streamed library gives each preset its own
    # indices, and many presets share a wavetable (Vital's init table above all).
    hashes = [library.wavetable_hash(i) for i in used_w.tolist()] if library is not None else []
    rows: dict[str, int] = {}
    first_of: list[int] = []
    for i, h in zip(used_w.tolist(), hashes, strict=True):
        if h not in rows:
            rows[h] = len(rows)
            first_of.append(i)
    if wt.size and library is not None:  # without one every reference is -1
        row_of = np.array([rows[h] for h in hashes], dtype=np.int32)
        new_wt, new_lp = _renumber(wt, used_w, row_of), _renumber(lp, used_p)
        changed = np.flatnonzero((new_wt != wt).any(axis=1) | (new_lp != lp))
        if changed.size:
            # In this file, never through a parted file's virtual datasets into its parts.
            schema.stored_here(f, schema.WAVETABLE)[...] = new_wt
            schema.stored_here(f, schema.meta("library_preset"))[...] = new_lp
            # The worker's checksums cover the run-wide references (its rows were checked
            # against them as they were copied here): they are made again for the file's.
            restamp(f, int(changed[0]))
    tables: dict[str, list[Any]] = {"wavetables/data": [], "wavetables/name": []}
    tables.update({"wavetables/hash": []})
    for i, h in zip(first_of, rows, strict=True):
        assert library is not None
        data = library.wavetable(i)
        tables["wavetables/data"].append(canonical(data).decode())
        tables["wavetables/name"].append(str(data.get("name", "")))
        tables["wavetables/hash"].append(h)
    fields = ("name", "author", "origin", "source", "licence")
    for key in ("state", "hash", *fields):
        tables[f"presets/{key}"] = []
    dropped = []
    for i in used_p.tolist():
        assert library is not None
        rec = library.record(i)
        tables["presets/state"].append(canonical(rec["state"]).decode())
        tables["presets/hash"].append(library.preset_hash(i))
        for key in fields:
            tables[f"presets/{key}"].append(str(rec.get(key, "")))
        dropped.append(int(rec.get("dropped_modulations", 0)))
    for name, values in tables.items():
        if name in f:
            del f[name]
        f.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR)
    if "presets/dropped_modulations" in f:
        del f["presets/dropped_modulations"]
    f.create_dataset("presets/dropped_modulations", data=np.array(dropped, dtype=np.int32))
    f.attrs["library"] = json.dumps(
        {
            "manifest": library.sha if library else None,
            "catalog": library.catalog if library else 0,
            "skipped_files": [*library.skipped, *map(list, unreadable)] if library else [],
        }
    )


def _renumber(refs: np.ndarray, used: np.ndarray, row_of: np.ndarray | None = None) -> np.ndarray:
    """References into ``used`` (sorted) as table rows: their place in ``used``, or
    ``row_of`` that place."""
    out = np.full(refs.shape, -1, dtype=np.int32)
    mask = refs >= 0
    at = np.searchsorted(used, refs[mask])
    out[mask] = at if row_of is None else row_of[at]
    return out
