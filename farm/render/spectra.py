"""The one log-spectrogram of the farm, and what is built on it.

Renders are compared by spectrum because vita's oscillator phase is random and
process-wide: two clean renders of one label match bit for bit only under the same random
history; across histories they match in log-magnitude spectrum (correlation ~0.86-0.95).
Parameter importance (a multi-resolution distance), label-fidelity checks and the pictures
all use :func:`log_spectrogram`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spectrogram:
    """A log-magnitude spectrogram.

    Attributes:
        log: natural log of |STFT| (+ floor), shape (frames, bins).
        freqs: bin frequencies in Hz.
        times: frame centres in seconds.
    """

    log: np.ndarray
    freqs: np.ndarray
    times: np.ndarray

    @property
    def db(self) -> np.ndarray:
        """The magnitude in dB."""
        return np.asarray(self.log * (20.0 / np.log(10.0)))


def log_spectrogram(
    audio: np.ndarray,
    n_fft: int = 2048,
    hop: int | None = None,
    *,
    sample_rate: int = 44100,
    floor: float = 1e-6,
) -> Spectrogram:
    """Log-magnitude spectrogram of the mono mix of (channels, T) audio: Hann window,
    ``hop`` n_fft / 4 by default, unscaled magnitudes, ``log(|X| + floor)``."""
    hop = hop or n_fft // 4
    mono = np.asarray(audio, dtype=np.float64).reshape(-1, audio.shape[-1]).mean(axis=0)
    if mono.size < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.size))
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    times = (np.arange(len(frames)) * hop + n_fft / 2) / sample_rate
    return Spectrogram(np.log(spec + floor), freqs, times)


def spectral_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the log-magnitude spectrograms of two renders (1 = same)."""
    x, y = log_spectrogram(a).log.ravel(), log_spectrogram(b).log.ravel()
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def log_spectra(audio: np.ndarray, fft_sizes: Sequence[int]) -> list[np.ndarray]:
    """:func:`log_spectrogram` at several resolutions, one per FFT size, with a floor of
    1e-5 times the window's sum (1e-5 of a spectrum scaled to amplitude), so bins that
    quiet count as silence at every resolution alike and numerical noise adds nothing to
    a distance."""
    return [log_spectrogram(audio, n, floor=1e-5 * np.hanning(n).sum()).log for n in fft_sizes]


def spectra_distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Mean absolute difference of two :func:`log_spectra`, averaged over resolutions."""
    return sum(float(np.mean(np.abs(x - y))) for x, y in zip(a, b, strict=True)) / len(a)
