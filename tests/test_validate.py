import numpy as np

from farm.config import ValidationSettings
from farm.render.validate import Reason, validate

S = ValidationSettings()
SHAPE = (2, 1000)


def tone(amp: float) -> np.ndarray:
    t = np.arange(SHAPE[1]) / 44100
    return np.stack([amp * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)


def test_accepts_a_normal_tone() -> None:
    reason, rms, peak, lufs, dc = validate(tone(0.3), S, SHAPE)
    assert reason is None
    assert abs(rms - 0.3 / np.sqrt(2)) < 0.01 and abs(peak - 0.3) < 0.01
    assert -20 < lufs < -5 and abs(dc) < 0.01


def test_silent() -> None:
    assert validate(np.zeros(SHAPE, np.float32), S, SHAPE)[0] is Reason.SILENT
    assert validate(tone(1e-3), S, SHAPE)[0] is Reason.SILENT  # RMS 7e-4 < 1e-3
    quiet = ValidationSettings(silence_rms=1e-5, silence_lufs=-70.0)
    assert validate(tone(1e-3), quiet, SHAPE)[0] is None
    # Below BS.1770's absolute gate (-70 LUFS) nothing is loud enough to measure.
    assert validate(tone(1e-5), quiet, SHAPE)[0] is Reason.SILENT


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


def test_dc_is_not_sound() -> None:
    """A row that is almost all DC offset has a healthy RMS and no loudness: SILENT, with
    its measures kept (the audio is not changed). The offset fades in over 0.3 s: a step
    from zero would be a click, which K-weighting rightly hears."""
    shape = (2, 88200)
    t = np.arange(shape[1]) / 44100
    a = np.stack([0.2 * np.minimum(t / 0.3, 1.0) + 1e-5 * np.sin(2 * np.pi * 440 * t)] * 2)
    a = a.astype(np.float32)
    before = a.copy()
    v = validate(a, S, shape)
    assert v.rms > S.silence_rms  # RMS alone would have accepted it
    assert v.reason is Reason.SILENT and v.loudness < S.silence_lufs
    assert abs(v.dc - float(a.mean(dtype=np.float64))) < 1e-6
    assert np.array_equal(a, before)
