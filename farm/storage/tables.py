"""The library tables of a final dataset: each wavetable and real preset it uses, once.

Shards store library-wide indices (``params/wavetable``, ``metadata/library_preset``); the
final file keeps only what its rows use, so these columns are renumbered to rows of the
``wavetables/*`` and ``presets/*`` tables written here. Small columns only: the audio is
untouched.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from farm.storage import schema
from farm.store import canonical

if TYPE_CHECKING:
    from farm.presets.library import Library

_STR = h5py.string_dtype("utf-8")


def write_library_tables(f: Any, library: Library | None) -> None:
    """Write ``wavetables/*`` and ``presets/*`` for the rows of open file ``f`` and renumber
    their references (a file without a library gets empty tables)."""
    wt_ds, lp_ds = f[schema.WAVETABLE], f[schema.meta("library_preset")]
    wt, lp = wt_ds[...], lp_ds[...]
    used_w = np.unique(wt[wt >= 0]) if library is not None else np.zeros(0, np.int64)
    used_p = np.unique(lp[lp >= 0]) if library is not None else np.zeros(0, np.int64)
    if wt.size:
        wt_ds[...] = _renumber(wt, used_w)
        lp_ds[...] = _renumber(lp, used_p)
    tables: dict[str, list[Any]] = {"wavetables/data": [], "wavetables/name": []}
    tables.update({"wavetables/hash": []})
    for i in used_w.tolist():
        assert library is not None
        data = library.wavetable(i)
        tables["wavetables/data"].append(canonical(data).decode())
        tables["wavetables/name"].append(str(data.get("name", "")))
        tables["wavetables/hash"].append(library.wavetables[i])
    fields = ("name", "author", "origin", "source", "licence")
    for key in ("state", "hash", *fields):
        tables[f"presets/{key}"] = []
    dropped = []
    for i in used_p.tolist():
        assert library is not None
        rec = library.record(i)
        tables["presets/state"].append(canonical(rec["state"]).decode())
        tables["presets/hash"].append(library.presets[i])
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
            "skipped_files": library.skipped if library else [],
        }
    )


def _renumber(refs: np.ndarray, used: np.ndarray) -> np.ndarray:
    out = np.full(refs.shape, -1, dtype=np.int32)
    mask = refs >= 0
    out[mask] = np.searchsorted(used, refs[mask])
    return out
