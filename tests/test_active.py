"""The active-parameter mask: its rules on known presets, and by measurement on real
renders: moving what it calls inactive never changes a bit of the audio."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from farm.config import RenderSettings, RunSpec
from farm.jobs.plan import sample_presets
from farm.params.active import SWITCHES, active_mask, inactive_names
from farm.params.label import Label, Modulation
from farm.params.tiers import TierParams
from farm.render.engine import RenderEngine
from tests.conftest import init_label

SHORT = RenderSettings(notes=(60,), note_duration=0.3, render_duration=0.5)


def _with(label: Label, tp: TierParams, **options: str) -> Label:
    cat = label.categorical.copy()
    for name, option in options.items():
        col = tp.categorical_index(name)
        cat[col] = tp.categorical[col].options.index(option)
    return replace(label, categorical=cat)


def test_rules_on_the_init_preset(tp2: TierParams, tp3: TierParams) -> None:
    label = init_label(tp2)
    off = inactive_names(label, tp2)
    # Oscillator 1 plays into filter 1 (off: passes through) and the effect chain (all
    # effects off); oscillators 2 and 3 are off; no modulation.
    assert "osc_1_level" not in off and "osc_2_on" not in off and "osc_2_level" in off
    assert "filter_1_cutoff" in off and "filter_1_on" not in off
    assert "reverb_size" in off and "reverb_on" not in off
    assert "lfo_1_frequency" in off and "env_2_attack" in off and "env_1_attack" not in off
    assert "osc_1_wave_frame" in off  # the init wavetable has one frame
    filtered = _with(label, tp2, filter_1_on="On")
    assert "filter_1_cutoff" not in inactive_names(filtered, tp2)
    direct = _with(filtered, tp2, osc_1_destination="DIRECT OUT")
    assert {"filter_1_cutoff", "reverb_on", "effect_chain_order"} <= inactive_names(direct, tp2)
    # Tier 3: a used LFO is active (its rate read from tempo by default, not seconds).
    wobble = init_label(tp3, (Modulation("lfo_1", "osc_1_level", 1.0),))
    off3 = inactive_names(wobble, tp3)
    assert "lfo_1_tempo" not in off3 and "lfo_1_frequency" in off3 and "lfo_2_tempo" in off3
    cont, cat = active_mask(wobble, tp3)
    assert cont.shape == (len(tp3.continuous),) and cat.dtype == bool
    assert cont.sum() + cat.sum() == len(tp3.continuous) + len(tp3.categorical) - len(
        {n for n in off3 if tp3.continuous_index(n) >= 0 or tp3.categorical_index(n) >= 0}
    )


def _moved(label: Label, tp: TierParams, names: list[str], rng: np.random.Generator) -> Label:
    cont, cat = label.continuous.copy(), label.categorical.copy()
    for name in names:
        if (c := tp.continuous_index(name)) >= 0:
            cont[c] = rng.random()
        else:
            k = tp.categorical_index(name)
            n = int(tp.n_options[k])
            cat[k] = (int(cat[k]) + 1 + int(rng.integers(n - 1))) % n
    return replace(label, continuous=cont, categorical=cat)


@pytest.mark.slow
@pytest.mark.parametrize("tier", [1, 2, 3])
def test_moving_inactive_parameters_never_changes_the_audio(
    tier: int, tp1: TierParams, tp2: TierParams, tp3: TierParams
) -> None:
    """Random presets of the farm's sampler: every inactive parameter that is not a switch
    moved at once, and each inactive switch alone, render bit-identical audio; moving the
    active continuous parameters changes it (so the comparison can fail)."""
    tp = {1: tp1, 2: tp2, 3: tp3}[tier]
    engine = RenderEngine(tp, SHORT)
    rng = np.random.default_rng(tier)
    changed = compared = 0
    try:
        labels = sample_presets(RunSpec(tier=tier, n=1, seed=31, render=SHORT), tp, range(6))
        for label in labels:
            (base,) = engine.render(label)
            if base.audio is None or not np.any(base.audio):
                continue
            cont, cat = active_mask(label, tp)
            names = [s.name for s, a in zip(tp.continuous, cont, strict=True) if not a]
            names += [s.name for s, a in zip(tp.categorical, cat, strict=True) if not a]
            leaves = [n for n in names if not SWITCHES.match(n)]
            assert len(leaves) > 5
            moves = [leaves, *[[n] for n in names if SWITCHES.match(n)][:6]]
            for group in moves:
                (again,) = engine.render(_moved(label, tp, group, rng))
                assert again.audio is not None and np.array_equal(again.audio, base.audio), group
            active = [s.name for s, a in zip(tp.continuous, cont, strict=True) if a]
            (other,) = engine.render(_moved(label, tp, active, rng))
            compared += 1
            changed += other.audio is None or not np.array_equal(other.audio, base.audio)
    finally:
        engine.close()
    assert compared >= 3 and changed == compared


def test_datasets_store_the_mask(dataset_file: Path, tp1: TierParams) -> None:
    with h5py.File(dataset_file, "r") as f:
        cont, cat = f["params/active_continuous"][:], f["params/active_categorical"][:]
        assert cont.shape == f["params/continuous"].shape and cont.dtype == bool
        assert cat.shape == f["params/categorical"].shape
        label = Label(1, f["params/continuous"][3], f["params/categorical"][3])
    assert 0 < cont.mean() < 1
    want = active_mask(label, tp1)
    assert np.array_equal(cont[3], want[0]) and np.array_equal(cat[3], want[1])
