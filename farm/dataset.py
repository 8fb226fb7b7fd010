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
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from farm.errors import DatasetError
from farm.storage import schema
from farm.storage.reader import FarmReader, open_rows
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
    """Rows of a farm file as dicts of arrays: ``dataset[i] -> {"audio": ..., ...}``.

    Args:
        path: the ``.h5`` file.
        fields: what each item holds: ``audio`` (2, T), ``continuous`` (C,) in [0, 1],
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
            self._file = open_rows(self.path)
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"row {index} of {len(self.rows)}")
        row = int(self.rows[index])
        f = self.file
        item: dict[str, Any] = {}
        for name, path in self.sources.items():
            value = f[path][row]
            if isinstance(value, bytes):
                item[name] = value.decode()
            elif self.as_torch:
                item[name] = _torch().from_numpy(np.asarray(value))
            else:
                item[name] = np.asarray(value)
        return item

    def file_row(self, index: int) -> int:
        """The file's row index of item ``index`` (for ``farm inspect -s``)."""
        return int(self.rows[index])

    def close(self) -> None:
        """Close this process's handle (it reopens on the next item)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader with the spawn start method pickles the dataset: no open handle.
        state = dict(self.__dict__)
        state["_file"] = None
        state["_pid"] = -1
        return state
