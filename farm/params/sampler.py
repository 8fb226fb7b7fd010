"""Deterministic preset sampling: job ``j`` of a run is a pure function of (spec, j).

Every random stream is seeded from ``SeedSequence([seed, job, stream])``, never from a
worker or a clock, so the same (spec, seed, job) gives byte-identical labels in any
process. Sobol is addressed by global preset index (``job * batch_size + i``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from farm.config import RunSpec, SamplingSettings
from farm.params.constraints import apply_constraints
from farm.params.label import Label
from farm.params.modulation import sample_modulations
from farm.params.registry import modulation_names
from farm.params.tiers import TierParams

if TYPE_CHECKING:
    from farm.library import Library

_STREAM_CONTINUOUS = 0
_STREAM_CATEGORICAL = 1
_STREAM_MODULATION = 2
_STREAM_CONSTRAINTS = 3
_STREAM_WAVETABLES = 4


def rng_for(seed: int, job: int, stream: int) -> np.random.Generator:
    """The generator of one random stream of one job."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, job, stream])))


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
    settings: SamplingSettings, seed: int, job: int, batch_size: int, d: int
) -> np.ndarray:
    """Raw unconstrained continuous draws (float64, (batch_size, d)) for one job."""
    if d == 0:
        return np.zeros((batch_size, 0))
    if settings.sampler == "sobol":
        return sobol(seed, job * batch_size, batch_size, d)
    rng = rng_for(seed, job, _STREAM_CONTINUOUS)
    if settings.sampler == "lhs":
        return latin_hypercube(rng, batch_size, d)
    return rng.random((batch_size, d))


def sample_job(
    spec: RunSpec, tp: TierParams, job: int, library: Library | None = None
) -> list[Label]:
    """The presets of job ``job``: the run's real presets fill the first jobs, in order;
    every later job is ``spec.batch_size`` synthetic labels, constraints applied.

    Args:
        spec: the run spec (tier, seed, batch size, sampling settings, sources).
        tp: the tier's parameters (must match ``spec.tier``).
        job: job index, >= 0.
        library: the run's library (required when ``spec.sources.library`` is set).
    """
    src = spec.sources
    if src.library is not None and (library is None or library.sha != src.library):
        raise ValueError("this run's jobs need its library")
    b = spec.batch_size
    real_jobs = src.preset_jobs(b)
    if job < real_jobs:
        assert library is not None
        return library.preset_labels(tp, job * b, min((job + 1) * b, src.presets))
    labels = _synthetic(spec, tp, job - real_jobs)
    if src.catalog:
        assert library is not None
        draws = rng_for(spec.seed, job - real_jobs, _STREAM_WAVETABLES).integers(
            0, src.catalog, size=(b, 3)
        )
        labels = [library.with_wavetables(lab, w) for lab, w in zip(labels, draws, strict=True)]
    return labels


def _synthetic(spec: RunSpec, tp: TierParams, job: int) -> list[Label]:
    """Synthetic job ``job`` (numbered among synthetic jobs, so real presets in front of
    them do not change them)."""
    b = spec.batch_size
    cont = sample_continuous(spec.sampling, spec.seed, job, b, len(tp.continuous))
    cat_rng = rng_for(spec.seed, job, _STREAM_CATEGORICAL)
    cat = np.floor(cat_rng.random((b, len(tp.categorical))) * tp.n_options).astype(np.int64)
    cont, cat = apply_constraints(
        tp, spec.sampling.constraints, cont, cat, rng_for(spec.seed, job, _STREAM_CONSTRAINTS)
    )
    cont32 = cont.astype(np.float32)
    cat32 = cat.astype(np.int32)
    mods: list[tuple] = [() for _ in range(b)]  # type: ignore[type-arg]
    if tp.modulation:
        sources, destinations = modulation_names()
        mod_rng = rng_for(spec.seed, job, _STREAM_MODULATION)
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
            name=f"synth-{spec.seed}-{job * b + i}",
        )
        for i in range(b)
    ]
