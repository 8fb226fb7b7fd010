"""A run's library: its real presets and its wavetables, stored once, addressed by index.

The library is a manifest in the content-addressed store (:mod:`farm.store`)::

    {"presets": [record hash, ...], "wavetables": [wavetable hash, ...], "catalog": k}

The first ``k`` wavetables are the catalog that synthetic presets draw from; the rest are the
real presets' own. The run spec holds the manifest's hash, so a job names presets and
wavetables by index and a worker reads them from the shared data folder.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import SourceError
from farm.params.label import Label, Modulation
from farm.params.normalize import categorical_from_raw, continuous_from_raw
from farm.params.tiers import TierParams
from farm.presets.convert import Converted
from farm.store import Store, object_hash

NO_WAVETABLES = (-1, -1, -1)


class Library:
    """A stored library, read lazily (each object once per process).

    Args:
        store: the data folder's store.
        sha: the manifest's hash (``RunSpec.sources.library``).
    """

    def __init__(self, store: Store, sha: str) -> None:
        self.store = store
        self.sha = sha
        manifest = store.get(sha)
        self.presets: list[str] = list(manifest["presets"])
        self.wavetables: list[str] = list(manifest["wavetables"])
        self.catalog = int(manifest["catalog"])
        self.skipped: list[list[str]] = list(manifest.get("skipped", []))
        self._wt_index = {h: i for i, h in enumerate(self.wavetables)}

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one library per run, kept for the run
    def record(self, i: int) -> dict[str, Any]:
        """Preset record ``i`` (see :mod:`farm.presets.convert`), wavetables as hashes."""
        return dict(self.store.get(self.presets[i]))

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def wavetable(self, i: int) -> dict[str, Any]:
        """Wavetable ``i`` (Vital's wavetable JSON)."""
        return dict(self.store.get(self.wavetables[i]))

    def preset_wavetables(self, i: int) -> tuple[int, int, int]:
        """Indices of preset ``i``'s three oscillator wavetables."""
        hashes = self.record(i)["wavetables"]
        if len(hashes) != 3:
            return NO_WAVETABLES
        a, b, c = (self._wt_index[h] for h in hashes)
        return (a, b, c)

    def nonscalar(self, wavetables: Sequence[int], state: int) -> dict[str, Any]:
        """The non-scalar preset JSON a label with these references injects."""
        out: dict[str, Any] = {}
        if state >= 0:
            out.update(self.record(state)["state"])
        if min(wavetables) >= 0:
            out["wavetables"] = [self.wavetable(i) for i in wavetables]
        return out

    def preset_labels(self, tp: TierParams, start: int, stop: int) -> list[Label]:
        """Labels of presets ``start .. stop-1`` for tier ``tp``: the tier's parameters read
        from the preset (others stay at the init preset's values), its state and wavetables,
        and on tier 3 its connections."""
        return [self.preset_label(tp, i) for i in range(start, stop)]

    def preset_label(self, tp: TierParams, i: int) -> Label:
        """The label of preset ``i`` for tier ``tp``."""
        rec = self.record(i)
        raw = rec["raw"]
        cont = np.array([raw.get(s.name, s.default) for s in tp.continuous], dtype=np.float64)
        cat = np.array([raw.get(s.name, s.default) for s in tp.categorical], dtype=np.float64)
        mods: tuple[Modulation, ...] = ()
        if tp.modulation:
            mods = tuple(Modulation.from_list(m) for m in rec["modulations"])
        wts = self.preset_wavetables(i)
        return Label(
            tier=tp.tier,
            continuous=continuous_from_raw(tp, cont),
            categorical=categorical_from_raw(tp, cat),
            modulations=mods,
            name=rec["name"],
            source=rec["source"],
            wavetables=wts,
            state=i,
            extra={"nonscalar": self.nonscalar(wts, i)},
        )

    def with_wavetables(self, label: Label, wavetables: Sequence[int]) -> Label:
        """A synthetic label with catalog wavetables on its three oscillators."""
        a, b, c = (int(w) for w in wavetables)
        return Label(
            tier=label.tier,
            continuous=label.continuous,
            categorical=label.categorical,
            modulations=label.modulations,
            name=label.name,
            source=label.source,
            wavetables=(a, b, c),
            extra={"nonscalar": self.nonscalar((a, b, c), -1)},
        )


def read_catalog(path: Path) -> list[dict[str, Any]]:
    """The entries of a wavetable catalog written by ``farm discover-wt``.

    Raises:
        SourceError: unreadable, not a catalog, or an entry whose data does not match its hash.
    """
    import gzip

    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        doc = json.loads(raw)
    except (OSError, EOFError, ValueError) as e:
        raise SourceError(f"cannot read wavetable catalog {path}: {e}") from None
    entries = doc.get("wavetables") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SourceError(f"{path} is not a wavetable catalog (no 'wavetables' list)")
    for entry in entries:
        if not isinstance(entry, dict) or object_hash(entry.get("data")) != entry.get("hash"):
            raise SourceError(f"{path}: an entry's data does not match its hash")
    return entries


def build_library(
    store: Store,
    converted: Sequence[Converted],
    catalog: Sequence[dict[str, Any]] = (),
    skipped: Sequence[tuple[str, str]] = (),
) -> tuple[str, int, int]:
    """Store presets and wavetables and the manifest (with the files skipped on the way);
    returns (manifest hash, presets, catalog wavetables)."""
    wavetables = [store.put(e["data"]) for e in catalog]
    index = {h: i for i, h in enumerate(wavetables)}
    presets = []
    for conv in converted:
        for rec in conv.records:
            hashes = []
            for wt in rec["wavetables"]:
                h = store.put(wt)
                if h not in index:
                    index[h] = len(wavetables)
                    wavetables.append(h)
                hashes.append(h)
            presets.append(store.put({**rec, "wavetables": hashes}))
    manifest = {
        "presets": presets,
        "wavetables": wavetables,
        "catalog": len(catalog),
        "skipped": [list(s) for s in skipped],
    }
    return store.put(manifest), len(presets), len(catalog)


def library_for(spec_library: str | None, data_dir: str | Path) -> Library | None:
    """The library a spec names, from the data folder's store (None for a synthetic run)."""
    if spec_library is None:
        return None
    return Library(Store(data_dir), spec_library)
