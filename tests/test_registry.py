import json
import subprocess
import sys

import vita

from farm.params.registry import Registry, is_sound_parameter, module_of
from farm.params.tiers import tier_params


def test_counts_and_classification(registry: Registry) -> None:
    assert len(registry.continuous) == 322
    assert len(registry.categorical) == 126
    assert len(registry) == 448
    integer_continuous = [s.name for s in registry.continuous if s.integer]
    assert len(integer_continuous) == 29
    assert {"osc_1_transpose", "osc_1_unison_voices", "effect_chain_order"} <= set(
        integer_continuous
    )
    assert all(s.options for s in registry.categorical)
    assert all(not s.options for s in registry.continuous)


def test_exclusions_by_rule(registry: Registry) -> None:
    synth = vita.Synth()
    controls = set(synth.get_controls())
    assert len(controls) == 772
    excluded = controls - {s.name for s in registry}
    assert len(excluded) == 324
    assert sum(n.startswith("modulation_") for n in excluded) == 320
    assert {"view_spectrogram", "osc_1_view_2d", "osc_2_view_2d", "osc_3_view_2d"} <= excluded
    assert not is_sound_parameter("modulation_12_amount")
    assert is_sound_parameter("filter_1_cutoff")


def test_entries_match_vita(registry: Registry) -> None:
    synth = vita.Synth()
    for spec in registry:
        info = synth.get_control_details(spec.name)
        assert (spec.min, spec.max, spec.default) == (info.min, info.max, info.default_value)
        assert spec.min < spec.max
    cut = registry["filter_1_cutoff"]
    assert (cut.kind, cut.module, cut.min, cut.max) == ("continuous", "filter_1", 8.0, 136.0)
    dest = registry["osc_1_destination"]
    assert dest.kind == "categorical" and dest.options[0] == "FILTER 1" and dest.n_options == 14


def test_modules() -> None:
    assert module_of("osc_2_unison_voices") == "osc_2"
    assert module_of("filter_fx_cutoff") == "filter_fx"
    assert module_of("macro_control_3") == "macro_control_3"
    assert module_of("reverb_dry_wet") == "reverb"
    assert module_of("volume") == "global"


def test_fingerprint_is_stable_and_sensitive(registry: Registry) -> None:
    again = Registry(list(registry))
    assert again.fingerprint == registry.fingerprint
    assert len(registry.fingerprint) == 64
    changed = Registry([*list(registry)[1:]])
    assert changed.fingerprint != registry.fingerprint


def test_tiers(registry: Registry) -> None:
    t1, t2, t3 = (tier_params(registry, t) for t in (1, 2, 3))
    assert (len(t1.continuous), len(t1.categorical)) == (62, 20)
    assert {s.module for s in t1.continuous} | {s.module for s in t1.categorical} == {
        "osc_1",
        "osc_2",
        "filter_1",
        "env_1",
        "global",
    }
    assert {"osc_1_on", "osc_2_on", "filter_1_on"} <= {s.name for s in t1.categorical}
    assert (len(t2.continuous), len(t2.categorical)) == (322, 126)
    assert not t2.modulation and t3.modulation
    assert t3.continuous == t2.continuous


def test_params_cli_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "farm.cli", "params", "--tier", "1", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = json.loads(out)
    assert len(rows) == 82
    assert set(rows[0]) == {"name", "kind", "module", "min", "max", "default", "integer", "options"}
    assert {r["kind"] for r in rows} == {"continuous", "categorical"}
