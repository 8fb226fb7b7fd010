"""Row validation and rejection reasons."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from farm.config import ValidationSettings


class Reason(StrEnum):
    """Why a rendered note is not a row. Counted per run and stored in the dataset."""

    SILENT = "SILENT"
    """RMS below ``silence_rms``."""
    CLIPPING = "CLIPPING"
    """Absolute peak above ``clip_peak``."""
    NAN = "NAN"
    """Non-finite samples."""
    SHAPE = "SHAPE"
    """Audio of the wrong shape."""
    CRASH = "CRASH"
    """vita killed the render process (a segfault)."""
    TIMEOUT = "TIMEOUT"
    """The render passed its time limit and was killed."""
    INVALID = "INVALID"
    """The preset could not be applied (unknown modulation name, refused JSON)."""
    DUPLICATE = "DUPLICATE"
    """A preset with the same label hash was already rendered in the run."""


def validate(
    audio: np.ndarray, settings: ValidationSettings, shape: tuple[int, int]
) -> tuple[Reason | None, float, float]:
    """Check one rendered note.

    Args:
        audio: the render.
        settings: thresholds.
        shape: the expected (2, T).

    Returns:
        (reason or None when accepted, rms, peak). rms and peak are NaN when not finite.
    """
    if audio.shape != shape:
        return Reason.SHAPE, float("nan"), float("nan")
    if audio.size == 0:
        return Reason.SILENT, 0.0, 0.0
    # Every row of a run passes here: no float64 copy, no abs() temporary. NaN and inf
    # propagate into max/min, so a finite peak means finite samples.
    flat = audio.reshape(-1)
    peak = max(float(flat.max()), -float(flat.min()))
    if not np.isfinite(peak):
        return Reason.NAN, float("nan"), float("nan")
    rms = float(np.sqrt(float(np.dot(flat, flat)) / flat.size))
    if peak > settings.clip_peak:
        return Reason.CLIPPING, rms, peak
    if rms < settings.silence_rms:
        return Reason.SILENT, rms, peak
    return None, rms, peak
