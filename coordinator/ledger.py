"""A run's ledger in Redis: its spec, state, which jobs are out and done, and the counters.

Keys (``farm:run:{id}:...``): ``meta`` (hash: spec, output, state, n, window, ...),
``ctr`` (hash: next job, prefix, totals), ``sent`` (hash job -> time sent or started: the
outstanding jobs), ``done`` (hash job -> JSON detail: shard, first row, rows, rejections),
``rows`` (hash job -> rows), ``rej`` (hash reason -> count), ``attempts`` (hash),
``workers`` (set), ``collect`` (the once-only collector flag). ``farm:runs`` is a sorted
set of run ids by creation time.

Every decision that must be atomic across workers (record a job once, advance the prefix,
decide the top-up, trigger the collector once) is one Lua script, so Redis memory is
bounded by the window (outstanding jobs) plus one small entry per done job.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from farm.config import MAX_BARREN_JOBS, Faults, RunSpec
from farm.errors import BrokerError, DiskFullError, RunNotFoundError, UsageError
from farm.jobs.kinds import kind_of

RUNS_KEY = "farm:runs"
#: Runs that are running or collecting: what a supervisor looks after.
ACTIVE_KEY = "farm:active"
_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

#: States a run moves through; only ``running`` hands out jobs.
RUNNING, COLLECTING, DONE, CANCELLED, FAILED = (
    "running",
    "collecting",
    "done",
    "cancelled",
    "failed",
)
FINAL_STATES = (DONE, CANCELLED, FAILED)
ALL_STATES = (RUNNING, COLLECTING, DONE, CANCELLED, FAILED)

#: The ledger's atomic steps, as Lua scripts in ``coordinator/lua/`` (each run after
#: ``now.lua``, which reads the broker's clock).
_LUA = Path(__file__).with_name("lua")


def _script(name: str) -> str:
    return (_LUA / "now.lua").read_text() + (_LUA / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Advance:
    """What the caller must send after recording a job or topping up."""

    jobs: list[int] = field(default_factory=list)
    collect: bool = False
    duplicate: bool = False


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


def check_run_id(run_id: str) -> str:
    """A run id is lower-case letters, digits and dashes: it names a shard folder.

    Raises:
        UsageError: anything else (``..``, ``/``, spaces, too long).
    """
    if not _RUN_ID.match(run_id):
        raise UsageError(f"invalid run id {run_id!r}")
    return run_id


class Ledger:
    """One run's ledger.

    Args:
        client: a Redis client (``decode_responses=True``).
        run_id: the run.
    """

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self.r = client
        self.run_id = check_run_id(run_id)
        p = f"farm:run:{run_id}:"
        self.k = {
            name: p + name
            for name in (
                "meta",
                "ctr",
                "sent",
                "done",
                "rows",
                "rej",
                "attempts",
                "workers",
                "results",
                "beat",
                "running",
                "audio",
                "dups",
            )
        }
        self.k["collect"] = p + "collect"
        self.k["active"] = ACTIVE_KEY
        self._advance = client.register_script(_script("advance"))
        self._start = client.register_script(_script("start"))
        self._beat = client.register_script(_script("beat"))
        self._lost = client.register_script(_script("lost"))
        self._move = client.register_script(_script("move"))
        self._reclaim = client.register_script(_script("reclaim"))

    def _keys(self, *names: str) -> list[str]:
        return [self.k[n] for n in names]

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
    ) -> None:
        """Store a new run (state ``running``, nothing sent yet).

        Args:
            fingerprint: the registry fingerprint the labels must index; a worker whose
                vita gives another one refuses the run (empty: not checked).

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

    def state(self) -> str:
        """running, collecting, done, cancelled or failed ('' for an unknown run)."""
        with translate_errors():
            return str(self.r.hget(self.k["meta"], "state") or "")

    def move(self, to: str, *, only_from: Sequence[str], **fields: Any) -> bool:
        """Change the state (and extra meta fields) only when the run is in one of
        ``only_from``; True when it moved. Keeps the set of active runs in step."""
        with translate_errors():
            got = self._move(
                keys=[
                    self.k["meta"],
                    ACTIVE_KEY,
                    self.k["collect"],
                    self.k["sent"],
                    self.k["beat"],
                    self.k["running"],
                ],
                args=[json.dumps(list(only_from)), to, json.dumps(fields), self.run_id],
            )
        return str(got) == "ok"

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

    # -- jobs -----------------------------------------------------------------------------

    def top_up(self) -> Advance:
        """Claim the jobs to send now (bounded by the window and the rows still missing)."""
        return self._run_advance("topup")

    def start_job(self, job: int, worker: str) -> tuple[str, int]:
        """A worker starts ``job``: ('ok', attempt number) or (why to skip it, 0)."""
        with translate_errors():
            state, attempt = self._start(
                keys=self._keys(
                    "meta", "sent", "done", "attempts", "workers", "ctr", "beat", "running"
                ),
                args=[job, 0, worker],
            )
        return str(state), int(attempt)

    def finish_job(
        self,
        job: int,
        *,
        rows: int,
        renders: int,
        rejections: Mapping[str, int],
        shard: str | None = None,
        start: int = 0,
        worker: str = "",
        seconds: float = 0.0,
        by_preset: Mapping[int, Mapping[str, int]] | None = None,
        hashes: Sequence[str] = (),
    ) -> Advance:
        """Record a done job (its rows already flushed to ``shard``) and top up.

        Args:
            by_preset: rejected notes by preset index in the job and reason.
            hashes: each row's audio hash, in row order: a row whose audio an earlier row
                of the run already has (in canonical order) is not counted.

        Returns:
            The jobs to send next and whether to send the collector; ``duplicate`` when
            the job was already recorded (this delivery's rows are ignored).
        """
        detail = {
            "shard": shard,
            "start": start,
            "rows": rows,
            "renders": renders,
            "rejections": dict(rejections),
            "worker": worker,
            "seconds": round(seconds, 3),
            # Rejections by preset in the job: a dataset counts only the presets it holds.
            "by_preset": {str(i): dict(r) for i, r in (by_preset or {}).items()},
            "hashes": list(hashes),
        }
        return self._run_advance(
            "done",
            job,
            rows,
            json.dumps(detail),
            renders,
            json.dumps(dict(rejections)),
            seconds=seconds,
        )

    def _run_advance(self, mode: str, *args: Any, seconds: float = 0.0) -> Advance:
        argv: list[Any] = [0, mode, *args] if args else [0, mode, 0, 0, "", 0, "{}"]
        argv += [MAX_BARREN_JOBS, self.run_id, round(seconds, 3)]
        with translate_errors():
            flag, first, count = self._advance(
                keys=self._keys(
                    "meta",
                    "ctr",
                    "sent",
                    "done",
                    "rows",
                    "rej",
                    "collect",
                    "beat",
                    "active",
                    "running",
                    "audio",
                    "dups",
                ),
                args=argv,
            )
        return Advance(
            jobs=list(range(int(first), int(first) + int(count))),
            collect=int(flag) == 1,
            duplicate=int(flag) == -1,
        )

    def put_result(self, job: int, result: Mapping[str, Any]) -> None:
        """Store a job's small JSON result (importance runs), before the job is finished:
        a repeat delivery overwrites it with the same value."""
        with translate_errors():
            self.r.hset(self.k["results"], str(int(job)), json.dumps(result))

    def results(self) -> dict[int, dict[str, Any]]:
        """Every stored job result by job."""
        with translate_errors():
            raw = self.r.hgetall(self.k["results"])
        return {int(k): json.loads(v) for k, v in raw.items()}

    def beat(self, *jobs: int) -> float:
        """Heartbeat of running jobs (only those still outstanding); the server's time."""
        with translate_errors():
            return float(self._beat(keys=self._keys("sent", "beat"), args=list(jobs)))

    def beat_collector(self) -> None:
        """Heartbeat of the collector while it merges (keeps its claim)."""
        with translate_errors():
            if self.r.hget(self.k["meta"], "state") == COLLECTING:
                self.r.set(self.k["collect"], float(self.r.time()[0]))

    def lost_jobs(
        self, silent_s: float, waiting: Sequence[int] = (), limit: int = 256
    ) -> list[int]:
        """Jobs to send again, their clocks restarted (so only one caller sends them).

        A job is lost when it started and its worker has sent no heartbeat for
        ``silent_s`` (killed, frozen, cut off from the broker), or when it was sent more
        than ``silent_s`` ago, never started, and its message is not ``waiting`` (queued, or
        just taken by a worker): a message lost with the broker, or held by a dead worker.
        A job that is merely long keeps beating and is never sent twice.
        """
        with translate_errors():
            out = self._lost(
                keys=self._keys("sent", "beat", "ctr", "running"),
                args=[silent_s, limit, json.dumps(sorted({int(j) for j in waiting}))],
            )
        return sorted(int(j) for j in out)

    def reclaim_collector(self, silent_s: float) -> bool:
        """True when the run is collecting and its collector has been silent for
        ``silent_s`` (or was never started): the caller sends it again."""
        with translate_errors():
            return bool(self._reclaim(keys=self._keys("meta", "collect"), args=[silent_s]))

    def silent_jobs(self, silent_s: float) -> list[int]:
        """Outstanding jobs that started and have had no heartbeat for ``silent_s`` (read
        only: for ``farm status``)."""
        with translate_errors():
            now = float(self.r.time()[0])
            beats = self.r.hgetall(self.k["beat"])
        return sorted(int(j) for j, t in beats.items() if now - float(t) > silent_s)

    def outstanding(self) -> list[int]:
        """Jobs sent and not done."""
        with translate_errors():
            return sorted(int(j) for j in self.r.hkeys(self.k["sent"]))

    def duplicate_rows(self) -> dict[int, list[int]]:
        """Rows (offsets in their job) of prefix jobs whose audio an earlier row has."""
        with translate_errors():
            raw = self.r.hgetall(self.k["dups"])
        return {int(j): [int(i) for i in json.loads(v)] for j, v in raw.items()}

    def done_details(self) -> dict[int, dict[str, Any]]:
        """Every done job's detail (shard, first row, rows, rejections, renders)."""
        with translate_errors():
            raw = self.r.hgetall(self.k["done"])
        return {int(j): json.loads(v) for j, v in raw.items()}

    def reset_jobs(self, jobs: Sequence[int]) -> bool:
        """Forget done jobs whose rows were lost, recompute the counters, and mark them
        outstanding (the caller sends them) with the run back to ``running``.

        Only a collecting run is reset (a late collector never reopens a done run);
        returns False and changes nothing otherwise.
        """
        if self.state() != COLLECTING:
            return False
        details = self.done_details()
        with translate_errors():
            now = float(self.r.time()[0])
            pipe = self.r.pipeline(transaction=True)
            for j in jobs:
                pipe.hdel(self.k["done"], j)
                pipe.hdel(self.k["rows"], j)
                pipe.hset(self.k["sent"], j, now)
            pipe.execute()
        for j in jobs:
            details.pop(j, None)
        self._recount(details)
        return self.move(RUNNING, only_from=(COLLECTING,))

    def _recount(self, details: Mapping[int, Mapping[str, Any]]) -> None:
        rej: dict[Any, Any] = {}
        for d in details.values():
            for reason, c in d["rejections"].items():
                rej[reason] = rej.get(reason, 0) + int(c)
        # The prefix again, with the same audio dedup as the Lua script.
        pj, pr = 0, 0
        seen: set[str] = set()
        dups: dict[int, list[int]] = {}
        while pj in details:
            for i, h in enumerate(details[pj].get("hashes") or []):
                if h in seen:
                    dups.setdefault(pj, []).append(i)
                seen.add(h)
            pr += int(details[pj]["rows"]) - len(dups.get(pj, []))
            pj += 1
        dup_rows = sum(len(v) for v in dups.values())
        if dup_rows:
            rej["DUPLICATE_AUDIO"] = dup_rows
        ctr: dict[Any, Any] = {
            "total_rows": sum(int(d["rows"]) for d in details.values()),
            "done_jobs": len(details),
            "renders": sum(int(d["renders"]) for d in details.values()),
            "job_seconds": sum(float(d.get("seconds", 0)) for d in details.values()),
            "prefix_job": pj,
            "prefix_rows": pr,
            "dup_rows": dup_rows,
        }
        with translate_errors():
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.k["ctr"], mapping=ctr)
            pipe.delete(self.k["rej"], self.k["audio"], self.k["dups"])
            if rej:
                pipe.hset(self.k["rej"], mapping=rej)
            if seen:
                pipe.sadd(self.k["audio"], *seen)
            if dups:
                pipe.hset(self.k["dups"], mapping={j: json.dumps(v) for j, v in dups.items()})
            pipe.execute()

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
        return RunStatus(
            run_id=self.run_id,
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
            retries=int(ctr.get("retries", 0)),
            running=dict(running),
            **_liveness(meta, ctr, beats, running, server[0] + server[1] / 1e6),
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


def active_runs(client: redis.Redis) -> list[str]:
    """Runs that are running or collecting."""
    with translate_errors():
        return sorted(str(r) for r in client.smembers(ACTIVE_KEY))


def list_runs(client: redis.Redis) -> list[str]:
    """Every run id on the broker, oldest first."""
    with translate_errors():
        return [str(r) for r in client.zrange(RUNS_KEY, 0, -1)]


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turns a redis-py connection or password error into a one-line BrokerError, and a
    broker that cannot write its append-only file into a DiskFullError."""
    try:
        yield
    except redis.AuthenticationError as e:
        raise BrokerError(f"the broker refused the password: {e}") from e
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BrokerError(f"lost the broker: {e}") from e
    except redis.ResponseError as e:
        if str(e).startswith("MISCONF") or "No space left" in str(e):
            raise DiskFullError(
                f"the broker cannot write its data (disk full on the Redis host?): {e}"
            ) from e
        raise
