"""One job of a run, rendered and validated: the plain function behind every render task.

A job is ``spec.batch_size`` presets; job ``j`` is a pure function of the spec and ``j``
(:func:`farm.jobs.plan.sample_job`), so any lost job can be re-created anywhere.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from farm.config import RunSpec
from farm.jobs.plan import block_key, job_presets
from farm.params.label import Label, Modulation
from farm.params.sampler import rng_for
from farm.render.engine import Outcome, RenderEngine
from farm.render.features import logmel, stored_channels
from farm.render.performance import performances
from farm.render.validate import Reason, validate
from farm.storage.compression import audio_dtype
from farm.storage.integrity import audio_digest
from farm.storage.shard import Row

_OUTCOME_REASON = {
    Outcome.CRASH: Reason.CRASH,
    Outcome.TIMEOUT: Reason.TIMEOUT,
    Outcome.ERROR: Reason.INVALID,
    Outcome.SHAPE: Reason.SHAPE,
}


@dataclass
class JobResult:
    """Accepted rows of one job (canonical order) and rejected notes counted by reason,
    also per preset (index in the job) so a dataset counts exactly the presets it holds."""

    job: int
    rows: list[Row] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    by_preset: dict[int, Counter[str]] = field(default_factory=dict)

    def reject(self, preset: int, reason: str, count: int = 1) -> None:
        """Count ``count`` notes of ``preset`` rejected for ``reason``."""
        self.rejections[reason] += count
        self.by_preset.setdefault(preset, Counter())[reason] += count

    @property
    def renders(self) -> int:
        """Notes attempted (accepted + rejected)."""
        return len(self.rows) + sum(self.rejections.values())


def render_job(
    engine: RenderEngine,
    spec: RunSpec,
    job: int,
    labels: list[Label],
    *,
    skip: Callable[[Label], bool] | None = None,
    crash: Callable[[int], bool] | None = None,
    first: int | None = None,
) -> JobResult:
    """Render every preset of a job at every note and validate each note.

    Args:
        engine: a render engine built for ``spec.render`` and the spec's tier.
        spec: the run spec.
        job: the job index (stored in each row's key).
        labels: the job's presets, in order.
        skip: returns True for a preset not to render (counted as DUPLICATE for each note).
        crash: fault injection: returns True for preset indices whose render must segfault
            vita for real (the label is given an unknown modulation destination).
        first: the global index of the job's first preset (default ``job * batch_size``;
            see :func:`farm.jobs.plan.job_presets`).
    """
    result = JobResult(job)
    shape = (spec.render.channels, spec.render.samples)
    per_preset = spec.render.notes_per_preset
    if first is None:
        first = job_presets(spec, job).start
    stored = audio_dtype(spec.compression)
    for i, label in enumerate(labels):
        # The row key is the preset's place among all presets, not in this job: the batch
        # size never shows in the data.
        g = first + i
        block, index = block_key(spec, g)
        unreadable = label.extra.get("unreadable")
        if unreadable:  # a streamed preset file vita cannot use: its reason, per note
            result.reject(i, f"FILE_{str(unreadable).upper()}", per_preset)
            continue
        if skip is not None and skip(label):
            result.reject(i, Reason.DUPLICATE, per_preset)
            continue
        inject = crash is not None and crash(i)
        if inject:
            label = _with_unknown_destination(label)
        played = performances(spec.render, spec.seed, g)
        for r in engine.render(label, played, allow_unknown_modulation=inject):
            if r.audio is None:
                result.reject(i, _OUTCOME_REASON[r.outcome])
                continue
            # What is checked, hashed and described is what the file will hold.
            audio = stored_channels(r.audio, spec.render)
            v = validate(audio, spec.validation, shape, spec.render.sample_rate)
            if v.reason is not None:
                result.reject(i, v.reason)
                continue
            result.rows.append(
                Row(
                    block,
                    index,
                    r.note,
                    label,
                    audio,
                    v.rms,
                    v.peak,
                    loudness=v.loudness,
                    dc=v.dc,
                    audio_hash=audio_digest(audio, stored),
                    velocity=r.velocity,
                    note_duration=r.note_duration,
                    features=_features(audio, spec, stored),
                )
            )
    return result


def _features(audio: np.ndarray, spec: RunSpec, stored: np.dtype[Any]) -> np.ndarray | None:
    """The row's features, from its audio as stored (float16 rounding included), so a
    reader recomputing them from the file gets the same values."""
    if spec.features is None:
        return None
    # As stored: a no-op for float32, float16's rounding otherwise (logmel reads float32).
    return logmel(np.asarray(audio, dtype=stored), spec.features, spec.render.sample_rate)


def injected_crashes(
    spec: RunSpec, job: int, fraction: float, first: int | None = None
) -> Callable[[int], bool] | None:
    """Fault injection: which presets of ``job`` (its first preset ``first``, default
    ``job * batch_size``) must segfault (about ``fraction`` of all), chosen by global
    preset index from the seed, so every worker, retry and batch size picks the same
    ones."""
    if fraction <= 0:
        return None
    if first is None:
        first = job_presets(spec, job).start

    def crash(preset: int) -> bool:
        block, index = block_key(spec, first + preset)
        return bool(_crash_draws(spec.seed, block, spec.sampling.block)[index] < fraction)

    return crash


@functools.lru_cache(maxsize=16)
def _crash_draws(seed: int, block: int, size: int) -> np.ndarray:
    return rng_for(seed, block, _CRASH_STREAM).random(size)


#: Sampler stream reserved for fault injection (the sampler's own streams are small).
_CRASH_STREAM = 99

#: Not in vita.get_modulation_destinations() (one of the old blocklist's names): connecting
#: it succeeds and the render segfaults, deterministically.
CRASH_DESTINATION = "chorus_voices"


def _with_unknown_destination(label: Label) -> Label:
    return replace(
        label, modulations=(*label.modulations, Modulation("lfo_1", CRASH_DESTINATION, 1.0))
    )
