import subprocess
import sys

import numpy as np
import pytest

from farm.config import Constraints, RunSpec, SamplingSettings
from farm.errors import UsageError
from farm.jobs.plan import sample_job
from farm.params.constraints import AMP_LIMITS, AUDIBLE_ROUTES, ROUTED, apply_constraints
from farm.params.label import Label, Modulation
from farm.params.modulation import from_matrix, sample_modulations, to_matrix
from farm.params.registry import modulation_names
from farm.params.sampler import latin_hypercube, rng_for, sobol
from farm.params.tiers import TierParams


def _vectors(spec: RunSpec, tp: TierParams, job: int) -> bytes:
    labels = sample_job(spec, tp, job)
    return b"".join(L.continuous.tobytes() + L.categorical.tobytes() for L in labels)


@pytest.mark.parametrize("sampler", ["lhs", "random", "sobol"])
def test_same_spec_seed_job_is_byte_identical(tp2: TierParams, sampler: str) -> None:
    spec = RunSpec(tier=2, n=10, seed=11, batch_size=8, sampling=SamplingSettings(sampler=sampler))  # type: ignore[arg-type]
    assert _vectors(spec, tp2, 3) == _vectors(spec, tp2, 3)
    assert _vectors(spec, tp2, 3) != _vectors(spec, tp2, 4)
    other_seed = spec.model_copy(update={"seed": 12})
    assert _vectors(spec, tp2, 3) != _vectors(other_seed, tp2, 3)


def test_identical_in_another_process(tp2: TierParams) -> None:
    spec = RunSpec(tier=3, n=10, seed=5, batch_size=4)
    code = (
        "import sys, hashlib\n"
        "from farm.config import RunSpec\n"
        "from farm.params.registry import get_registry\n"
        "from farm.params.tiers import tier_params\n"
        "from farm.jobs.plan import sample_job\n"
        f"spec = RunSpec.from_json({spec.to_json()!r})\n"
        "tp = tier_params(get_registry(), 3)\n"
        "print(','.join(L.hash for L in sample_job(spec, tp, 7)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    tp3 = tp2.__class__(3, tp2.continuous, tp2.categorical, True)
    assert out.stdout.strip() == ",".join(L.hash for L in sample_job(spec, tp3, 7))


def test_latin_hypercube_one_hit_per_stratum() -> None:
    n, d = 37, 50
    x = latin_hypercube(rng_for(0, 0, 0), n, d)
    assert x.shape == (n, d) and x.min() >= 0 and x.max() < 1
    for col in range(d):
        assert sorted(np.floor(x[:, col] * n).astype(int)) == list(range(n))


def test_lhs_strata_survive_range_constraints(tp1: TierParams) -> None:
    # Strata are per sampling block (20 here), whatever the batch size (7).
    spec = RunSpec(tier=1, n=10, batch_size=7, sampling=SamplingSettings(block=20))
    labels = [L for j in range(3) for L in sample_job(spec, tp1, j)][:20]
    col = tp1.continuous_index("volume")
    lo, hi = spec.sampling.constraints.ranges["volume"]
    v = np.array([L.continuous[col] for L in labels], dtype=np.float64)
    strata = np.floor((v - lo) / (hi - lo) * 20).astype(int)
    assert sorted(strata) == list(range(20))


def test_sobol_is_index_addressable() -> None:
    whole = sobol(3, 0, 32, 5)
    assert np.allclose(sobol(3, 16, 8, 5), whole[16:24])
    assert not np.allclose(sobol(4, 0, 8, 5), whole[:8])


def test_default_constraints(tp2: TierParams) -> None:
    spec = RunSpec(tier=2, n=10, batch_size=64)
    labels = sample_job(spec, tp2, 0)
    cont = np.stack([L.continuous for L in labels])
    cat = np.stack([L.categorical for L in labels])
    assert np.all(cat[:, tp2.categorical_index("osc_1_on")] == 1)
    assert cont[:, tp2.continuous_index("osc_1_level")].min() >= 0.3
    vol = cont[:, tp2.continuous_index("volume")]
    assert vol.min() >= 0.55 and vol.max() <= 0.85
    assert cont[:, tp2.continuous_index("filter_1_cutoff")].min() >= 0.15
    for name, hi in AMP_LIMITS.items():
        assert cont[:, tp2.continuous_index(name)].max() <= hi
    for param in ROUTED:
        col = tp2.categorical_index(param)
        used = {tp2.categorical[col].options[k] for k in cat[:, col]}
        assert used <= set(AUDIBLE_ROUTES)
        assert len(used) >= 4  # redrawn uniformly, not collapsed onto one route
    # categoricals outside constraints stay uniform over all options
    col = tp2.categorical_index("distortion_type")
    assert len(set(cat[:, col])) == tp2.categorical[col].n_options


def test_constraints_can_be_switched_off(tp2: TierParams) -> None:
    spec = RunSpec(
        tier=2,
        n=10,
        batch_size=256,
        sampling=SamplingSettings(constraints=Constraints(fixed={}, ranges={}, rules=())),
    )
    cat = np.stack([L.categorical for L in sample_job(spec, tp2, 0)])
    assert set(cat[:, tp2.categorical_index("osc_1_on")]) == {0, 1}
    col = tp2.categorical_index("osc_1_destination")
    assert len(set(cat[:, col])) == 14


def test_bad_constraints_are_usage_errors(tp2: TierParams) -> None:
    rng = rng_for(0, 0, 0)
    cont = np.zeros((2, len(tp2.continuous)))
    cat = np.zeros((2, len(tp2.categorical)), dtype=np.int64)
    with pytest.raises(UsageError, match="unknown constraint rule"):
        apply_constraints(tp2, Constraints(rules=("nope",)), cont, cat, rng)
    with pytest.raises(UsageError, match="out of range"):
        apply_constraints(tp2, Constraints(fixed={"osc_1_on": 5}), cont, cat, rng)
    with pytest.raises(ValueError):
        Constraints(ranges={"volume": (0.9, 0.1)})


def test_tier3_modulation_distribution() -> None:
    sources, destinations = modulation_names()
    rng = rng_for(0, 0, 2)
    ks = []
    for _ in range(400):
        mods = sample_modulations(rng, sources, destinations)
        ks.append(len(mods))
        assert len(mods) <= 64
        assert len({(m.source, m.destination) for m in mods}) == len(mods)
        for m in mods:
            assert m.source in sources and m.destination in destinations
            assert not m.destination.startswith("modulation_")
            assert -1 <= m.amount <= 1 and abs(m.amount) >= 1e-3 and -10 <= m.power <= 10
    assert 5 <= np.median(ks) <= 7
    assert min(ks) >= 1
    capped = sample_modulations(
        rng, sources, destinations, median_connections=64, max_connections=64
    )
    assert len(capped) == 64


def test_modulation_matrix_round_trip() -> None:
    sources, destinations = modulation_names()
    mods = sample_modulations(rng_for(1, 0, 2), sources, destinations, median_connections=20)
    m = to_matrix(mods, sources, destinations)
    assert m.shape == (4, 32, 428) and m.dtype == np.float32
    assert np.count_nonzero(np.any(m != 0, axis=0)) == len(mods)
    assert from_matrix(m, sources, destinations) == mods


def test_label_hash() -> None:
    a = Label(2, np.array([0.5, 0.25]), np.array([1, 0]))
    b = Label(2, np.array([0.5, 0.25], dtype=np.float32), np.array([1, 0]), name="other")
    assert a.hash == b.hash and len(a.hash) == 64
    assert Label(2, np.array([0.5, 0.26]), np.array([1, 0])).hash != a.hash
    assert Label(3, np.array([0.5, 0.25]), np.array([1, 0])).hash != a.hash
    c = Label(3, a.continuous, a.categorical, (Modulation("lfo_1", "volume", 0.5),))
    assert c.hash != Label(3, a.continuous, a.categorical).hash
    wt = Label(2, a.continuous, a.categorical, extra={"nonscalar": {"wavetables": [1]}})
    assert wt.hash != a.hash


def test_presets_unique_within_a_run(tp2: TierParams) -> None:
    spec = RunSpec(tier=2, n=10, batch_size=32)
    hashes = [L.hash for j in range(4) for L in sample_job(spec, tp2, j)]
    assert len(set(hashes)) == len(hashes)


@pytest.mark.parametrize("tier", [1, 3])
def test_batch_size_never_changes_the_presets(tier: int, tp1: TierParams, tp3: TierParams) -> None:
    """Preset g is the same whatever the batch size (torchsynth's reproducibility test)."""
    tp = tp1 if tier == 1 else tp3
    runs = []
    for b in (1, 4, 16, 64, 5):
        spec = RunSpec(tier=tier, n=10, seed=3, batch_size=b)
        labels = [L for j in range(-(-80 // b)) for L in sample_job(spec, tp, j)][:80]
        runs.append([(L.hash, L.name) for L in labels])
    assert all(r == runs[0] for r in runs[1:])
    assert len({h for h, _ in runs[0]}) == 80


def test_default_block_keeps_default_runs_as_they_were(tp2: TierParams) -> None:
    """With the default batch size (16 = the default block), job j draws exactly what the
    per-job sampler drew: the seeds of block j."""
    spec = RunSpec(tier=2, n=10, seed=9)
    rng = rng_for(9, 2, 0)
    expected = latin_hypercube(rng, 16, len(tp2.continuous))
    got = np.stack([L.continuous for L in sample_job(spec, tp2, 2)]).astype(np.float64)
    free = [
        i
        for i, p in enumerate(tp2.continuous)
        if p.name not in spec.sampling.constraints.ranges and not p.integer
    ]
    assert np.allclose(got[:, free[:5]], expected[:, free[:5]], atol=1e-6)


def test_key_tracking_rule(tp1: TierParams) -> None:
    rules = (*Constraints().rules, "key_tracking")
    spec = RunSpec(tier=1, n=10, batch_size=64, sampling=SamplingSettings(
        constraints=Constraints(rules=rules)))  # fmt: skip
    cat = np.stack([L.categorical for L in sample_job(spec, tp1, 0)])
    for name in ("osc_1_midi_track", "osc_2_midi_track"):
        col = tp1.categorical_index(name)
        assert set(cat[:, col]) == {tp1.categorical[col].options.index("On")}
    default = np.stack([L.categorical for L in sample_job(RunSpec(tier=1, n=10), tp1, 0)])
    assert len(set(default[:, tp1.categorical_index("osc_1_midi_track")])) == 2
