"""A run in this process: sample, render with clean state, validate, write one file.

This is the farm's code path without the queue: the same jobs (:func:`sample_job`), the
same render function (:func:`render_job`) and the same writer. The distributed farm
renders the same jobs on many workers and merges; this renders them one after another.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from farm.config import MAX_BARREN_JOBS, RunSpec
from farm.errors import FarmError
from farm.jobs.plan import job_presets, sample_job
from farm.jobs.render import render_job
from farm.params.label import Label
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.presets.library import library_for
from farm.render.engine import RenderEngine
from farm.render.validate import Reason
from farm.storage.card import write_card
from farm.storage.merge import counted_rejections
from farm.storage.shard import ShardWriter

#: Jobs in a row with no accepted row before a run gives up (thresholds too strict, ...).


@dataclass
class Progress:
    """What a run has done so far (passed to the progress callback after every job)."""

    target: int
    accepted: int = 0
    valid: int = 0
    renders: int = 0
    jobs: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    card_error: str = ""
    """Why the dataset card could not be written (the dataset itself is complete)."""

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    @property
    def acceptance(self) -> float:
        """Notes that passed validation / notes rendered (rows past n are valid but dropped)."""
        return self.valid / self.renders if self.renders else 0.0


class _Dedup:
    """Skips a preset whose label hash was already rendered in this run."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, label: Label) -> bool:
        if label.hash in self.seen:
            return True
        self.seen.add(label.hash)
        return False


def generate(
    spec: RunSpec,
    out: Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    crash: Callable[[int, int], bool] | None = None,
    data_dir: Path | None = None,
) -> Progress:
    """Render ``spec.n`` accepted rows into ``out`` (written as ``out.tmp``, then renamed).

    Args:
        spec: the run.
        out: the final file path (checked by the caller).
        on_progress: called after every job.
        crash: fault injection: ``crash(job, preset)`` True makes that preset segfault vita.
        data_dir: the data folder whose store holds the spec's library (default: the
            output's folder).

    Returns:
        The final progress (rows, renders, rejections by reason, elapsed time).

    Raises:
        FarmError: ``MAX_BARREN_JOBS`` jobs in a row accepted nothing.
    """
    registry = get_registry()
    tp = tier_params(registry, spec.tier)
    engine = RenderEngine(tp, spec.render)
    progress = Progress(spec.n)
    dedup = _Dedup()
    barren = 0
    by_preset: dict[int, dict[str, int]] = {}
    heard: set[str] = set()
    last = -1
    try:
        library = library_for(spec.sources.library, out.parent if data_dir is None else data_dir)
        with ShardWriter(out, spec, tp, registry.fingerprint, library=library) as writer:
            while progress.accepted < spec.n:
                job = progress.jobs
                injected = None if crash is None else (lambda i, j=job: crash(j, i))
                result = render_job(
                    engine,
                    spec,
                    job,
                    sample_job(spec, tp, job, library),
                    skip=dedup,
                    crash=injected,
                )
                # As the ledger does: a row whose audio an earlier row has is left out.
                fresh = []
                for r in result.rows:
                    if r.audio_hash in heard:
                        i = r.job * spec.sampling.block + r.preset - job * spec.batch_size
                        result.reject(i, Reason.DUPLICATE_AUDIO)
                    else:
                        heard.add(r.audio_hash)
                        fresh.append(r)
                rows = fresh[: spec.n - progress.accepted]
                writer.append(rows)
                writer.flush()
                if rows:
                    last = rows[-1].job * spec.sampling.block + rows[-1].preset
                progress.accepted += len(rows)
                progress.valid += len(result.rows)
                progress.renders += result.renders
                progress.rejections.update(result.rejections)
                first = job_presets(spec, job).start
                by_preset.update({first + i: dict(c) for i, c in result.by_preset.items()})
                progress.jobs += 1
                barren = 0 if rows else barren + 1
                if on_progress is not None:
                    on_progress(progress)
                if barren >= MAX_BARREN_JOBS:
                    raise FarmError(
                        f"no row accepted in {barren} jobs ({progress.renders} renders, "
                        f"rejections {dict(progress.rejections)}); check the validation "
                        "thresholds and constraints"
                    )
            # As the farm's collector: count the presets the file covers, not the jobs.
            if library is not None:
                writer.unreadable = library.unreadable(by_preset, last)
            writer.close(*counted_rejections(spec, by_preset, last))
    finally:
        engine.close()
    try:
        write_card(out)
    except OSError as e:  # a full disk after the file was made: `farm card` writes it later
        progress.card_error = str(e)
    return progress
