"""Linear normalization between labels and raw vita values, in both directions.

Never vita's ``set_normalized``: for its 30 exponential-scale controls it covers half the
range, reversed, and overshoots the maximum for 13 of them. Here ``raw = min + x*(max-min)``
whatever the control's display scale, and every value is clamped, because vita's ``set``
does not clamp and an out-of-range value segfaults the render.
"""

from __future__ import annotations

import numpy as np

from farm.params.tiers import TierParams


def to_raw(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, integer: np.ndarray) -> np.ndarray:
    """Raw values for normalized continuous labels (last axis = columns), clamped and the
    integer columns rounded: the one place the conversion is written (a tier's columns, or
    a file's stored ``raw_min``/``raw_max``/``integer``).

    Computed in float64 from the stored float32 label, so that a re-render of a stored row
    sets exactly what the original render set.
    """
    x64 = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    raw = lo + x64 * (hi - lo)
    raw = np.where(np.asarray(integer, dtype=bool), np.rint(raw), raw)
    return np.asarray(np.clip(raw, lo, hi), dtype=np.float64)


def to_unit(raw: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Normalized float32 values in [0, 1] for raw continuous values (clamped)."""
    span = hi - lo
    x = (np.asarray(raw, dtype=np.float64) - lo) / np.where(span > 0, span, 1.0)
    return np.asarray(np.clip(x, 0.0, 1.0), dtype=np.float32)


def continuous_to_raw(tp: TierParams, x: np.ndarray) -> np.ndarray:
    """Raw values for a tier's normalized continuous labels (:func:`to_raw`)."""
    return to_raw(x, tp.raw_min, tp.raw_max, tp.integer)


def continuous_from_raw(tp: TierParams, raw: np.ndarray) -> np.ndarray:
    """A tier's normalized float32 labels for raw continuous values (:func:`to_unit`)."""
    return to_unit(raw, tp.raw_min, tp.raw_max)


def categorical_to_raw(tp: TierParams, idx: np.ndarray) -> np.ndarray:
    """Raw values for categorical option indices (clamped to the valid options)."""
    i = np.clip(np.asarray(idx, dtype=np.int64), 0, tp.n_options - 1)
    return np.asarray(tp.cat_min + i, dtype=np.float64)


def categorical_from_raw(tp: TierParams, raw: np.ndarray) -> np.ndarray:
    """Option indices (int32) for raw categorical values, rounded and clamped."""
    i = np.rint(np.asarray(raw, dtype=np.float64) - tp.cat_min).astype(np.int64)
    return np.asarray(np.clip(i, 0, tp.n_options - 1), dtype=np.int32)
