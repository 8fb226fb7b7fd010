"""Integrated loudness against pyloudnorm (the reference implementation of BS.1770-4)."""

from __future__ import annotations

import numpy as np
import pytest

from farm.render.loudness import SILENCE, dc_offset, integrated_loudness

pyln = pytest.importorskip("pyloudnorm")


def _signals(rate: int, seconds: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    return {
        "sine 1 kHz": np.stack([0.3 * np.sin(2 * np.pi * 1000 * t)] * 2),
        "noise": rng.normal(0.0, 0.1, (2, n)),
        "decaying pair": np.stack(
            [
                np.exp(-3 * t) * np.sin(2 * np.pi * 220 * t) * 0.5,
                np.exp(-2 * t) * np.sin(2 * np.pi * 330 * t) * 0.4,
            ]
        ),
        "dc + a whisper": np.stack([np.full(n, 0.2) + 1e-4 * np.sin(2 * np.pi * 440 * t)] * 2),
        "60 Hz hum + 5 kHz": np.stack(
            [0.5 * np.sin(2 * np.pi * 60 * t), 0.05 * np.sin(2 * np.pi * 5000 * t)]
        ),
    }


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 16000, 44101])
@pytest.mark.parametrize("seconds", [0.45, 1.0, 2.0, 3.37])
def test_matches_pyloudnorm(rate: int, seconds: float) -> None:
    for name, sig in _signals(rate, seconds).items():
        audio = sig.astype(np.float32)
        ref = pyln.Meter(rate).integrated_loudness(audio.T.astype(np.float64))
        got = integrated_loudness(audio, rate)
        assert abs(got - ref) < 0.01, (name, got, ref)


def test_k_weighting_ignores_dc() -> None:
    rate = 44100
    t = np.arange(rate * 2) / rate
    tone = np.stack([0.1 * np.sin(2 * np.pi * 1000 * t)] * 2).astype(np.float32)
    assert abs(integrated_loudness(tone + 0.5, rate) - integrated_loudness(tone, rate)) < 0.05
    assert integrated_loudness(np.zeros((2, rate), np.float32), rate) == SILENCE
    assert dc_offset(tone + 0.5) == pytest.approx(0.5, abs=1e-4)


def test_shorter_than_a_block_is_one_block() -> None:
    rate = 44100
    t = np.arange(int(rate * 0.2)) / rate
    tone = np.stack([0.3 * np.sin(2 * np.pi * 1000 * t)] * 2).astype(np.float32)
    # A steady tone's loudness does not depend on its length.
    long = np.tile(tone, (1, 5))
    assert abs(integrated_loudness(tone, rate) - integrated_loudness(long, rate)) < 0.1
