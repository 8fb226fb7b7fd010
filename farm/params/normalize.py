"""Linear normalization between labels and raw vita values, in both directions.

Never vita's ``set_normalized``: for its 30 exponential-scale controls it covers half the
range, reversed, and overshoots the maximum for 13 of them. Here ``raw = min + x*(max-min)``
whatever the control's display scale, and every value is clamped, because vita's ``set``
does not clamp and an out-of-range value segfaults the render.
"""

from __future__ import annotations

import numpy as np

from farm.params.tiers import TierParams


def continuous_to_raw(tp: TierParams, x: np.ndarray) -> np.ndarray:
    """Raw values for normalized continuous labels (last axis = columns), clamped and rounded.

    Computed in float64 from the stored float32 label, so that a re-render of a stored row
    sets exactly what the original render set.
    """
    x64 = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    raw = tp.raw_min + x64 * (tp.raw_max - tp.raw_min)
    raw = np.where(tp.integer, np.rint(raw), raw)
    return np.asarray(np.clip(raw, tp.raw_min, tp.raw_max), dtype=np.float64)


def continuous_from_raw(tp: TierParams, raw: np.ndarray) -> np.ndarray:
    """Normalized float32 labels in [0, 1] for raw continuous values (clamped)."""
    span = tp.raw_max - tp.raw_min
    x = (np.asarray(raw, dtype=np.float64) - tp.raw_min) / np.where(span > 0, span, 1.0)
    return np.asarray(np.clip(x, 0.0, 1.0), dtype=np.float32)


def categorical_to_raw(tp: TierParams, idx: np.ndarray) -> np.ndarray:
    """Raw values for categorical option indices (clamped to the valid options)."""
    i = np.clip(np.asarray(idx, dtype=np.int64), 0, tp.n_options - 1)
    return np.asarray(tp.cat_min + i, dtype=np.float64)


def categorical_from_raw(tp: TierParams, raw: np.ndarray) -> np.ndarray:
    """Option indices (int32) for raw categorical values, rounded and clamped."""
    i = np.rint(np.asarray(raw, dtype=np.float64) - tp.cat_min).astype(np.int64)
    return np.asarray(np.clip(i, 0, tp.n_options - 1), dtype=np.int32)
