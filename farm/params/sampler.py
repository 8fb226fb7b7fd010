"""Deterministic synthetic presets: block ``k`` of a run is a pure function of (spec, k).

Synthetic presets are drawn in fixed **blocks** of ``sampling.block`` presets: a block's
Latin Hypercube strata, and every random stream of it, are seeded from
``SeedSequence([seed, block, stream])``, never from a job, a worker or a clock. Sobol is
addressed by synthetic index. Which presets a job renders (real ones first, then these) is
:mod:`farm.jobs.plan`'s business: this module draws and knows no library.
"""

from __future__ import annotations

import warnings

import numpy as np

from farm.config import RunSpec, SamplingSettings
from farm.params.constraints import apply_constraints
from farm.params.label import Label
from farm.params.modulation import sample_modulations
from farm.params.registry import modulation_names
from farm.params.tiers import TierParams

_STREAM_CONTINUOUS = 0
_STREAM_CATEGORICAL = 1
_STREAM_MODULATION = 2
_STREAM_CONSTRAINTS = 3
#: The stream of a block's catalog wavetables (drawn by :mod:`farm.jobs.plan`).
STREAM_WAVETABLES = 4


def rng_for(seed: int, block: int, stream: int) -> np.random.Generator:
    """The generator of one random stream of one block."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, block, stream])))


def latin_hypercube(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n points in [0, 1)^d with exactly one point in each of the n strata of every column."""
    strata = np.argsort(rng.random((n, d)), axis=0)
    return (strata + rng.random((n, d))) / n


def sobol(seed: int, start: int, n: int, d: int) -> np.ndarray:
    """Points ``start .. start+n-1`` of the scrambled Sobol sequence seeded by ``seed``."""
    from scipy.stats import qmc

    engine = qmc.Sobol(d=d, scramble=True, seed=np.random.default_rng(seed))
    if start:
        engine.fast_forward(start)
    with warnings.catch_warnings():
        # Balance warnings are about n not being a power of two: expected for a batch.
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(engine.random(n))


def sample_continuous(
    settings: SamplingSettings, seed: int, block: int, size: int, d: int
) -> np.ndarray:
    """Raw unconstrained continuous draws (float64, (size, d)) for one block."""
    if d == 0:
        return np.zeros((size, 0))
    if settings.sampler == "sobol":
        return sobol(seed, block * size, size, d)
    rng = rng_for(seed, block, _STREAM_CONTINUOUS)
    if settings.sampler == "lhs":
        return latin_hypercube(rng, size, d)
    return rng.random((size, d))


def synthetic_block(spec: RunSpec, tp: TierParams, block: int) -> list[Label]:
    """Synthetic block ``block``: ``sampling.block`` labels, numbered among synthetic
    presets (so real presets in front of them do not change them)."""
    b = spec.sampling.block
    cont = sample_continuous(spec.sampling, spec.seed, block, b, len(tp.continuous))
    cat_rng = rng_for(spec.seed, block, _STREAM_CATEGORICAL)
    cat = np.floor(cat_rng.random((b, len(tp.categorical))) * tp.n_options).astype(np.int64)
    cont, cat = apply_constraints(
        tp, spec.sampling.constraints, cont, cat, rng_for(spec.seed, block, _STREAM_CONSTRAINTS)
    )
    cont32 = cont.astype(np.float32)
    cat32 = cat.astype(np.int32)
    mods: list[tuple] = [() for _ in range(b)]  # type: ignore[type-arg]
    if tp.modulation:
        sources, destinations = modulation_names()
        mod_rng = rng_for(spec.seed, block, _STREAM_MODULATION)
        s = spec.sampling
        mods = [
            sample_modulations(
                mod_rng,
                sources,
                destinations,
                median_connections=s.median_connections,
                max_connections=s.max_connections,
                slot_dependent=s.slot_dependent_destinations,
            )
            for _ in range(b)
        ]
    return [
        Label(
            tier=tp.tier,
            continuous=cont32[i],
            categorical=cat32[i],
            modulations=mods[i],
            name=f"synth-{spec.seed}-{block * b + i}",
        )
        for i in range(b)
    ]
