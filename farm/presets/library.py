"""A run's library: its real presets and its wavetables, stored once, addressed by index.

The library is a manifest in the content-addressed store (:mod:`farm.store`)::

    {"presets": [record hash, ...], "wavetables": [wavetable hash, ...], "catalog": k}

The first ``k`` wavetables are the catalog that synthetic presets draw from; the rest are the
real presets' own. The run spec holds the manifest's hash, so a job names presets and
wavetables by index and a worker reads them from the shared data folder.

A **streamed** library (``farm submit --stream-presets``) is a manifest of the files
themselves, so rendering starts before any preset is read::

    {"files": [[file hash, origin, stem, licence, source], ...], "version": [1, 5, 5],
     "wavetables": [catalog hash, ...], "catalog": k}

Each file is stored once (its bytes as a latin-1 string) and takes a preset index, so every
index is known before anything is read. The worker that renders preset ``i`` reads file
``i`` then, in a reader process of its own (:mod:`farm.presets.reader`), through the same
read cache as the submitter (:class:`farm.presets.cache.PresetCache`): a file read once in
the data folder is never read again. A file vita cannot use keeps its index and is counted
as ``FILE_<REASON>`` rejections of its notes. Preset ``i``'s own wavetables are indices
``k + 3i .. k + 3i + 2``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import SourceError
from farm.params.label import Label, Modulation
from farm.params.normalize import categorical_from_raw, continuous_from_raw
from farm.params.tiers import TierParams
from farm.presets.cache import PresetCache
from farm.presets.convert import Converted, read_file, record_of
from farm.presets.files import SourceFile
from farm.presets.reader import Reader
from farm.store import Store, object_hash

NO_WAVETABLES = (-1, -1, -1)
#: This process's reader of streamed files (its process starts at the first read).
_READER = Reader()


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
        self.presets: list[str] = list(manifest.get("presets", []))
        self.files: list[list[str]] | None = manifest.get("files")
        self.version = tuple(manifest.get("version", ()))
        self.wavetables: list[str] = list(manifest["wavetables"])
        self.catalog = int(manifest["catalog"])
        self.skipped: list[list[str]] = list(manifest.get("skipped", []))
        self._wt_index = {h: i for i, h in enumerate(self.wavetables)}
        self._cache: PresetCache | None = None

    def unreadable(self, by_preset: Mapping[int, Mapping[str, int]], last: int) -> list[list[str]]:
        """A streamed library's files among presets 0..``last`` that vita could not use, as
        ``[origin, reason]`` (a library read first lists its bad files in ``skipped``).

        Args:
            by_preset: rejected notes by global preset index and reason; such a file's
                notes are ``FILE_<REASON>`` (:func:`farm.jobs.render.render_job`).
            last: the global index of the dataset's last preset.
        """
        if self.files is None:
            return []
        out = []
        for g in sorted(i for i in by_preset if i <= last and i < len(self.files)):
            for reason in by_preset[g]:
                if reason.startswith("FILE_"):
                    out.append([self.files[g][1], reason.removeprefix("FILE_").lower()])
        return out

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one library per run, kept for the run
    def record(self, i: int) -> dict[str, Any]:
        """Preset record ``i`` (see :mod:`farm.presets.convert`), wavetables as hashes; for a
        streamed file vita cannot use, ``{"reason": ...}``."""
        if self.files is None:
            return dict(self.store.get(self.presets[i]))
        read = self._read(i)
        if "reason" in read:
            return {"reason": read["reason"]}
        return {**read, "wavetables": [object_hash(w) for w in read["wavetables"]]}

    @functools.lru_cache(maxsize=16)  # noqa: B019 - with its wavetables: a few MB each
    def _read(self, i: int) -> dict[str, Any]:
        """Streamed file ``i`` read (from the read cache, or by vita now): its record with
        the wavetables' JSON, or ``{"reason": ...}``."""
        assert self.files is not None
        data_hash, origin, stem, licence, source = self.files[i]
        if self._cache is None:
            self._cache = PresetCache(self.store.root.parent)
        data = str(self.store.get(data_hash)["latin1"]).encode("latin-1")
        f = SourceFile(origin, stem, data, licence)
        read = read_file(f, self.version, self._cache, _READER.read)
        return read if "reason" in read else record_of(read, f, source)

    def preset_hash(self, i: int) -> str:
        """The hash of preset ``i``'s record (as stored by an eager library)."""
        return self.presets[i] if self.files is None else object_hash(self.record(i))

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def wavetable(self, i: int) -> dict[str, Any]:
        """Wavetable ``i`` (Vital's wavetable JSON)."""
        if i < len(self.wavetables):
            return dict(self.store.get(self.wavetables[i]))
        preset, k = divmod(i - self.catalog, 3)
        return dict(self._read(preset)["wavetables"][k])

    def wavetable_hash(self, i: int) -> str:
        """The hash of wavetable ``i``'s JSON."""
        if i < len(self.wavetables):
            return self.wavetables[i]
        preset, k = divmod(i - self.catalog, 3)
        return str(self.record(preset)["wavetables"][k])

    def preset_wavetables(self, i: int) -> tuple[int, int, int]:
        """Indices of preset ``i``'s three oscillator wavetables."""
        hashes = self.record(i)["wavetables"]
        if len(hashes) != 3:
            return NO_WAVETABLES
        if self.files is not None:
            first = self.catalog + 3 * i
            return (first, first + 1, first + 2)
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
        """The label of preset ``i`` for tier ``tp`` (for a streamed file vita cannot use,
        the init preset marked ``extra["unreadable"]`` with the reason: its notes are not
        rendered)."""
        rec = self.record(i)
        if "reason" in rec:
            return Label(
                tier=tp.tier,
                continuous=continuous_from_raw(tp, np.array([s.default for s in tp.continuous])),
                categorical=categorical_from_raw(
                    tp, np.array([s.default for s in tp.categorical], dtype=np.float64)
                ),
                name=self.files[i][2] if self.files is not None else "",
                source=self.files[i][4] if self.files is not None else "",
                extra={"unreadable": str(rec["reason"])},
            )
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


def build_streamed_library(
    store: Store,
    files: Sequence[tuple[str, SourceFile]],
    version: Sequence[int],
    catalog: Sequence[dict[str, Any]] = (),
    skipped: Sequence[tuple[str, str]] = (),
    workers: int = 1,
) -> tuple[str, int, int]:
    """Store each (source, file) and a streamed manifest of them (see the module's doc);
    returns (manifest hash, presets, catalog wavetables). Nothing is read with vita here."""
    from concurrent.futures import ThreadPoolExecutor

    wavetables = [store.put(e["data"]) for e in catalog]

    def put(f: SourceFile) -> str:
        # latin-1 maps every byte to one character: any file, even one that is not UTF-8
        # (a malformed_json rejection later), comes back byte for byte.
        return store.put({"latin1": f.data.decode("latin-1")})

    # zlib lets go of the GIL while it compresses: a thread per core stores in parallel.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        hashes = list(pool.map(put, [f for _, f in files]))
    manifest = {
        "files": [
            [h, f.origin, f.stem, f.licence, source]
            for h, (source, f) in zip(hashes, files, strict=True)
        ],
        "version": list(version),
        "wavetables": wavetables,
        "catalog": len(catalog),
        "skipped": [list(s) for s in skipped],
    }
    return store.put(manifest), len(files), len(catalog)


def library_for(spec_library: str | None, data_dir: str | Path) -> Library | None:
    """The library a spec names, from the data folder's store (None for a synthetic run)."""
    if spec_library is None:
        return None
    return Library(Store(data_dir), spec_library)
