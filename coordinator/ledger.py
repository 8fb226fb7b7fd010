"""A run's ledger in Redis: the run's life cycle (create, state changes, failure, resume)
and its status, over the job records of :class:`coordinator.ledger_jobs.JobLedger`."""

from __future__ import annotations

import time
from typing import Any

import redis

from coordinator.ledger_jobs import (
    ACTIVE_KEY,
    ALL_STATES,
    CANCELLED,
    COLLECTING,
    DONE,
    FAILED,
    FINAL_STATES,
    RUNNING,
    RUNS_KEY,
    Advance,
    JobLedger,
    check_run_id,
)
from coordinator.redis_errors import translate_errors
from coordinator.status import RunStatus
from farm.config import Faults, RunSpec
from farm.errors import RunNotFoundError, UsageError
from farm.jobs.kinds import DATASET, kind_of

# The states and helpers live with the job records; importers know them from here.
__all__ = [
    "ACTIVE_KEY",
    "ALL_STATES",
    "CANCELLED",
    "COLLECTING",
    "DONE",
    "FAILED",
    "FINAL_STATES",
    "RUNNING",
    "RUNS_KEY",
    "Advance",
    "JobLedger",
    "Ledger",
    "active_runs",
    "check_run_id",
    "list_runs",
]


class Ledger(JobLedger):
    """One run's record in Redis (see :mod:`coordinator.ledger_jobs` for its keys)."""

    # -- life cycle ---------------------------------------------------------------------

    def create(
        self,
        spec: RunSpec,
        *,
        output: str,
        window: int,
        keep_shards: bool,
        faults: Faults | None = None,
        fingerprint: str = "",
        lost_after_s: float = 40.0,
        workers: int = 0,
    ) -> None:
        """Store a new run (state ``running``, nothing sent yet).

        Args:
            fingerprint: the registry fingerprint the labels must index; a worker whose
                vita gives another one refuses the run (empty: not checked).
            workers: worker processes known to serve the run before any takes a job (an
                embedded run's local workers, or those stamped on the broker:
                :mod:`coordinator.nodes`; 0: none known).

        Raises:
            UsageError: a run with this id exists.
        """
        now = time.time()
        meta: dict[Any, Any] = {
            "spec": spec.to_json(),
            "output": output,
            "state": RUNNING,
            "n": spec.n,
            "tier": spec.tier,
            "window": window,
            "per_job": spec.batch_size * spec.render.notes_per_preset,
            "batch": spec.batch_size,
            # Dataset jobs shrink near the end (coordinator/lua/advance.lua): the last
            # jobs are spread over about window / 2 workers (2 jobs out per local worker).
            "tail": max(1, window // 2) if kind_of(spec) is DATASET else 0,
            # Worker processes known to serve the run before any took a job (an embedded
            # run's local workers, or those stamped on the broker): its first jobs are
            # shared among them.
            "known_workers": workers,
            "keep_shards": int(keep_shards),
            "faults": (faults or Faults()).model_dump_json(),
            "kind": kind_of(spec).name,
            "created": now,
            "started": now,
            "rows_at_start": 0,
            "updated": now,
            "error": "",
            "fingerprint": fingerprint,
            "lost_after_s": lost_after_s,
        }
        with translate_errors():
            if not self.r.hsetnx(self.k["meta"], "state", RUNNING):
                raise UsageError(f"run {self.run_id} exists")
            self.r.hset(self.k["meta"], mapping=meta)
            self.r.zadd(RUNS_KEY, {self.run_id: now})
            self.r.sadd(ACTIVE_KEY, self.run_id)

    def exists(self) -> bool:
        """True when the run is in the ledger."""
        with translate_errors():
            return bool(self.r.exists(self.k["meta"]))

    def require(self) -> Ledger:
        """Self, or raise RunNotFoundError."""
        if not self.exists():
            raise RunNotFoundError(f"no run {self.run_id!r} on this broker (see `farm status`)")
        return self

    def meta(self) -> dict[str, str]:
        """The run's meta hash."""
        with translate_errors():
            return dict(self.r.hgetall(self.k["meta"]))  # type: ignore[arg-type]

    def spec(self) -> RunSpec:
        """The run's spec."""
        return RunSpec.from_json(self.meta()["spec"])

    def faults(self) -> Faults:
        """The run's fault injection (none for a normal run)."""
        raw = self.meta().get("faults")
        return Faults.model_validate_json(raw) if raw else Faults()

    def set_state(self, state: str, **fields: Any) -> None:
        """Set the state (and extra meta fields) from whatever state the run is in."""
        self.move(state, only_from=ALL_STATES, **fields)

    def fail(self, error: str) -> bool:
        """Fail a running or collecting run with its reason (a final state stays)."""
        return self.move(FAILED, only_from=(RUNNING, COLLECTING), error=error[:2000])

    def restart(self) -> None:
        """Back to ``running`` after an interruption (resume), with a fresh rate clock."""
        with translate_errors():
            total = int(self.r.hget(self.k["ctr"], "total_rows") or 0)
            self.r.delete(self.k["beat"], self.k["running"])
        self.set_state(RUNNING, started=time.time(), rows_at_start=total, error="")

    # -- reading ----------------------------------------------------------------------------

    def status(self) -> RunStatus:
        """A snapshot of the run."""
        with translate_errors():
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.k["meta"])
            pipe.hgetall(self.k["ctr"])
            pipe.hgetall(self.k["rej"])
            pipe.hlen(self.k["sent"])
            pipe.smembers(self.k["workers"])
            pipe.hgetall(self.k["beat"])
            pipe.hgetall(self.k["running"])
            pipe.time()
            meta, ctr, rej, outstanding, workers, beats, running, server = pipe.execute()
        if not meta:
            raise RunNotFoundError(f"no run {self.run_id!r} on this broker (see `farm status`)")
        now = server[0] + server[1] / 1e6
        return RunStatus.from_hashes(
            self.run_id, meta, ctr, rej, int(outstanding), workers, beats, running, now
        )


def active_runs(client: redis.Redis) -> list[str]:
    """Runs that are running or collecting."""
    with translate_errors():
        return sorted(str(r) for r in client.smembers(ACTIVE_KEY))


def list_runs(client: redis.Redis) -> list[str]:
    """Every run id on the broker, oldest first."""
    with translate_errors():
        return [str(r) for r in client.zrange(RUNS_KEY, 0, -1)]
