"""A run's life on the coordinator side: create and enqueue, follow, resume, cancel.

The workers drive a run forward by themselves (each finished job tops the queue up and the
job that completes the prefix triggers the collector), so a detached run finishes without
this process; the workers' supervisor sends lost jobs again. Following adds the same
supervision for the followed run, rides out a broker restart, and prints progress.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable

import redis

from coordinator.broker import Sender
from coordinator.ledger import (
    CANCELLED,
    DONE,
    FAILED,
    FINAL_STATES,
    Ledger,
)
from coordinator.redis_errors import translate_errors
from coordinator.status import RunStatus
from coordinator.supervisor import supervise
from farm.config import Faults, RunSpec
from farm.errors import BrokerError, DiskFullError, FarmError, RunFailedError, RunStateError
from farm.settings import FarmSettings

#: Seconds between two looks at the ledger while following a run (a status is one pipelined
#: round trip; 0.5 s added 0.25 s on average to every run's end).
POLL_S = 0.2


def new_run_id(spec: RunSpec) -> str:
    """``t{tier}-{YYYYmmdd-HHMMSS}-{4 hex}``: sortable, readable in Flower, path-safe."""
    return f"t{spec.tier}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


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
    fingerprint: str = "",
    lost_after_s: float = 40.0,
    workers: int = 0,
) -> None:
    """Create the run in the ledger and send its first jobs.

    Args:
        fingerprint: the registry fingerprint every worker must have.
        lost_after_s: the run's heartbeat limit (shown by ``farm status``).
        workers: worker processes known to serve the run (an embedded run's local
            workers, or those stamped on the broker; 0: none known).
    """
    ledger.create(
        spec,
        output=output,
        window=window,
        keep_shards=keep_shards,
        faults=faults,
        fingerprint=fingerprint,
        lost_after_s=lost_after_s,
        workers=workers,
    )
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
    on_note: Callable[[str], None] | None = None,
    node: str = "follower",
) -> RunStatus:
    """Watch a run to its end (done, failed or cancelled), supervising it meanwhile.

    The workers supervise runs by themselves (:mod:`coordinator.supervisor`); a follower
    makes the same passes for its own run, so an embedded run needs nothing else. A lost
    broker is retried with backoff for ``settings.broker_retry_s`` before giving up.

    Args:
        ledger: the run.
        sender: to re-send jobs.
        settings: the liveness and retry settings.
        on_status: called with every snapshot (progress bars).
        alive: returns why local workers stopped, or None while they run.
        on_note: called with one line when the broker is lost or back.
        node: this follower's name (holder of the supervisor lock).

    Returns:
        The final snapshot.

    Raises:
        RunFailedError: the run failed (the reason is in the message).
        BrokerError: the broker stayed away past the retry time (the message says how
            to resume).
        DiskFullError: the broker cannot write its append-only file.
        FarmError: the local workers died.
    """
    note = on_note or (lambda _line: None)
    last_watch = time.monotonic()
    lost_since: float | None = None
    backoff = POLL_S
    while True:
        try:
            st = ledger.status()
            if time.monotonic() - last_watch > settings.supervise_s:
                last_watch = time.monotonic()
                if st.state not in FINAL_STATES:
                    supervise(ledger.r, sender, settings, node=node, only=st.run_id)
                check_broker_disk(ledger.r, st.run_id)
        except BrokerError as e:
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                note(f"lost the broker ({e}); retrying for {settings.broker_retry_s:.0f}s")
            if now - lost_since > settings.broker_retry_s:
                raise BrokerError(
                    f"{e}; gave up after {settings.broker_retry_s:.0f}s. The run is kept: "
                    f"continue it with: farm resume {ledger.run_id}"
                ) from e
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        if lost_since is not None:
            note(f"the broker is back after {time.monotonic() - lost_since:.0f}s")
            lost_since, backoff = None, POLL_S
        if on_status is not None:
            on_status(st)
        if st.state in FINAL_STATES:
            if st.state == FAILED:
                raise RunFailedError(f"run {st.run_id} failed: {st.error}")
            return st
        why = alive() if alive is not None else None
        if why is not None:
            raise FarmError(f"{why}; the run is kept: farm resume {st.run_id} continues it")
        time.sleep(POLL_S)


def check_broker_disk(client: redis.Redis, run_id: str) -> None:
    """Raise when the broker cannot write its append-only file (its disk is full): the run
    cannot move until there is space, and nothing would say so.

    Raises:
        DiskFullError: Redis reports a failed append-only (or snapshot) write.
    """
    with translate_errors():
        info = client.info("persistence")
    if info.get("aof_last_write_status", "ok") != "ok" or (
        info.get("rdb_last_bgsave_status", "ok") != "ok" and not info.get("aof_enabled")
    ):
        where = info.get("aof_filename") or "its data folder"
        raise DiskFullError(
            f"the broker cannot write {where} (disk full on the Redis host?); the run is "
            f"paused: free space, then `farm resume {run_id}` finishes it"
        )


def describe(st: RunStatus) -> str:
    """One progress line: rows, rate, ETA, jobs, acceptance, rejections by reason."""
    eta = "-" if math.isinf(st.eta) else f"{st.eta:.0f}s"
    rej = " ".join(f"{k}={v}" for k, v in st.rejections.items())
    stall = ""
    if st.stalled:
        stall = f"  STALLED: no job finished for {st.idle_s:.0f}s"
        if st.silent:
            stall += f", {len(st.silent)} job(s) without a heartbeat (being sent again)"
    if st.silent_workers:
        stall += f"  silent workers (frozen or lost): {' '.join(st.silent_workers)}"
    if st.resent:
        stall += f"  resent {st.resent}"
    if st.kind == "weights":
        return (
            f"{st.accepted}/{st.n} base presets  {st.rate:.3f}/s  ETA {eta}  jobs "
            f"{st.jobs_done} done {st.outstanding} out  {st.renders} renders"
            + (f"  unusable bases: {rej}" if rej else "")
            + stall
        )
    return (
        f"{st.accepted}/{st.n} rows  {st.rate:.2f} rows/s  ETA {eta}  jobs {st.jobs_done} "
        f"done {st.outstanding} out  accepted {st.acceptance:.0%} of {st.renders} renders"
        + (f"  {rej}" if rej else "")
        + stall
    )
