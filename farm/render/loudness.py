"""Integrated loudness (ITU-R BS.1770-4, in LUFS) and DC offset of a rendered row.

K-weighting (a +4 dB high shelf at 1.5 kHz and a high-pass at 38 Hz) means DC and
sub-audio content do not count as sound, which RMS does: a render that is nearly all DC
offset has a healthy RMS and no loudness. The filters are the sample-rate independent
biquad designs pyloudnorm uses (RBJ cookbook), so values agree with pyloudnorm's
``Meter.integrated_loudness`` (tested); the gating (400 ms blocks, 75% overlap, -70 LUFS
absolute and -10 LU relative gates) is vectorized with cumulative sums, which makes it
cheap enough to run on every row.

A render shorter than one 400 ms block has no gating block in BS.1770; here it is measured
as one block over its whole length (documented, so short test renders still get a value).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import sosfilt

#: Gating block (s), overlap, absolute gate (LUFS): BS.1770-4.
BLOCK_S = 0.4
OVERLAP = 0.75
ABSOLUTE_GATE = -70.0
#: The loudness of silence (no block passes the gates).
SILENCE = -np.inf


def _biquad(kind: str, gain_db: float, q: float, fc: float, rate: float) -> np.ndarray:
    """One RBJ-cookbook biquad as a normalized second-order section."""
    a_ = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * fc / rate
    alpha = np.sin(w0) / (2.0 * q)
    cos, sq = np.cos(w0), 2.0 * np.sqrt(a_) * alpha
    if kind == "high_shelf":
        b = [
            a_ * ((a_ + 1) + (a_ - 1) * cos + sq),
            -2 * a_ * ((a_ - 1) + (a_ + 1) * cos),
            a_ * ((a_ + 1) + (a_ - 1) * cos - sq),
        ]
        a = [
            (a_ + 1) - (a_ - 1) * cos + sq,
            2 * ((a_ - 1) - (a_ + 1) * cos),
            (a_ + 1) - (a_ - 1) * cos - sq,
        ]
    else:  # high_pass
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array([*(x / a[0] for x in b), 1.0, a[1] / a[0], a[2] / a[0]])


@functools.lru_cache(maxsize=8)
def k_weighting(rate: int) -> np.ndarray:
    """The K-weighting filter at ``rate`` Hz as second-order sections."""
    return np.stack(
        [
            _biquad("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0, rate),
            _biquad("high_pass", 0.0, 0.5, 38.0, rate),
        ]
    )


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness of ``audio`` (channels, samples), in LUFS (-inf for
    silence). Channel weights are 1 (left, right)."""
    x = np.asarray(audio, dtype=np.float32)
    # float32 filtering: half the time of float64, and well under 0.01 LU of difference.
    y = sosfilt(k_weighting(rate).astype(np.float32), x, axis=-1)
    n = y.shape[-1]
    block = BLOCK_S * rate
    if n < block:
        z = (y.astype(np.float64) ** 2).sum(axis=-1, keepdims=True) / max(n, 1)
    else:
        z = _block_energies(y, rate) / block
    power = z.sum(axis=0)  # channel weights 1
    with np.errstate(divide="ignore"):
        level = -0.691 + 10.0 * np.log10(power)
    gated = level >= ABSOLUTE_GATE
    if not gated.any():
        return SILENCE
    relative = -0.691 + 10.0 * np.log10(power[gated].mean()) - 10.0
    final = (level > relative) & gated
    if not final.any():
        return SILENCE
    return float(-0.691 + 10.0 * np.log10(power[final].mean()))


def _block_energies(y: np.ndarray, rate: int) -> np.ndarray:
    """Sum of squares of every 400 ms block, 100 ms apart ((channels, blocks), float64);
    a block that runs past the end counts only the samples there are (as pyloudnorm)."""
    n = y.shape[-1]
    step = BLOCK_S * (1.0 - OVERLAP)
    blocks = int(np.round((n / rate - BLOCK_S) / step)) + 1
    hop = rate * step
    if float(hop).is_integer():
        # Blocks are 4 whole hops: square-sum each hop once, then add 4 neighbours.
        h = int(hop)
        hops = blocks + 3
        padded = np.zeros((y.shape[0], hops * h), dtype=np.float32)
        take = min(n, hops * h)
        padded[:, :take] = y[:, :take]
        e = np.einsum("chk,chk->ch", padded.reshape(y.shape[0], hops, h),
                      padded.reshape(y.shape[0], hops, h), dtype=np.float64)  # fmt: skip
        c = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(e, axis=-1)], axis=-1)
        return np.asarray(c[:, 4 : 4 + blocks] - c[:, :blocks])
    j = np.arange(blocks)
    lo = (BLOCK_S * (j * (1.0 - OVERLAP)) * rate).astype(np.int64)
    hi = np.minimum((BLOCK_S * (j * (1.0 - OVERLAP) + 1) * rate).astype(np.int64), n)
    y64 = y.astype(np.float64)
    cs = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y64 * y64, axis=-1)], axis=-1)
    return np.asarray(cs[:, hi] - cs[:, lo])


def dc_offset(audio: np.ndarray) -> float:
    """Mean sample value over both channels (a DC-heavy row has |dc| near its RMS)."""
    flat = np.asarray(audio).reshape(-1)
    return float(flat.sum(dtype=np.float64) / max(flat.size, 1))
