"""A dataset as WebDataset tar shards (``farm export --format webdataset``): per stored split,
``SPLIT-000000.tar``, ``SPLIT-000001.tar``, ... of at most :data:`SHARD_ROWS` rows each, a
row as three members with one key: ``KEY.audio.npy`` (the stored audio, float32 (channels,
T)), ``KEY.json`` (the row's labels as ``farm export --format wav`` writes them) and, for a
file made with features, ``KEY.logmel.npy``. ``webdataset.WebDataset(urls).decode()``
gives numpy arrays and dicts back, no torch needed.

``webdataset`` is an optional dependency: ``pip install 'farm[export]'``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import UsageError
from farm.storage import schema
from farm.storage.reader import FarmReader
from farm.storage.splits import SIDES
from farm.tools.export import blocks, row_label, staged

#: Rows per tar shard: about 0.7 GB of 2 s stereo rows, inside WebDataset's advice of
#: shards from 100 MB to a few GB.
SHARD_ROWS = 1000


def _wds() -> Any:
    try:
        import webdataset
    except ImportError:
        raise UsageError(
            "the webdataset format needs webdataset: pip install 'farm[export]'"
        ) from None
    return webdataset


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def export_webdataset(
    dataset: str | os.PathLike[str],
    out: Path,
    *,
    force: bool = False,
    shard_rows: int = SHARD_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write ``out/SPLIT-NNNNNN.tar`` shards (see the module) in file order.

    Returns:
        Rows per split.

    Raises:
        OutputExistsError, OutputPathError: see :func:`farm.tools.export.staged`.
        DatasetError: the dataset cannot be read.
        UsageError: ``webdataset`` is not installed.
    """
    wds = _wds()
    counts: dict[str, int] = {}
    with FarmReader(dataset) as r, staged(out, force=force) as tmp:
        f = r.file
        n = len(r)
        split = schema.meta("split")
        sides = f[split][...] if split in f else np.full(n, b"train")
        kinds = schema.features_in(f)
        done = 0
        for side in SIDES:
            rows = np.flatnonzero(sides == side.encode())
            if not rows.size:
                continue
            counts[side] = int(rows.size)
            pattern = str(tmp / f"{side}-%06d.tar")
            # Bytes are encoded here (``.npy``, JSON): the writer adds them as they are.
            with wds.ShardWriter(pattern, maxcount=shard_rows, verbose=0, encoder=False) as sink:
                for idx, batch in blocks(r, rows):
                    for k, i in enumerate(idx.tolist()):
                        sample = {
                            "__key__": f"{i:07d}",
                            "audio.npy": _npy(batch["audio"][k]),
                            "json": json.dumps(row_label(r, batch, k, i)).encode(),
                        }
                        for kind in kinds:
                            sample[f"{kind}.npy"] = _npy(batch[kind][k])
                        sink.write(sample)
                    done += len(idx)
                    if on_progress is not None:
                        on_progress(done, n)
    return counts
