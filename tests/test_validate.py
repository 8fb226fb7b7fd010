import numpy as np

from farm.config import ValidationSettings
from farm.render.validate import Reason, validate

S = ValidationSettings()
SHAPE = (2, 1000)


def tone(amp: float) -> np.ndarray:
    t = np.arange(SHAPE[1]) / 44100
    return np.stack([amp * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)


def test_accepts_a_normal_tone() -> None:
    reason, rms, peak = validate(tone(0.3), S, SHAPE)
    assert reason is None
    assert abs(rms - 0.3 / np.sqrt(2)) < 0.01 and abs(peak - 0.3) < 0.01


def test_silent() -> None:
    assert validate(np.zeros(SHAPE, np.float32), S, SHAPE)[0] is Reason.SILENT
    assert validate(tone(1e-4), S, SHAPE)[0] is Reason.SILENT
    quiet = ValidationSettings(silence_rms=1e-5)
    assert validate(tone(1e-4), quiet, SHAPE)[0] is None


def test_clipping() -> None:
    assert validate(tone(S.clip_peak * 1.01), S, SHAPE)[0] is Reason.CLIPPING
    strict = ValidationSettings(clip_peak=0.2)
    assert validate(tone(0.3), strict, SHAPE)[0] is Reason.CLIPPING


def test_nan_and_inf() -> None:
    a = tone(0.3)
    a[1, 17] = np.nan
    assert validate(a, S, SHAPE)[0] is Reason.NAN
    a[1, 17] = np.inf
    assert validate(a, S, SHAPE)[0] is Reason.NAN


def test_shape() -> None:
    assert validate(tone(0.3)[:, :999], S, SHAPE)[0] is Reason.SHAPE
    assert validate(tone(0.3)[:1], S, SHAPE)[0] is Reason.SHAPE
