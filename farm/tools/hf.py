"""A dataset for Hugging Face ``datasets``: ``farm export --format hf`` writes a folder that
``datasets.load_from_disk`` opens as a ``DatasetDict`` of the file's stored splits, and
:func:`hdf5_features` lets ``load_dataset("hdf5", ...)`` read the ``.h5`` file itself.

A plain ``load_dataset("hdf5", data_files=FILE)`` cannot read a farm file: its loader takes
every dataset of the file as a column of one table, and a farm file also holds tables that
are not per row (``presets/*``, ``wavetables/*`` of one row per preset or wavetable, the
importance weights of one value per parameter). Given ``features=hdf5_features(FILE)``, the
loader reads only the per-row datasets, nested as the file nests them (``audio``, ``params``,
``metadata``, ``features``), and the file loads as it is (tested with the real package).

``datasets`` is an optional dependency: ``pip install 'farm[export]'``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import DatasetError, UsageError
from farm.storage import schema
from farm.storage.reader import FarmReader
from farm.storage.splits import SIDES
from farm.tools.export import BLOCK, blocks, staged

#: Metadata that becomes a column of the export (the split is the DatasetDict's key; the
#: checksum and the row key's parts stay in the .h5 file).
_META = (
    "midi_note",
    "velocity",
    "note_duration",
    "source",
    "preset_hash",
    "preset_name",
    "rms",
    "peak",
    "loudness",
    "dc",
)


def _hf() -> Any:
    try:
        import datasets
    except ImportError:
        raise UsageError(
            "the hf format needs Hugging Face datasets: pip install 'farm[export]'"
        ) from None
    return datasets


def _value(hf: Any, dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "S":
        return hf.Value("string")
    return hf.Value("bool" if dtype == np.bool_ else str(dtype))


def _array(hf: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    """The ``datasets`` feature of one row of ``shape``."""
    if not shape:
        return _value(hf, dtype)
    if len(shape) == 1:
        return hf.List(_value(hf, dtype), length=shape[0])
    kinds = {2: hf.Array2D, 3: hf.Array3D, 4: hf.Array4D, 5: hf.Array5D}
    return kinds[len(shape)](shape=shape, dtype=str(dtype))


def hdf5_features(path: str | os.PathLike[str]) -> Any:
    """The ``datasets.Features`` that make ``load_dataset("hdf5", data_files=path,
    features=...)`` read a farm file: every per-row dataset (checksum aside), nested by
    group.

    Raises:
        DatasetError: the file cannot be read.
        UsageError: ``datasets`` is not installed.
    """
    hf = _hf()
    tree: dict[str, dict[str, Any]] = {}
    with FarmReader(path) as r:
        f = r.file
        names = schema.row_datasets(schema.MODULATION in f, schema.features_in(f))
        for name in names:
            if name in f and name != schema.CHECKSUM:
                group, leaf = name.split("/", 1)
                ds = f[name]
                tree.setdefault(group, {})[leaf] = _array(hf, ds.shape[1:], ds.dtype)
    return hf.Features(tree)


def _columns(hf: Any, r: FarmReader) -> dict[str, Any]:
    """The export's flat columns: the audio, the label vectors, every parameter by name
    (categoricals as ``ClassLabel`` of their option names), the masks, features, metadata."""
    f = r.file
    audio = f[schema.AUDIO]
    cols: dict[str, Any] = {
        "index": hf.Value("int64"),
        "audio": _array(hf, audio.shape[1:], np.dtype(np.float32)),
        "continuous": hf.List(hf.Value("float32"), length=len(r.continuous_names)),
        "categorical": hf.List(hf.Value("int64"), length=len(r.categorical_names)),
    }
    for name in (schema.ACTIVE_CONTINUOUS, schema.ACTIVE_CATEGORICAL, schema.MODULATION):
        if name in f:
            cols[name.rsplit("/", 1)[-1]] = _array(hf, f[name].shape[1:], f[name].dtype)
    for kind in schema.features_in(f):
        cols[kind] = _array(hf, f[schema.features(kind)].shape[1:], np.dtype(np.float32))
    for m in _META:
        if schema.meta(m) in f:
            cols[m] = _value(hf, f[schema.meta(m)].dtype)
    for name in r.continuous_names:
        _add(cols, name, hf.Value("float32"))
    for name in r.categorical_names:
        options = [str(o) for o in r.options[name]]
        unique = len(set(options)) == len(options)
        _add(cols, name, hf.ClassLabel(names=options) if unique else hf.Value("int64"))
    return cols


def _add(cols: dict[str, Any], name: str, feature: Any) -> None:
    if name in cols:  # a parameter named like a column: never silently overwritten
        raise DatasetError(f"parameter {name!r} collides with the export column of that name")
    cols[name] = feature


def _rows(
    path: str, rows: np.ndarray, report: Callable[[int, int], None]
) -> Iterator[dict[str, Any]]:
    """One split's rows as export records (the reader opened here: a generator that
    ``datasets`` may run elsewhere must not carry an open HDF5 handle)."""
    with FarmReader(path) as r:
        for idx, batch in blocks(r, rows, on_progress=report):
            for k, i in enumerate(idx.tolist()):
                rec: dict[str, Any] = {"index": i, "audio": batch["audio"][k]}
                cont, cat = batch["continuous"][k], batch["categorical"][k].astype(np.int64)
                rec["continuous"], rec["categorical"] = cont, cat
                for key in ("active_continuous", "active_categorical", "modulation_t3"):
                    if key in batch:
                        rec[key] = batch[key][k]
                for kind in schema.FEATURE_KINDS:
                    if kind in batch:
                        rec[kind] = batch[kind][k]
                for m in _META:
                    if m in batch:
                        v = batch[m][k]
                        rec[m] = v.decode() if isinstance(v, bytes) else v.item()
                rec.update(zip(r.continuous_names, cont.tolist(), strict=True))
                rec.update(zip(r.categorical_names, cat.tolist(), strict=True))
                yield rec


def export_hf(
    dataset: str | os.PathLike[str],
    out: Path,
    *,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write ``out`` as a ``datasets.DatasetDict`` saved with ``save_to_disk``: one
    ``Dataset`` per stored split (train, validation, test; every row as ``train`` for a
    file without splits), rows in file order.

    Columns: ``index`` (the .h5 row), ``audio`` (channels, T) float32, ``continuous`` and
    ``categorical`` (the label vectors), ``active_*``, the tier-3 matrix, features,
    metadata, and every parameter as its own column by name (categoricals as
    ``ClassLabel``).

    Returns:
        Rows per split.

    Raises:
        OutputExistsError, OutputPathError: see :func:`farm.tools.export.staged`.
        DatasetError: the dataset cannot be read.
        UsageError: ``datasets`` is not installed.
    """
    hf = _hf()
    path = os.fspath(Path(dataset).resolve())
    with FarmReader(path) as r:
        features = hf.Features(_columns(hf, r))
        n = len(r)
        split = schema.meta("split")
        sides = r.file[split][...] if split in r.file else np.full(n, b"train")
    counts = {side: np.flatnonzero(sides == side.encode()) for side in SIDES}
    counts = {side: rows for side, rows in counts.items() if rows.size}
    quiet = hf.is_progress_bar_enabled()
    if quiet:
        hf.disable_progress_bars()  # farm's own progress line says how far it is
    try:
        return _write(hf, path, out, features, counts, n, force, on_progress)
    finally:
        if quiet:
            hf.enable_progress_bars()


def _write(
    hf: Any,
    path: str,
    out: Path,
    features: Any,
    counts: dict[str, np.ndarray],
    n: int,
    force: bool,
    on_progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    done = 0

    def tick(k: int, _split_rows: int) -> None:
        if on_progress is not None:
            on_progress(done + k, n)

    with staged(out, force=force) as tmp:
        cache = tmp / ".cache"
        parts = {}
        for side, rows in counts.items():
            parts[side] = hf.Dataset.from_generator(
                _rows,
                features=features,
                gen_kwargs={"path": path, "rows": rows, "report": tick},
                cache_dir=str(cache),
                split=side,
                writer_batch_size=BLOCK,
                # The cache is this export's own: no earlier result can be reused.
                fingerprint=f"farm-export-{side}",
            )
            done += rows.size
        final = tmp / "data"
        hf.DatasetDict(parts).save_to_disk(str(final))
        del parts  # the cache's memory maps, before the cache goes
        shutil.rmtree(cache)
        for item in final.iterdir():
            os.replace(item, tmp / item.name)
        final.rmdir()
    return {side: int(rows.size) for side, rows in counts.items()}
