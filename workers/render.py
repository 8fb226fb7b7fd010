"""The body of ``farm.render``: one job rendered, flushed to the shard, then recorded.

Order matters for "nothing lost, nothing counted twice": the ledger hears of a job only
after its rows are flushed to this process's shard, and records each job once (a second
delivery's rows stay in a shard, unreferenced, and the collector never reads them).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence

from coordinator.ledger import COLLECTING, RUNNING, Ledger
from farm.config import RunSpec
from farm.disk import disk_full, estimate_bytes, is_disk_full
from farm.errors import (
    BrokerError,
    EnvironmentMismatchError,
    FarmError,
    RunFailedError,
    ShardBusyError,
)
from farm.jobs.kinds import DATASET, WEIGHTS, kind_of
from farm.jobs.plan import job_presets, sample_job
from farm.jobs.render import injected_crashes, render_job
from farm.params.tiers import TierParams
from farm.paths import shard_dir
from farm.render.engine import RenderEngine
from farm.render.validate import Reason
from farm.storage.shard import Row, ShardWriter
from workers.context import WorkerContext
from workers.liveness import beating

log = logging.getLogger("farm.worker")

#: How long a finished job waits for its shard while a collector reads it.
SHARD_WAIT_S = 300.0


def process_job(ctx: WorkerContext, run_id: str, job: int) -> str:
    """Render ``job`` of ``run_id`` (unless done, or the run is not running) and record it,
    beating while it runs.

    An error that is not a preset's fault (this worker's vita differs from the run's, a
    codec it lacks, a data folder it cannot write, a full disk, a bug) fails the run at
    once with the reason, instead of sending the job round the cluster; a lost broker
    does not (the supervisor sends the job again once it is back).

    Returns:
        A short line for the worker log (and Flower).

    Raises:
        RunFailedError: the run was failed because of this job (Flower shows it).
        BrokerError: the broker went away.
    """
    ledger = ctx.ledger(run_id)
    state, attempt, span = ledger.start_job(job, ctx.name)
    if state != "ok":
        return f"job {job} skipped: {state}"
    try:
        with beating(lambda: ledger.beat(job), ctx.settings.heartbeat_s):
            return _process(ctx, ledger, job, attempt, span)
    except BrokerError:
        raise
    except Exception as e:
        ctx.new_shard()  # whatever this job left in the shard is not appended to again
        reason = _reason(ctx, ledger, e)
        log.error("run %s job %d: %s", run_id, job, reason)
        try:
            ledger.fail(reason)
        except FarmError as why:  # the broker itself is full or gone: the follower says so
            log.error("run %s: cannot record the failure: %s", run_id, why)
        raise RunFailedError(f"run {run_id} failed: {reason}") from e


def _reason(ctx: WorkerContext, ledger: Ledger, e: BaseException) -> str:
    """One line on why a job could not be done, for ``farm status`` and the submitter."""
    if is_disk_full(e):
        spec = ctx.spec(ledger)
        try:
            rows = max(spec.n - ledger.status().total_rows, 0)
        except FarmError:
            rows = spec.n
        need = estimate_bytes(spec, rows=rows)
        where = shard_dir(ctx.settings.data_dir, ledger.run_id)
        return str(disk_full(where, need, ledger.run_id))
    if isinstance(e, OSError) and e.filename:
        return f"worker {ctx.name} cannot write {e.filename}: {e.strerror or e}"
    what = str(e) if isinstance(e, FarmError) else f"{type(e).__name__}: {e}"
    return f"worker {ctx.name}: {what}"


def _process(
    ctx: WorkerContext, ledger: Ledger, job: int, attempt: int, span: tuple[int, int] | None
) -> str:
    run_id = ledger.run_id
    spec = ctx.spec(ledger)
    faults = ctx.faults(ledger)
    _check_fingerprint(ctx, ledger)
    t0 = time.monotonic()
    presets = job_presets(spec, job, span)
    if attempt > ctx.settings.max_attempts:
        # A poison job (its worker process died every time): its presets are recorded as
        # CRASH so the run can finish without it.
        per = spec.render.notes_per_preset
        notes = len(presets) * per
        log.warning("job %d of %s: attempt %d > cap, recorded as CRASH", job, run_id, attempt)
        advance = ledger.finish_job(
            job,
            rows=0,
            renders=notes,
            rejections={Reason.CRASH.value: notes},
            worker=ctx.name,
            by_preset={i: {Reason.CRASH.value: per} for i in range(len(presets))},
            span=span,
        )
        ctx.sender.dispatch(run_id, advance)
        return f"job {job} abandoned after {attempt - 1} attempts"
    if job in faults.kill_jobs:
        os.kill(os.getpid(), signal.SIGKILL)  # injected fault: a worker killed from outside
    engine = ctx.engine(spec)
    return JOBS[kind_of(spec).name](ctx, ledger, spec, engine, job, t0, span)


def _dataset_job(
    ctx: WorkerContext,
    ledger: Ledger,
    spec: RunSpec,
    engine: RenderEngine,
    job: int,
    t0: float,
    span: tuple[int, int] | None,
) -> str:
    """A dataset job: its presets rendered, the rows flushed to this process's shard, then
    recorded."""
    run_id = ledger.run_id
    first = job_presets(spec, job, span).start
    crash = injected_crashes(spec, job, ctx.faults(ledger).crash_fraction, first)
    labels = sample_job(spec, engine.tp, job, ctx.library(spec), span)
    result = render_job(engine, spec, job, labels, crash=crash, first=first)
    placed = _write(ctx, ledger, spec, engine.tp, result.rows)
    if placed is None:
        return f"job {job} dropped: the run is {ledger.state()}"
    shard, start = placed
    advance = ledger.finish_job(
        job,
        rows=len(result.rows),
        renders=result.renders,
        rejections={str(k): v for k, v in result.rejections.items()},
        shard=shard,
        start=start,
        worker=ctx.name,
        seconds=time.monotonic() - t0,
        by_preset={i: {str(k): v for k, v in c.items()} for i, c in result.by_preset.items()},
        hashes=[r.audio_hash for r in result.rows],
        span=span,
    )
    ctx.sender.dispatch(run_id, advance)
    dup = " (duplicate delivery, ignored)" if advance.duplicate else ""
    return f"job {job}: {len(result.rows)} rows, {result.renders} renders{dup}"


def _check_fingerprint(ctx: WorkerContext, ledger: Ledger) -> None:
    """Refuse a run whose labels index another registry (another vita version)."""
    wanted = ctx.run_fingerprint(ledger)
    mine = ctx.registry.fingerprint
    if wanted and wanted != mine:
        raise EnvironmentMismatchError(
            f"its vita registry is {mine[:12]} but the run's is {wanted[:12]} (another vita "
            "version?): install the run's versions on every worker"
        )


def _weights_job(
    ctx: WorkerContext,
    ledger: Ledger,
    spec: RunSpec,
    engine: RenderEngine,
    job: int,
    t0: float,
    span: tuple[int, int] | None,
) -> str:
    """An importance job: one base preset measured; its result goes to the ledger (small
    JSON, no shard), and a base that is silent or crashes is a rejection (topped up)."""
    from farm.jobs.weights import fix_label, measure_base

    assert spec.weights is not None
    label = sample_job(spec, engine.tp, job, ctx.library(spec), span)[0]
    label = fix_label(label, engine.tp, spec.weights.fixed)
    result, reason, renders = measure_base(engine, spec, label)
    if result is not None:
        ledger.put_result(job, result)
    advance = ledger.finish_job(
        job,
        rows=int(result is not None),
        renders=renders,
        rejections={} if reason is None else {reason.value: 1},
        worker=ctx.name,
        seconds=time.monotonic() - t0,
    )
    ctx.sender.dispatch(ledger.run_id, advance)
    what = "measured" if reason is None else f"rejected ({reason.value})"
    return f"job {job}: base preset {what}, {renders} renders"


def _write(
    ctx: WorkerContext, ledger: Ledger, spec: RunSpec, tp: TierParams, rows: Sequence[Row]
) -> tuple[str | None, int] | None:
    """Append and flush rows to this process's shard: (shard name, first row), or None
    when the run stopped running while the shard was busy."""
    if not rows:
        return None, 0
    folder = shard_dir(ctx.settings.data_dir, ledger.run_id)
    mine = folder / f"{ctx.name}.h5"
    if mine in ctx.shards_written and not mine.exists():
        # A collector moved it into a parted dataset's parts: a new file of that name would
        # be a second shard of one name, and the ledger's (shard, row) of the moved one's
        # jobs would point into it when the run is collected again.
        ctx.new_shard()
    name = f"{ctx.name}.h5"
    deadline = time.monotonic() + SHARD_WAIT_S
    while True:
        # Once the run is done (or cancelled) its shard folder is gone: nothing to add.
        if ledger.state() not in (RUNNING, COLLECTING):
            return None
        folder.mkdir(parents=True, exist_ok=True)
        try:
            writer = ShardWriter(
                folder / name,
                spec,
                tp,
                ctx.registry.fingerprint,
                atomic=False,
                append=True,
            )
            break
        except ShardBusyError:
            # The collector holds it; it ends with the run done, or gives the lock back.
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
    try:
        start = writer.rows
        writer.append(rows)
        writer.flush()
    except BaseException:
        writer.abort()  # closing after a failed write fails too, and would hide why
        raise
    writer.close()
    ctx.shards_written.add(folder / name)
    if spec.part_rows and writer.rows >= spec.part_rows:
        ctx.new_shard()  # this shard is a full part of a parted dataset
    return name, start


#: The job function of each kind of run (:mod:`farm.jobs.kinds`): (context, ledger, spec,
#: engine, job, start time, span) -> a line for the log.
JOBS: dict[
    str,
    Callable[
        [WorkerContext, Ledger, RunSpec, RenderEngine, int, float, tuple[int, int] | None], str
    ],
] = {
    DATASET.name: _dataset_job,
    WEIGHTS.name: _weights_job,
}
