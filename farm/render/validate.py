"""Row validation and rejection reasons."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

import numpy as np

from farm.config import ValidationSettings
from farm.render.loudness import dc_offset, integrated_loudness


class Reason(StrEnum):
    """Why a rendered note is not a row. Counted per run and stored in the dataset."""

    SILENT = "SILENT"
    """RMS below ``silence_rms``, or integrated loudness below ``silence_lufs``."""
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
    DUPLICATE_AUDIO = "DUPLICATE_AUDIO"
    """Bit-identical audio to an earlier row of the dataset (another note of the same
    preset that the note does not change, or another preset that sounds the same)."""


class Verdict(NamedTuple):
    """A rendered note's measures and whether it is a row."""

    reason: Reason | None
    """Why it is rejected, or None when it is a row."""
    rms: float
    """RMS over both channels (NaN when not finite)."""
    peak: float
    """Absolute peak (NaN when not finite)."""
    loudness: float
    """BS.1770 integrated loudness in LUFS (-inf for silence, NaN when not measured)."""
    dc: float
    """Mean sample value over both channels."""


def validate(
    audio: np.ndarray, settings: ValidationSettings, shape: tuple[int, int], rate: int = 44100
) -> Verdict:
    """Check one rendered note (the audio is only read, never changed).

    Args:
        audio: the render.
        settings: thresholds.
        shape: the expected (2, T).
        rate: the sample rate (for the loudness filters).

    Returns:
        The verdict: the reason (None when accepted) and the measures.
    """
    nan = float("nan")
    if audio.shape != shape:
        return Verdict(Reason.SHAPE, nan, nan, nan, nan)
    if audio.size == 0:
        return Verdict(Reason.SILENT, 0.0, 0.0, float("-inf"), 0.0)
    # Every row of a run passes here: no float64 copy, no abs() temporary. NaN and inf
    # propagate into max/min, so a finite peak means finite samples.
    flat = audio.reshape(-1)
    peak = max(float(flat.max()), -float(flat.min()))
    if not np.isfinite(peak):
        return Verdict(Reason.NAN, nan, nan, nan, nan)
    rms = float(np.sqrt(float(np.dot(flat, flat)) / flat.size))
    dc = dc_offset(audio)
    if peak > settings.clip_peak:
        return Verdict(Reason.CLIPPING, rms, peak, nan, dc)
    if rms < settings.silence_rms:
        return Verdict(Reason.SILENT, rms, peak, nan, dc)
    # Measured only for rows that passed the cheap checks (it costs ~1 ms per 2 s note).
    loudness = integrated_loudness(audio, rate)
    if loudness < settings.silence_lufs:
        return Verdict(Reason.SILENT, rms, peak, loudness, dc)
    return Verdict(None, rms, peak, loudness, dc)
