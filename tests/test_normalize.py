import numpy as np
import vita

from farm.params.normalize import (
    categorical_from_raw,
    categorical_to_raw,
    continuous_from_raw,
    continuous_to_raw,
)
from farm.params.tiers import TierParams


def test_norm_raw_norm_round_trip_every_parameter(tp2: TierParams) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((200, len(tp2.continuous))).astype(np.float32)
    x[0], x[1] = 0.0, 1.0
    raw = continuous_to_raw(tp2, x)
    assert np.all(raw >= tp2.raw_min) and np.all(raw <= tp2.raw_max)
    back = continuous_from_raw(tp2, raw)
    cont = ~tp2.integer
    assert np.allclose(back[:, cont], x[:, cont], atol=1e-6)
    # integer-valued parameters round to whole raw values: within half a step
    step = 1.0 / (tp2.raw_max - tp2.raw_min)
    assert np.all(np.abs(back[:, ~cont] - x[:, ~cont]) <= 0.5 * step[~cont] + 1e-6)
    assert np.all(raw[:, ~cont] == np.rint(raw[:, ~cont]))


def test_clamping(tp2: TierParams) -> None:
    x = np.full(len(tp2.continuous), 7.0, dtype=np.float32)
    assert np.array_equal(continuous_to_raw(tp2, x), tp2.raw_max)
    assert np.array_equal(continuous_to_raw(tp2, -x), tp2.raw_min)
    raw = np.full(len(tp2.continuous), 1e9)
    assert np.all(continuous_from_raw(tp2, raw) == 1.0)
    idx = np.full(len(tp2.categorical), 999)
    assert np.array_equal(categorical_to_raw(tp2, idx), tp2.cat_min + tp2.n_options - 1)


def test_categorical_round_trip(tp2: TierParams) -> None:
    for k in range(4):
        idx = np.minimum(k, tp2.n_options - 1).astype(np.int32)
        assert np.array_equal(categorical_from_raw(tp2, categorical_to_raw(tp2, idx)), idx)


def test_raw_values_read_back_from_vita(tp2: TierParams) -> None:
    synth = vita.Synth()
    controls = synth.get_controls()
    x = np.random.default_rng(2).random(len(tp2.continuous)).astype(np.float32)
    raw = continuous_to_raw(tp2, x)
    for spec, value in zip(tp2.continuous, raw.tolist(), strict=True):
        controls[spec.name].set(value)
    got = np.array([controls[s.name].value() for s in tp2.continuous])
    assert np.allclose(got, raw.astype(np.float32), rtol=1e-6, atol=1e-6)
    idx = (np.arange(len(tp2.categorical)) % tp2.n_options).astype(np.int32)
    raw_cat = categorical_to_raw(tp2, idx)
    for spec, value in zip(tp2.categorical, raw_cat.tolist(), strict=True):
        controls[spec.name].set(value)
    got_cat = np.array([controls[s.name].value() for s in tp2.categorical])
    assert np.array_equal(categorical_from_raw(tp2, got_cat), idx)
