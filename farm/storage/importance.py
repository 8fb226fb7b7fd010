"""Parameter-importance weights stored in a dataset (``params/importance_*``, written by
``farm compute-weights -o DATASET``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from farm.errors import DatasetError
from farm.storage import schema


def write_importance(path: Path, weights: Mapping[str, Any]) -> None:
    """Store the weights in a dataset of the same tier, in its column order.

    Only two small datasets are written, in place (copying a large dataset to a temporary
    name would cost its whole size); the JSON written before keeps the result if this is
    interrupted.

    Raises:
        DatasetError: the dataset's parameters are not the weights' parameters.
    """
    with h5py.File(path, "a") as f:
        for key, kind in (
            (schema.IMPORTANCE_CONTINUOUS, "continuous"),
            (schema.IMPORTANCE_CATEGORICAL, "categorical"),
        ):
            names = [str(n) for n in f[f"params/{kind}"].attrs["names"]]
            if sorted(names) != sorted(weights[kind]):
                raise DatasetError(f"{path}: its {kind} parameters are not those weighed")
            data = np.array([weights[kind][n] for n in names], dtype=np.float32)
            if key in f:
                del f[key]
            f.create_dataset(key, data=data)
            f[key].attrs["names"] = names
