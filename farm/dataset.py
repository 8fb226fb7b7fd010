"""A map-style dataset over a farm file, for training loops (PyTorch's DataLoader or any
other).

The HDF5 file is opened lazily, once per process: an h5py handle must not cross a fork or
be pickled, so each DataLoader worker opens its own on its first item. The train /
validation / test split is the one stored in the file (by preset: every note of a preset
on the same side, so validation never hears a preset it was trained on; from a keyed hash
of the preset, so it is the same on every machine and stable when the file grows).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from farm.errors import DatasetError
from farm.params.normalize import to_raw
from farm.storage import schema
from farm.storage.reader import FarmReader, OpenDatasets, open_rows
from farm.storage.splits import SIDES, position

#: Short names of the array fields; metadata fields go by their own name (``midi_note``).
ARRAYS: dict[str, str] = {
    "audio": schema.AUDIO,
    "continuous": schema.CONTINUOUS,
    "categorical": schema.CATEGORICAL,
    "modulation": schema.MODULATION,
    "wavetable": schema.WAVETABLE,
    "active_continuous": schema.ACTIVE_CONTINUOUS,
    "active_categorical": schema.ACTIVE_CATEGORICAL,
    "logmel": schema.features("logmel"),
}
DEFAULT_FIELDS = ("audio", "continuous", "categorical")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def in_validation(preset_hashes: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which rows fall on the validation side of a two-way split made here: a preset's
    keyed hash (with ``seed``) read as a number in [0, 1) below ``fraction``."""
    presets, row_preset = np.unique(preset_hashes, return_inverse=True)
    side = np.array([position(h, seed) < fraction for h in presets], dtype=bool)
    return side[row_preset.reshape(-1)]


class FarmDataset:
    """Rows of a farm file as dicts of arrays: ``dataset[i] -> {"audio": ..., ...}``;
    ``dataset[2:10]`` or ``dataset[[4, 1, 7]]`` give a batch (each field stacked, strings
    as a list).

    Args:
        path: the ``.h5`` file.
        fields: what each item holds: ``audio`` (channels, T), ``logmel`` (channels,
            n_mels, frames: a file made with ``--features logmel``; its ``feature_stats``
            normalize it), ``continuous`` (C,) in [0, 1],
            ``categorical`` (K,) option indices, ``modulation`` (tier 3), ``wavetable``
            (3,), ``active_continuous`` (C,) / ``active_categorical`` (K,) bool masks of
            the parameters that can change the row's sound (schema 2.7.0), or a metadata
            name (``midi_note``, ``preset_hash``, ``rms``, ...; strings
            come back as ``str``).
        split: ``"train"``, ``"validation"``, ``"test"`` or None (every row). Files of
            schema 2.6.0 and later store their split (``metadata/split``, by preset, the
            run's fractions and seed): it is used as it is.
        validation_fraction: instead of the stored split, a two-way split made here with
            this share of presets on the validation side (files before 2.6.0: 0.1).
        seed: the key of a split made here; the same seed gives the same split anywhere.
        as_torch: numeric fields as torch tensors (default: when torch is installed).
            Categorical option indices come back as int64 (what cross-entropy wants).

    Attributes:
        continuous_names: the label's continuous columns, in order.
        categorical_names: the label's categorical columns, in order.
        options: categorical name -> its option labels (index = stored value).
        feature_stats: features kind -> (mean, std) per band over the train split, for
            ``(x - mean[:, None]) / std[:, None]``.

    Raises:
        DatasetError: a missing or invalid file, an unknown field, a bad split.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        split: Literal["train", "validation", "test"] | None = None,
        validation_fraction: float | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if split is not None and split not in SIDES:
            raise DatasetError(
                f"split must be {', '.join(map(repr, SIDES))} or None, not {split!r}"
            )
        if validation_fraction is not None and not 0.0 <= validation_fraction <= 1.0:
            raise DatasetError(f"validation_fraction {validation_fraction} is not in [0, 1]")
        if isinstance(fields, str):
            fields = (fields,)
        if as_torch and _torch() is None:
            raise DatasetError("as_torch=True needs torch: pip install torch")
        self.as_torch = _torch() is not None if as_torch is None else as_torch
        # FarmReader checks the file (exists, HDF5, farm schema) with one-line errors.
        with FarmReader(self.path) as reader:
            f = reader.file
            self.sources = {name: self._source(f, name) for name in fields}
            hashes = f[schema.meta("preset_hash")][...]
            stored = f[schema.meta("split")][...] if schema.meta("split") in f else None
            self.continuous_names = list(reader.continuous_names)
            self.categorical_names = list(reader.categorical_names)
            self.options = dict(reader.options)
            self._raw = (reader.raw_min, reader.raw_max, reader.integer)
            self.feature_stats = {
                kind: (
                    np.asarray(f[schema.features(kind)].attrs["mean"]),
                    np.asarray(f[schema.features(kind)].attrs["std"]),
                )
                for kind in schema.features_in(f)
                if "mean" in f[schema.features(kind)].attrs
            }
        self.fields = tuple(fields)
        rows = np.arange(len(hashes))
        own = validation_fraction is not None or seed is not None or stored is None
        if split is not None and own:
            # A two-way split made here (files before 2.6.0, or asked for explicitly).
            if split == "test":
                raise DatasetError(
                    "a split made here (validation_fraction/seed, or a file before schema "
                    "2.6.0) has no test side; use the file's stored split"
                )
            frac = 0.1 if validation_fraction is None else validation_fraction
            val = in_validation(hashes, frac, 0 if seed is None else seed)
            rows = rows[val] if split == "validation" else rows[~val]
        elif split is not None:
            assert stored is not None
            rows = rows[stored == split.encode()]
        self.rows = rows
        self._file: Any = None
        self._pid = -1

    def _source(self, f: Any, name: str) -> str:
        path = ARRAYS.get(name, schema.meta(name))
        if path not in f:
            known = [k for k, v in ARRAYS.items() if v in f] + sorted(f["metadata"].keys())
            raise DatasetError(f"no field {name!r} in {self.path}; fields: {', '.join(known)}")
        return path

    @property
    def file(self) -> Any:
        """This process's handle, opened on first use (and again after a fork)."""
        if self._file is None or self._pid != os.getpid():
            # Each dataset opened once per handle (see OpenDatasets: a parted file's are
            # costly to open).
            self._file = OpenDatasets(open_rows(self.path))
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        if isinstance(index, slice | list | tuple | np.ndarray):
            return self.batch(np.arange(len(self.rows))[index])
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"row {index} of {len(self.rows)}")
        row = int(self.rows[index])
        f = self.file
        return {name: self._value(name, f[path][row]) for name, path in self.sources.items()}

    def batch(self, items: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Items ``items`` (any order, repeats allowed) as one batch: each numeric field
        stacked along a new first axis, each string field a list."""
        idx = np.asarray(items, dtype=np.int64).reshape(-1)
        n = len(self.rows)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"batch items out of range: {len(self.rows)} rows")
        rows = self.rows[idx % n] if n else idx
        # HDF5 reads increasing, unique rows; then they are put back in the asked order.
        uniq, inverse = np.unique(rows, return_inverse=True)
        f = self.file
        out: dict[str, Any] = {}
        for name, path in self.sources.items():
            data = f[path][uniq] if uniq.size else f[path][:0]
            data = data[inverse.reshape(-1)]
            if data.dtype.kind == "S":
                out[name] = [v.decode() for v in data]
            else:
                out[name] = self._value(name, data)
        return out

    def raw(self, index: int) -> dict[str, float | str]:
        """Item ``index``'s parameters by name as vita's raw values (integer controls
        rounded as rendered), categoricals as their option label."""
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"row {index} of {len(self.rows)}")
        row = int(self.rows[index])
        f = self.file
        lo, hi, integer = self._raw
        values = to_raw(f[schema.CONTINUOUS][row], lo, hi, integer)
        out: dict[str, float | str] = dict(zip(self.continuous_names, values.tolist(), strict=True))
        for name, k in zip(self.categorical_names, f[schema.CATEGORICAL][row], strict=True):
            out[name] = self.options[name][int(k)]
        return out

    def _value(self, name: str, value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode()
        array = np.asarray(value)
        if name == "categorical":
            array = array.astype(np.int64)
        return _torch().from_numpy(array) if self.as_torch else array

    def file_row(self, index: int) -> int:
        """The file's row index of item ``index`` (for ``farm inspect -s``)."""
        return int(self.rows[index])

    def close(self) -> None:
        """Close this process's handle (it reopens on the next item)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader with the spawn start method pickles the dataset: no open handle.
        state = dict(self.__dict__)
        state["_file"] = None
        state["_pid"] = -1
        return state


def _iterable_base() -> type:
    torch = _torch()
    base: type = torch.utils.data.IterableDataset if torch is not None else object
    return base


class FarmIterableDataset(_iterable_base()):  # type: ignore[misc]
    """The rows of a farm file in file order, read ``chunk`` rows at a time: streaming a
    large file with memory flat in its size. A PyTorch ``IterableDataset`` when torch is
    installed; with ``DataLoader(num_workers=K)`` each worker streams every K-th chunk, so
    every row comes once.

    Args:
        path, fields, split, validation_fraction, seed, as_torch: as :class:`FarmDataset`.
        chunk: rows read at once.

    Raises:
        DatasetError: as :class:`FarmDataset`; ``chunk`` below 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        split: Literal["train", "validation", "test"] | None = None,
        validation_fraction: float | None = None,
        seed: int | None = None,
        as_torch: bool | None = None,
        chunk: int = 256,
    ) -> None:
        if chunk < 1:
            raise DatasetError(f"chunk must be at least 1 row, not {chunk}")
        self.rows = FarmDataset(
            path,
            fields,
            split=split,
            validation_fraction=validation_fraction,
            seed=seed,
            as_torch=as_torch,
        )
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        starts = range(0, len(self.rows), self.chunk)
        torch = _torch()
        info = torch.utils.data.get_worker_info() if torch is not None else None
        if info is not None:
            starts = starts[info.id :: info.num_workers]
        for start in starts:
            stop = min(start + self.chunk, len(self.rows))
            batch = self.rows.batch(np.arange(start, stop))
            for i in range(stop - start):
                yield {name: values[i] for name, values in batch.items()}
