"""What the workers derive from a render before storing it: the stored channels (both, or
the mid channel with ``--mono``) and features computed from them, so no training run has to
recompute them from 0.7 MB of float32 per row.

The log-mel spectrogram is librosa's defaults written out in numpy (checked against
librosa itself in ``tests/test_features.py``), so a model trained on the stored features can
be fed ``librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=sr, n_fft=n_fft,
hop_length=hop, n_mels=n_mels), ref=1.0, amin=1e-10, top_db=None)`` at inference:

* frames centred on ``t * hop``, the signal zero-padded by ``n_fft // 2`` at both ends
  (``1 + T // hop`` frames);
* a periodic Hann window, the power spectrum ``|X|^2``;
* Slaney's mel scale (linear below 1 kHz, logarithmic above) with area-normalized triangular
  filters from 0 Hz to the Nyquist frequency;
* ``10 * log10(max(mel, 1e-10))``: dB against 1.0, floored at -100 dB, never clipped
  relative to the row's own peak (a quiet row stays quiet).

Each stored channel gets its own spectrogram (:mod:`farm.storage.features` stores it, with
the per-band statistics).
"""

from __future__ import annotations

import functools

import numpy as np

from farm.config import FeatureSettings, RenderSettings

#: Power floor before the log (librosa's ``amin``): -100 dB.
AMIN = 1e-10


def stored_channels(audio: np.ndarray, render: RenderSettings) -> np.ndarray:
    """The channels a row stores of a (2, T) render: both, or with ``render.mono`` the mid
    channel (L+R)/2 as (1, T) float32."""
    if not render.mono:
        return audio
    a = np.asarray(audio, dtype=np.float32)
    return np.asarray((a[0] + a[1]) * np.float32(0.5))[None, :]


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear (3 bands per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mel = hz / f_sp
    above = hz >= min_log_hz
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.asarray(np.where(above, log_part, mel))


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.asarray(
        np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)
    )


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) float32 filter bank: triangles on Slaney's mel scale
    from 0 Hz to ``sample_rate / 2``, each scaled to unit area (``2 / bandwidth``)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    out: np.ndarray = weights.astype(np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    n = np.arange(n_fft)
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)  # periodic Hann
    w.setflags(write=False)
    return w


def logmel(audio: np.ndarray, settings: FeatureSettings, sample_rate: int) -> np.ndarray:
    """The log-mel spectrogram of (channels, T) audio: float32 (channels, n_mels, frames)
    in dB (see the module's description)."""
    x = np.asarray(audio, dtype=np.float32)
    n_fft, hop = settings.n_fft, settings.hop
    pad = n_fft // 2
    x = np.pad(x, ((0, 0), (pad, pad)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop]
    spectrum = np.fft.rfft(frames * _window(n_fft), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ mel_filters(sample_rate, n_fft, settings.n_mels).T  # (C, frames, n_mels)
    db = 10.0 * np.log10(np.maximum(mel, AMIN))
    return np.ascontiguousarray(db.transpose(0, 2, 1), dtype=np.float32)
