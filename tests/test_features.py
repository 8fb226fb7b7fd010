"""Features in the farm (``--features logmel``) and mono rows (``--mono``): librosa's
log-mel written out, computed in real workers from the audio as stored, the train split's
band statistics, and the same file whoever computed it."""

from __future__ import annotations

from pathlib import Path

import h5py
import librosa
import numpy as np
import pytest
from scipy.io import wavfile

from farm.config import FeatureSettings
from farm.dataset import FarmDataset
from farm.render.features import logmel, mel_filters
from farm.storage import schema
from farm.storage.features import band_moments
from tests.farm_helpers import SPEC, farm

#: Two presets' worth of rows: every split side is likely, the render short.
ROWS = 12


def _librosa_logmel(audio: np.ndarray, fs: FeatureSettings, rate: int) -> np.ndarray:
    return np.stack(
        [
            librosa.power_to_db(
                librosa.feature.melspectrogram(
                    y=channel, sr=rate, n_fft=fs.n_fft, hop_length=fs.hop, n_mels=fs.n_mels
                ),
                ref=1.0,
                amin=1e-10,
                top_db=None,
            )
            for channel in audio
        ]
    )


@pytest.mark.parametrize(
    ("rate", "fs"),
    [(44100, FeatureSettings()), (22050, FeatureSettings(n_mels=64, n_fft=1024, hop=256))],
)
def test_logmel_is_librosas(rate: int, fs: FeatureSettings) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(rate) / rate
    audio = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * rng.standard_normal(rate)]).astype(
        np.float32
    )
    audio[:, : rate // 4] *= 1e-4  # a quiet start: the floor and the low end
    ours = logmel(audio, fs, rate)
    theirs = _librosa_logmel(audio, fs, rate)
    assert ours.shape == theirs.shape == (2, fs.n_mels, fs.frames(rate))
    # dB, float32 FFTs in both: rounding shows only in the quietest bins (0.006 dB at
    # most); a symmetric Hann window instead of the periodic one is off by 0.7 dB.
    diff = np.abs(ours - theirs)
    assert diff.max() < 0.02 and diff.mean() < 1e-3, diff.max()


def test_a_tone_lands_in_its_band() -> None:
    """A 1 kHz sine is loudest in the band whose filter peaks nearest 1 kHz."""
    rate, fs = 44100, FeatureSettings()
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None]
    band = int(logmel(tone, fs, rate)[0].mean(axis=1).argmax())
    centres = np.fft.rfftfreq(fs.n_fft, 1 / rate)[mel_filters(rate, fs.n_fft, fs.n_mels).argmax(1)]
    assert abs(centres[band] - 1000) < 60


def test_features_and_mono_in_the_farm(tmp_path: Path) -> None:
    """Two embedded workers and one local process make the same features file; the
    features are the log-mel of the audio as stored (recomputed from the file, bit for
    bit); the stats are the train rows'; mono rows are the stereo rows' mid channel."""
    spec = [*SPEC, "-n", str(ROWS), "--batch-size", "2"]
    feats = ["--features", "logmel", "--n-mels", "64", "--hop", "256"]
    r = farm(tmp_path, "submit", *spec, *feats, "--mono", "-o", "farm.h5", "--workers", "2")
    assert r.returncode == 0, r.stderr
    r = farm(tmp_path, "generate", *spec, *feats, "--mono", "-o", "local.h5")
    assert r.returncode == 0, r.stderr
    r = farm(tmp_path, "generate", *spec, "-o", "stereo.h5")
    assert r.returncode == 0, r.stderr
    data = tmp_path / "data"
    assert farm(tmp_path, "verify", str(data / "farm.h5")).returncode == 0
    fs = FeatureSettings(n_mels=64, hop=256)
    mel, mom = schema.features("logmel"), schema.moments("logmel")
    with h5py.File(data / "farm.h5") as f, h5py.File(data / "local.h5") as g:
        for name in (schema.AUDIO, mel, mom, schema.CHECKSUM):
            np.testing.assert_array_equal(f[name][...], g[name][...])
        audio, features = f[schema.AUDIO][...], f[mel][...]
        assert audio.shape[1] == 1 and features.shape == (ROWS, 1, 64, fs.frames(audio.shape[2]))
        rate = int(f.attrs["sample_rate"])
        for i in range(ROWS):
            np.testing.assert_array_equal(features[i], logmel(audio[i], fs, rate))
            np.testing.assert_allclose(f[mom][i], band_moments(features[i]))
        train = f[schema.meta("split")][...] == b"train"
        assert 0 < train.sum() < ROWS or train.all()
        chosen = features[train].transpose(2, 0, 1, 3).reshape(64, -1).astype(np.float64)
        stats = dict(f[mel].attrs)
        assert int(stats["stats_rows"]) == train.sum()
        np.testing.assert_allclose(stats["mean"], chosen.mean(axis=1), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(stats["std"], chosen.std(axis=1), rtol=1e-4, atol=1e-4)
        mono_keys = _keys(f)
    with h5py.File(data / "stereo.h5") as s:
        stereo = {k: i for i, k in enumerate(_keys(s))}
        both = [(i, stereo[k]) for i, k in enumerate(mono_keys) if k in stereo]
        assert len(both) >= ROWS // 2
        for i, j in both:
            lr = s[schema.AUDIO][j]
            np.testing.assert_array_equal(audio[i, 0], (lr[0] + lr[1]) * np.float32(0.5))
    # A mono row renders again from the file alone, as stored (the mid channel).
    r = farm(tmp_path, "rerender", str(data / "farm.h5"), "-s", "1", "-o", str(tmp_path / "r.wav"))
    assert r.returncode == 0, r.stderr
    rate_again, again = wavfile.read(tmp_path / "r.wav")
    assert rate_again == rate
    np.testing.assert_array_equal(again.reshape(1, -1), audio[1])
    ds = FarmDataset(data / "farm.h5", ["logmel", "continuous"], as_torch=False)
    assert ds[0]["logmel"].shape == features.shape[1:]
    np.testing.assert_array_equal(ds.feature_stats["logmel"][0], stats["mean"])


def _keys(f: h5py.File) -> list[tuple[int, int, int]]:
    cols = [f[schema.meta(n)][...].tolist() for n in ("job", "preset", "midi_note")]
    return list(zip(*cols, strict=True))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-mels", "64"], "add --features logmel"),
        (["--features", "logmel", "--hop", "4096"], "hop must not exceed n_fft"),
        (["--features", "logmel", "--n-mels", "4"], "n_mels"),
        (["--features", "mfcc"], "mfcc"),
    ],
)
def test_bad_feature_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = farm(tmp_path, "submit", "-n", "4", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "data").exists()
