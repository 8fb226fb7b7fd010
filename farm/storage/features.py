"""Features in a dataset: the per-row features the workers computed
(:mod:`farm.render.features`), their per-row band moments, and the per-band statistics over
the train split that the final file carries as attributes.

Per row, the sum and sum of squares of every band over channels and frames are stored
beside the features, so the mean and standard deviation of any set of rows are exact and
cost one small column, not a second pass over the features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from farm.config import RunSpec
from farm.storage import schema

_MOMENT_CHUNK = 256


def create_features(f: Any, spec: RunSpec) -> None:
    """Create the (empty, growable) features and moments datasets ``spec`` asks for."""
    fs, r = spec.features, spec.render
    assert fs is not None
    shape = (r.channels, fs.n_mels, fs.frames(r.samples))
    ds = f.create_dataset(
        schema.features(fs.kind),
        (0, *shape),
        maxshape=(None, *shape),
        chunks=(1, *shape),
        dtype="f4",  # dB values barely compress; a row reads as one chunk
    )
    ds.attrs.update(
        {
            "kind": fs.kind,
            "n_mels": fs.n_mels,
            "n_fft": fs.n_fft,
            "hop": fs.hop,
            "sample_rate": r.sample_rate,
            "unit": "dB (10*log10 of mel power, floored at -100)",
            "mel_scale": "slaney, area-normalized filters, 0 Hz to sample_rate/2",
            "axes": "row, channel, mel band, frame",
        }
    )
    f.create_dataset(
        schema.moments(fs.kind),
        (0, 2, fs.n_mels),
        maxshape=(None, 2, fs.n_mels),
        chunks=(_MOMENT_CHUNK, 2, fs.n_mels),
        dtype="f8",
    )


def band_moments(features: np.ndarray) -> np.ndarray:
    """(2, bands) float64: each band's sum and sum of squares over channels and frames of
    one row's (channels, bands, frames) features."""
    x = np.asarray(features, dtype=np.float64)
    return np.stack([x.sum(axis=(0, 2)), (x * x).sum(axis=(0, 2))])


def band_stats(total: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation (float32) from summed :func:`band_moments`
    ((2, bands)) covering ``count`` values per band; NaN when ``count`` is 0."""
    t = np.asarray(total, dtype=np.float64)
    if count == 0:
        nan = np.full(t.shape[-1], np.nan, dtype=np.float32)
        return nan, nan.copy()
    mean = t[0] / count
    var = np.maximum(t[1] / count - mean * mean, 0.0)  # rounding can dip below 0
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def write_feature_stats(f: Any, kind: str, split: str = "train") -> None:
    """Store per-band ``mean`` and ``std`` of features ``kind`` over the rows of ``split``
    as attributes of the features (from the per-row moments: one small column, read in
    blocks). NaN when the split has no rows."""
    ds, mom = f[schema.features(kind)], f[schema.moments(kind)]
    sides = f[schema.meta("split")]
    n = ds.shape[0]
    total = np.zeros((2, ds.shape[2]), dtype=np.float64)
    rows = 0
    for lo in range(0, n, 16 * _MOMENT_CHUNK):
        hi = min(lo + 16 * _MOMENT_CHUNK, n)
        chosen = sides[lo:hi] == split.encode()
        total += mom[lo:hi][chosen].sum(axis=0)
        rows += int(chosen.sum())
    per_row = ds.shape[1] * ds.shape[3]  # channels x frames per band
    mean, std = band_stats(total, per_row * rows)
    ds.attrs.update({"mean": mean, "std": std, "stats_split": split, "stats_rows": rows})
