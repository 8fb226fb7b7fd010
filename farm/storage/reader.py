"""Reading farm datasets: summary, single rows, batches, labels by name."""

from __future__ import annotations

import json
import os
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from farm.errors import DatasetError
from farm.params.normalize import to_raw
from farm.storage import schema


def open_rows(path: str | os.PathLike[str]) -> Any:
    """A plain read-only handle of a dataset already checked (by :class:`FarmReader`), for
    a reader that must open its own handle in each process (an HDF5 handle must not cross
    a fork or be pickled to a DataLoader worker)."""
    return h5py.File(path, "r")


class OpenDatasets:
    """An open file whose datasets are each opened once, then kept (``files[path]``, ``in``
    and ``attrs`` as on the file).

    A read through a freshly opened virtual dataset of a parted file costs about 13 ms at
    20,000 rows (3,454 mappings; HDF5 sets the mappings up and opens the parts again once
    no handle holds them), against 0.1-0.3 ms through a handle kept open. A reader that
    looks its datasets up again for every row pays that for every row and field
    (``python bench/read.py``).
    """

    def __init__(self, f: Any) -> None:
        self.file = f
        self.attrs = f.attrs
        self._open: dict[str, Any] = {}

    def __getitem__(self, path: str) -> Any:
        ds = self._open.get(path)
        if ds is None:
            ds = self._open[path] = self.file[path]
        return ds

    def __contains__(self, path: str) -> bool:
        return path in self._open or path in self.file


class FarmReader:
    """Read-only access to a farm dataset.

    Args:
        path: the ``.h5`` file.

    Raises:
        DatasetError: the file is missing, not HDF5, or fails the schema check.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise DatasetError(f"no such dataset: {self.path}")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise DatasetError(f"{self.path} is not a readable HDF5 file: {e}") from e
        schema.require_valid(self._f)
        self._ds = OpenDatasets(self._f)
        cont, cat = self._f[schema.CONTINUOUS], self._f[schema.CATEGORICAL]
        self.continuous_names = [str(n) for n in cont.attrs["names"]]
        self.categorical_names = [str(n) for n in cat.attrs["names"]]
        self.raw_min = np.asarray(cont.attrs["raw_min"], dtype=np.float64)
        self.raw_max = np.asarray(cont.attrs["raw_max"], dtype=np.float64)
        # Integer-valued columns are rounded when rendered (files before 2.2 lack it).
        self.integer = np.asarray(cont.attrs.get("integer", np.zeros(len(self.raw_min))), bool)
        self.options: dict[str, list[str]] = json.loads(cat.attrs["options"])

    def __len__(self) -> int:
        return int(self._ds[schema.AUDIO].shape[0])

    @property
    def file(self) -> h5py.File:
        """The open h5py file (read-only)."""
        return self._f

    def totals(self) -> dict[str, Any]:
        """Rows, renders and rejections by reason, from the file's attributes alone (no
        per-row column is read: cheap on any size of dataset)."""
        a = self._f.attrs
        return {
            "rows": len(self),
            "renders": int(a.get("renders", 0)),
            "rejections": json.loads(a["rejections"]),
        }

    def info(self) -> dict[str, Any]:
        """A summary: rows, tier, audio layout, notes, rejections, spec and versions."""
        a = self._f.attrs
        audio = self._f[schema.AUDIO]
        notes = self._f[schema.meta("midi_note")][...]
        sources = self._f[schema.meta("source")][...]
        hashes = self._f[schema.meta("preset_hash")][...]
        return {
            "path": self.path,
            "schema_version": str(a["schema_version"]),
            "rows": len(self),
            "presets": len(np.unique(hashes)),
            "tier": int(a["tier"]),
            "continuous": len(self.continuous_names),
            "categorical": len(self.categorical_names),
            "modulation": schema.MODULATION in self._f,
            "sample_rate": int(a["sample_rate"]),
            "audio_shape": list(audio.shape[1:]),
            "audio_dtype": str(audio.dtype),
            "compression": audio.compression or "none",
            "features": {
                k: list(self._f[schema.features(k)].shape[1:]) for k in schema.features_in(self._f)
            },
            "notes": [int(n) for n in a["notes"]],
            "rows_per_note": {
                int(n): int(c) for n, c in zip(*np.unique(notes, return_counts=True), strict=True)
            },
            "sources": {
                s.decode(): int(c)
                for s, c in zip(*np.unique(sources, return_counts=True), strict=True)
            },
            # A (lo, hi) pair when drawn per row (metadata/velocity, note_duration).
            "velocity": np.asarray(a["velocity"]).tolist(),
            "note_duration": np.asarray(a["note_duration"]).tolist(),
            "render_duration": float(a["render_duration"]),
            "seed": int(a["seed"]),
            "rejections": json.loads(a["rejections"]),
            "renders": int(a.get("renders", 0)),
            "registry_fingerprint": str(a["registry_fingerprint"]),
            "versions": json.loads(a["versions"]),
            "run_spec": json.loads(a["run_spec"]),
        }

    def get_sample(self, i: int) -> dict[str, Any]:
        """Row ``i``: audio (float32), labels, note and metadata.

        Raises:
            DatasetError: ``i`` is out of range.
        """
        n = len(self)
        if not -n <= i < n:
            raise DatasetError(f"row {i} is out of range: the file has {n} rows")
        i %= n
        f = self._ds
        out: dict[str, Any] = {
            "index": i,
            "audio": np.asarray(f[schema.AUDIO][i], dtype=np.float32),
            "continuous": f[schema.CONTINUOUS][i],
            "categorical": f[schema.CATEGORICAL][i],
        }
        if schema.MODULATION in f:
            out["modulation"] = f[schema.MODULATION][i]
        for name in (schema.ACTIVE_CONTINUOUS, schema.ACTIVE_CATEGORICAL):
            if name in f:
                out[name.rsplit("/", 1)[-1]] = f[name][i]
        for m in schema.metadata_of(f):
            v = f[schema.meta(m)][i]
            out[m] = v.decode() if isinstance(v, bytes) else v.item()
        return out

    def get_batch(self, indices: Any) -> dict[str, np.ndarray]:
        """Rows at ``indices`` (any order, repeats allowed), stacked per field."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise DatasetError(f"batch indices out of range: the file has {n} rows")
        # h5py fancy indexing needs increasing unique indices; read those, then reorder.
        uniq, inverse = np.unique(idx, return_inverse=True)
        f = self._ds
        names = [schema.AUDIO, schema.CONTINUOUS, schema.CATEGORICAL]
        if schema.MODULATION in f:
            names.append(schema.MODULATION)
        names += [n for n in (schema.ACTIVE_CONTINUOUS, schema.ACTIVE_CATEGORICAL) if n in f]
        names += [schema.features(k) for k in schema.features_in(f)]  # e.g. "logmel"
        out = {}
        for name in names:
            data = f[name][uniq] if uniq.size else np.zeros((0, *f[name].shape[1:]), f[name].dtype)
            out[name.rsplit("/", 1)[-1]] = data[inverse]
        for m in schema.metadata_of(f):
            out[m] = f[schema.meta(m)][uniq][inverse] if uniq.size else f[schema.meta(m)][:0]
        out["audio"] = out.pop("waveforms").astype(np.float32, copy=False)
        return out

    def raw_values(self, i: int) -> dict[str, float | str]:
        """Row ``i``'s parameters by name as raw vita values (categoricals as option label)."""
        row = self.get_sample(i)
        raw = to_raw(row["continuous"], self.raw_min, self.raw_max, self.integer)
        out: dict[str, float | str] = dict(zip(self.continuous_names, raw.tolist(), strict=True))
        for name, k in zip(self.categorical_names, row["categorical"].tolist(), strict=True):
            out[name] = self.options[name][k]
        return out

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> FarmReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
