"""Deterministic preset sampling: preset ``g`` of a run is a pure function of (spec, g).

Presets are numbered by a **global index** ``g``: the run's real presets first
(``g < sources.presets``), then synthetic ones. Synthetic presets are drawn in fixed
**blocks** of ``sampling.block`` global indices: a block's Latin Hypercube strata, and every
random stream of it, are seeded from ``SeedSequence([seed, block, stream])``. A job is
only a slice of global indices (``job * batch_size`` onwards), so the batch size, the
number of workers and retries change how fast presets are made, never which (a job in the
middle of a block draws the whole block and takes its part; a process keeps its last few
blocks). Sobol is addressed by synthetic index.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
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


def sample_job(
    spec: RunSpec, tp: TierParams, job: int, library: Library | None = None
) -> list[Label]:
    """The presets of job ``job``: global indices ``job * batch_size`` to
    ``(job + 1) * batch_size - 1`` (see :func:`sample_presets`)."""
    b = spec.batch_size
    return sample_presets(spec, tp, range(job * b, (job + 1) * b), library)


def sample_presets(
    spec: RunSpec, tp: TierParams, indices: Sequence[int], library: Library | None = None
) -> list[Label]:
    """The presets at global ``indices``: the run's real presets first, in order, then
    synthetic labels drawn by blocks, constraints applied.

    Args:
        spec: the run spec (tier, seed, sampling settings, sources; not the batch size).
        tp: the tier's parameters (must match ``spec.tier``).
        indices: global preset indices, >= 0.
        library: the run's library (required when ``spec.sources.library`` is set).
    """
    src = spec.sources
    if src.library is not None and (library is None or library.sha != src.library):
        raise ValueError("this run's jobs need its library")
    key = (spec.data_json(), tp.tier)
    block = spec.sampling.block
    out = []
    for g in indices:
        if g < src.presets:
            assert library is not None
            out.append(library.preset_label(tp, g))
            continue
        s = g - src.presets
        out.append(_block(key, spec, tp, s // block, library)[s % block])
    return out


#: Blocks a process keeps (a job that spans a block boundary, or the next job, reuses them).
_BLOCKS_KEPT = 8
_blocks: OrderedDict[tuple[str, int, int], list[Label]] = OrderedDict()


def _block(
    key: tuple[str, int], spec: RunSpec, tp: TierParams, k: int, library: Library | None
) -> list[Label]:
    """Synthetic block ``k`` (kept for reuse)."""
    full = (*key, k)
    if full in _blocks:
        _blocks.move_to_end(full)
        return _blocks[full]
    labels = _synthetic(spec, tp, k)
    if spec.sources.catalog:
        assert library is not None
        draws = rng_for(spec.seed, k, _STREAM_WAVETABLES).integers(
            0, spec.sources.catalog, size=(spec.sampling.block, 3)
        )
        labels = [library.with_wavetables(lab, w) for lab, w in zip(labels, draws, strict=True)]
    _blocks[full] = labels
    while len(_blocks) > _BLOCKS_KEPT:
        _blocks.popitem(last=False)
    return labels


def block_key(spec: RunSpec, g: int) -> tuple[int, int]:
    """The stored row key of global preset ``g``: (block, index in block), with real
    presets numbered like the rest (``g = block * sampling.block + index``)."""
    return divmod(g, spec.sampling.block)


def _synthetic(spec: RunSpec, tp: TierParams, block: int) -> list[Label]:
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
