"""A run's life on the coordinator side: create and enqueue, follow, resume, cancel.

The workers drive a run forward by themselves (each finished job tops the queue up and the
job that completes the prefix triggers the collector), so a detached run finishes without
this process. Following adds a watchdog: outstanding jobs that went stale (a lost message,
a worker killed from outside) are sent again, and an empty queue is topped up.
"""

from __future__ import annotations

import math
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.broker import Sender
from coordinator.ledger import (
    CANCELLED,
    DONE,
    FAILED,
    FINAL_STATES,
    RUNNING,
    Ledger,
    RunStatus,
)
from farm.config import FarmSettings, Faults, RunSpec
from farm.errors import DiskSpaceError, FarmError, RunStateError

#: Seconds between two looks at the ledger while following a run.
POLL_S = 0.5
#: Seconds between two watchdog passes (stale jobs, empty queue).
WATCHDOG_S = 5.0


def new_run_id(spec: RunSpec) -> str:
    """``t{tier}-{YYYYmmdd-HHMMSS}-{4 hex}``: sortable, readable in Flower, path-safe."""
    return f"t{spec.tier}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def estimate_bytes(spec: RunSpec) -> int:
    """Disk a run needs at its peak: the shards and the final file side by side."""
    sample = 2 if spec.compression.audio_dtype == "float16" else 4
    row = 2 * spec.render.samples * sample + 4 * 448 + 64 * 4
    if spec.tier == 3:
        row += 4 * 32 * 428 * 4 // 50  # the modulation matrix, mostly zeros, gzip-1
    return int(spec.n * row * 2.1)


def check_disk(spec: RunSpec, data_dir: str | Path) -> int:
    """Refuse a run larger than the data folder's free space; returns the estimate.

    Raises:
        DiskSpaceError: the estimate exceeds the free space.
    """
    need = estimate_bytes(spec)
    free = shutil.disk_usage(Path(data_dir)).free
    if need > free:
        raise DiskSpaceError(
            f"the run needs about {need / 1e9:.1f} GB (shards + final file, uncompressed) "
            f"but {data_dir} has {free / 1e9:.1f} GB free"
        )
    return need


def window_for(settings: FarmSettings, local_workers: int | None) -> int:
    """Jobs outstanding at once: the setting, else 2 per local worker, else 512."""
    if settings.window:
        return settings.window
    return 2 * local_workers if local_workers else 512


def submit(
    ledger: Ledger,
    sender: Sender,
    spec: RunSpec,
    *,
    output: str,
    window: int,
    keep_shards: bool = False,
    faults: Faults | None = None,
) -> None:
    """Create the run in the ledger and send its first jobs."""
    ledger.create(spec, output=output, window=window, keep_shards=keep_shards, faults=faults)
    sender.dispatch(ledger.run_id, ledger.top_up())


def resume(ledger: Ledger, sender: Sender) -> None:
    """Put a stopped run back to work: outstanding jobs sent again, the queue topped up,
    the collector triggered if the rows are all there. Done jobs are never rendered again.

    Raises:
        RunStateError: the run is already done.
    """
    state = ledger.require().state()
    if state == DONE:
        raise RunStateError(f"run {ledger.run_id} is done ({ledger.meta().get('output')})")
    ledger.restart()
    sender.render(ledger.run_id, ledger.outstanding())
    sender.dispatch(ledger.run_id, ledger.top_up())


def cancel(ledger: Ledger) -> None:
    """Stop handing out jobs (running ones finish; shards stay, so it can be resumed).

    Raises:
        RunStateError: the run is already done.
    """
    if ledger.require().state() == DONE:
        raise RunStateError(f"run {ledger.run_id} is done; nothing to cancel")
    ledger.set_state(CANCELLED)


def follow(
    ledger: Ledger,
    sender: Sender,
    settings: FarmSettings,
    *,
    on_status: Callable[[RunStatus], None] | None = None,
    alive: Callable[[], str | None] | None = None,
) -> RunStatus:
    """Watch a run to its end (done, failed or cancelled), re-sending stale jobs.

    Args:
        ledger: the run.
        sender: to re-send jobs.
        settings: the stale-job age.
        on_status: called with every snapshot (progress bars).
        alive: returns why local workers stopped, or None while they run.

    Returns:
        The final snapshot.

    Raises:
        FarmError: the run failed, or the local workers died.
    """
    last_watch = time.monotonic()
    while True:
        st = ledger.status()
        if on_status is not None:
            on_status(st)
        if st.state in FINAL_STATES:
            if st.state == FAILED:
                raise FarmError(f"run {st.run_id} failed: {st.error}")
            return st
        why = alive() if alive is not None else None
        if why is not None:
            raise FarmError(why)
        if time.monotonic() - last_watch > WATCHDOG_S:
            last_watch = time.monotonic()
            if st.state == RUNNING:
                stale = ledger.stale_jobs(settings.stale_after_s)
                if stale:
                    sender.render(st.run_id, stale)
                if st.outstanding == 0:
                    sender.dispatch(st.run_id, ledger.top_up())
        time.sleep(POLL_S)


def describe(st: RunStatus) -> str:
    """One progress line: rows, rate, ETA, jobs, acceptance, rejections by reason."""
    eta = "-" if math.isinf(st.eta) else f"{st.eta:.0f}s"
    rej = " ".join(f"{k}={v}" for k, v in st.rejections.items())
    if st.kind == "weights":
        return (
            f"{st.accepted}/{st.n} base presets  {st.rate:.3f}/s  ETA {eta}  jobs "
            f"{st.jobs_done} done {st.outstanding} out  {st.renders} renders"
            + (f"  unusable bases: {rej}" if rej else "")
        )
    return (
        f"{st.accepted}/{st.n} rows  {st.rate:.2f} rows/s  ETA {eta}  jobs {st.jobs_done} "
        f"done {st.outstanding} out  accepted {st.acceptance:.0%} of {st.renders} renders"
        + (f"  {rej}" if rej else "")
    )
