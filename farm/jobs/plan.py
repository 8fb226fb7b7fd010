"""Which presets job ``j`` renders: preset ``g`` of a run is a pure function of (spec, g).

Presets are numbered by a **global index** ``g``: the run's real presets first
(``g < sources.presets``), then synthetic ones, drawn by blocks
(:func:`farm.params.sampler.synthetic_block`). A job is only a slice of global indices
(``job * batch_size`` onwards, or the span the coordinator gave it: a farm run's last jobs
are smaller), so the batch size, the spans, the number of workers and retries change how
fast presets are made, never which (a job in the middle of a block draws the whole block
and takes its part; a process keeps its last few blocks).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from farm.config import RunSpec
from farm.params.label import Label
from farm.params.sampler import STREAM_WAVETABLES, rng_for, synthetic_block
from farm.params.tiers import TierParams

if TYPE_CHECKING:
    from farm.presets.library import Library


def job_presets(spec: RunSpec, job: int, span: tuple[int, int] | None = None) -> range:
    """The global preset indices of job ``job``: its ``span`` (first, presets) when the
    coordinator gave it one, else ``job * batch_size`` to ``(job + 1) * batch_size - 1``."""
    if span is not None:
        return range(span[0], span[0] + span[1])
    b = spec.batch_size
    return range(job * b, (job + 1) * b)


def sample_job(
    spec: RunSpec,
    tp: TierParams,
    job: int,
    library: Library | None = None,
    span: tuple[int, int] | None = None,
) -> list[Label]:
    """The presets of job ``job`` (:func:`job_presets`, :func:`sample_presets`)."""
    return sample_presets(spec, tp, job_presets(spec, job, span), library)


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
    labels = synthetic_block(spec, tp, k)
    if spec.sources.catalog:
        assert library is not None
        draws = rng_for(spec.seed, k, STREAM_WAVETABLES).integers(
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
