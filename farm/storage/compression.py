"""Audio compression options for HDF5 datasets.

``none``, ``gzip`` and ``lzf`` need only plain h5py to read; ``blosc2-zstd`` and
``bitshuffle-lz4`` are much faster but need the ``hdf5plugin`` package (``farm[plugins]``)
to write and to read. See the README for ratios and costs measured on real renders.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from farm.config import CompressionSettings
from farm.errors import UsageError


def audio_dtype(settings: CompressionSettings) -> np.dtype[Any]:
    """The stored dtype of audio samples."""
    return np.dtype(np.float16 if settings.audio_dtype == "float16" else np.float32)


def dataset_options(settings: CompressionSettings) -> dict[str, Any]:
    """Keyword arguments for ``h5py.Group.create_dataset`` implementing ``settings``.

    Raises:
        UsageError: a plugin codec was asked for and ``hdf5plugin`` is not installed.
    """
    codec = settings.codec
    if codec == "none":
        return {}
    if codec == "gzip":
        return {
            "compression": "gzip",
            "compression_opts": settings.level,
            "shuffle": settings.shuffle,
        }
    if codec == "lzf":
        return {"compression": "lzf", "shuffle": settings.shuffle}
    try:
        import hdf5plugin
    except ImportError as e:
        raise UsageError(f"codec {codec} needs hdf5plugin: pip install 'farm[plugins]'") from e
    if codec == "blosc2-zstd":
        shuffle = hdf5plugin.Blosc2.SHUFFLE if settings.shuffle else hdf5plugin.Blosc2.NOSHUFFLE
        return dict(hdf5plugin.Blosc2(cname="zstd", clevel=1, filters=shuffle))
    return dict(hdf5plugin.Bitshuffle(cname="lz4"))
