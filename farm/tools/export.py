"""A dataset as files other tools read: one WAV per row and a JSONL file of labels here;
a Hugging Face ``datasets`` folder (:mod:`farm.tools.hf`) and WebDataset tar shards
(:mod:`farm.tools.wds`) beside.

Every export streams blocks of rows (memory flat in the file's size) into a temporary
folder that is renamed at the end (:func:`staged`), so an interrupted export leaves
nothing under the name asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from farm.errors import OutputExistsError, OutputPathError
from farm.params.normalize import to_raw
from farm.paths import temp_name
from farm.storage.reader import FarmReader
from farm.tools.rerender import write_wav

#: Rows read at once.
BLOCK = 64


@contextmanager
def staged(out: Path, *, force: bool) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` when the block ends without
    an error (and is removed when it does not).

    Raises:
        OutputExistsError: ``out`` exists and ``force`` is False.
        OutputPathError: ``out``'s parent folder does not exist.
    """
    if out.exists() and not force:
        raise OutputExistsError(f"output {out} exists (use --force to replace it)")
    if not out.parent.is_dir():
        raise OutputPathError(f"output folder {out.parent} does not exist")
    tmp = temp_name(out)
    try:
        tmp.mkdir()
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def blocks(
    r: FarmReader,
    rows: np.ndarray | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The file's rows (or ``rows``, increasing), :data:`BLOCK` at a time: (their indices,
    :meth:`FarmReader.get_batch` of them)."""
    chosen = np.arange(len(r)) if rows is None else np.asarray(rows, dtype=np.int64)
    for start in range(0, len(chosen), BLOCK):
        idx = chosen[start : start + BLOCK]
        yield idx, r.get_batch(idx)
        if on_progress is not None:
            on_progress(start + len(idx), len(chosen))


def export_wav(
    dataset: str | os.PathLike[str],
    out: Path,
    *,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write ``out/rows/NNNNNNN.wav`` (32-bit float, the stored audio) for every row and
    ``out/labels.jsonl``: per row its file, key, note, velocity, note length, split, preset,
    and its parameters by name (normalized, raw, and categoricals as option labels).

    Args:
        dataset: the ``.h5`` file.
        out: the folder to make.
        force: replace an existing ``out``.
        on_progress: called with (rows written, rows).

    Returns:
        The number of rows written.

    Raises:
        OutputExistsError: ``out`` exists and ``force`` is False.
        OutputPathError: ``out``'s parent folder does not exist.
        DatasetError: the dataset cannot be read.
    """
    with FarmReader(dataset) as r, staged(out, force=force) as tmp:
        (tmp / "rows").mkdir()
        rate = int(r.file.attrs["sample_rate"])
        with (tmp / "labels.jsonl").open("w") as labels:
            for idx, batch in blocks(r, on_progress=on_progress):
                for k, i in enumerate(idx.tolist()):
                    name = f"rows/{i:07d}.wav"
                    write_wav(tmp / name, batch["audio"][k], rate)
                    labels.write(json.dumps(row_label(r, batch, k, i, name)) + "\n")
        return len(r)


def row_label(
    r: FarmReader, batch: dict[str, np.ndarray], k: int, i: int, file: str | None = None
) -> dict[str, object]:
    """Row ``i`` (item ``k`` of ``batch``) as JSON-ready labels: key, metadata, every
    parameter by name (normalized, raw, option label and index)."""
    meta: dict[str, object] = {
        m: _plain(batch[m][k])
        for m in ("midi_note", "velocity", "note_duration", "split", "preset_hash", "preset_name")
        if m in batch
    }
    # From the batch already read: the reader's raw_values would read the row's audio again.
    values = to_raw(batch["continuous"][k], r.raw_min, r.raw_max, r.integer)
    options = [
        r.options[n][int(j)]
        for n, j in zip(r.categorical_names, batch["categorical"][k], strict=True)
    ]
    return {
        "index": i,
        **({"file": file} if file else {}),
        **meta,
        "continuous": dict(
            zip(r.continuous_names, batch["continuous"][k].astype(float).tolist(), strict=True)
        ),
        "raw": dict(zip(r.continuous_names, values.tolist(), strict=True)),
        "categorical": dict(zip(r.categorical_names, options, strict=True)),
        "categorical_index": dict(
            zip(r.categorical_names, batch["categorical"][k].astype(int).tolist(), strict=True)
        ),
        "source": _plain(batch["source"][k]),
    }


def _plain(v: object) -> object:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
