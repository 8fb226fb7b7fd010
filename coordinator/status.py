"""A snapshot of one run (``farm status``, progress bars, the JSON of ``--json``): what
the ledger knows, with the rates and ETA derived from it."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunStatus:
    """A snapshot of one run, for ``farm status`` and progress bars."""

    run_id: str
    state: str
    n: int
    accepted: int
    total_rows: int
    jobs_done: int
    outstanding: int
    renders: int
    rejections: dict[str, int]
    workers: list[str]
    created: float
    started: float
    rows_at_start: int
    output: str
    error: str
    tier: int
    finished: float = 0.0
    retries: int = 0
    """Deliveries of a job after its first (a worker process died, a stale job re-sent)."""
    kind: str = "dataset"
    """``dataset`` (rows) or ``weights`` (``farm compute-weights``: one base preset a row)."""
    resent: int = 0
    """Jobs sent again because their worker went silent or their message was lost."""
    silent: list[int] = field(default_factory=list)
    """Running jobs whose worker has sent no heartbeat for the run's ``lost_after_s``
    (killed, frozen or cut off: they are being sent again)."""
    silent_workers: list[str] = field(default_factory=list)
    """The worker processes of the silent jobs (frozen, killed or cut off)."""
    running: dict[str, str] = field(default_factory=dict)
    """Job -> the worker process running it."""
    idle_s: float = 0.0
    """Seconds since a job last finished (or the run started): how long progress stopped."""
    job_s: float = 0.0
    """Mean seconds of a finished job (0 before the first)."""
    lost_after_s: float = 40.0
    """The run's heartbeat limit."""
    collect_s: float | None = None
    """Seconds the collector took to write the output (None until it has)."""

    @property
    def stalled(self) -> bool:
        """Running, work outstanding, and no job finished for longer than a job should
        take (``lost_after_s`` or 3 mean jobs): its ETA would be a lie."""
        if self.state != "running":
            return False
        return bool(self.silent) or self.idle_s > max(self.lost_after_s, 3 * self.job_s)

    @property
    def elapsed(self) -> float:
        """Seconds since the run (or its last resume) started, to its end once done."""
        return max((self.finished or time.time()) - self.started, 1e-9)

    @property
    def rate(self) -> float:
        """Accepted rows per second since the run (or its last resume) started."""
        return max(self.total_rows - self.rows_at_start, 0) / self.elapsed

    @property
    def eta(self) -> float:
        """Seconds to the target at the current rate (inf before the first row, and while
        the run is stalled)."""
        rate = self.rate
        if rate <= 0 or self.stalled:
            return float("inf")
        return max(self.n - self.total_rows, 0) / rate

    @property
    def acceptance(self) -> float:
        """Accepted notes / rendered notes."""
        return self.total_rows / self.renders if self.renders else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with rate and ETA)."""
        out = dict(self.__dict__)
        out.update(
            rate=self.rate,
            eta=None if self.eta == float("inf") else self.eta,
            stalled=self.stalled,
        )
        return out

    @classmethod
    def from_hashes(
        cls,
        run_id: str,
        meta: Mapping[str, str],
        ctr: Mapping[str, str],
        rej: Mapping[str, str],
        outstanding: int,
        workers: Iterable[str],
        beats: Mapping[str, str],
        running: Mapping[str, str],
        now: float,
    ) -> RunStatus:
        """The status of a run from its ledger hashes, at the broker's time ``now``."""
        return cls(
            run_id=run_id,
            state=meta.get("state", ""),
            n=int(meta["n"]),
            accepted=min(int(ctr.get("prefix_rows", 0)), int(meta["n"])),
            total_rows=int(ctr.get("total_rows", 0)),
            jobs_done=int(ctr.get("done_jobs", 0)),
            outstanding=int(outstanding),
            renders=int(ctr.get("renders", 0)),
            rejections={k: int(v) for k, v in sorted(rej.items())},
            workers=sorted(workers),
            created=float(meta.get("created", 0)),
            started=float(meta.get("started", meta.get("created", 0))),
            rows_at_start=int(meta.get("rows_at_start", 0)),
            output=meta.get("output", ""),
            error=meta.get("error", ""),
            tier=int(meta.get("tier", 0)),
            kind=meta.get("kind", "dataset"),
            finished=float(meta.get("finished", 0)),
            collect_s=float(meta["collect_s"]) if meta.get("collect_s") else None,
            retries=int(ctr.get("retries", 0)),
            running=dict(running),
            **_liveness(meta, ctr, beats, running, now),
        )


def _liveness(
    meta: Mapping[str, str],
    ctr: Mapping[str, str],
    beats: Mapping[str, str],
    running: Mapping[str, str],
    now: float,
) -> dict[str, Any]:
    """The status fields that say whether a run is moving (server clock)."""
    lost_after = float(meta.get("lost_after_s", 40.0))
    done_jobs = int(ctr.get("done_jobs", 0))
    since = max(float(ctr.get("last_done", 0)), float(meta.get("started", 0)))
    silent = sorted(int(j) for j, t in beats.items() if now - float(t) > lost_after)
    return {
        "resent": int(ctr.get("resent", 0)),
        "silent": silent,
        "silent_workers": sorted({running[str(j)] for j in silent if str(j) in running}),
        "idle_s": max(now - since, 0.0),
        "job_s": float(ctr.get("job_seconds", 0)) / done_jobs if done_jobs else 0.0,
        "lost_after_s": lost_after,
    }
