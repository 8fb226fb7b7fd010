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
from typing import Any

import redis

from farm.config import Faults, RunSpec
from farm.errors import BrokerError, RunNotFoundError, UsageError

RUNS_KEY = "farm:runs"
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
#: Done jobs in a row with no accepted row before a run fails (thresholds too strict).
MAX_BARREN_JOBS = 50

_ADVANCE = """
local meta, ctr, sent, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rowsk, rej, collect = KEYS[5], KEYS[6], KEYS[7]
local now = ARGV[1]
if ARGV[2] == 'done' then
  local job = ARGV[3]
  if redis.call('HSETNX', done, job, ARGV[5]) == 0 then return {-1, 0, 0} end
  local r = tonumber(ARGV[4])
  redis.call('HSET', rowsk, job, r)
  redis.call('HDEL', sent, job)
  redis.call('HINCRBY', ctr, 'total_rows', r)
  redis.call('HINCRBY', ctr, 'done_jobs', 1)
  redis.call('HINCRBY', ctr, 'renders', tonumber(ARGV[6]))
  for reason, count in pairs(cjson.decode(ARGV[7])) do
    redis.call('HINCRBY', rej, reason, count)
  end
  if r > 0 then
    redis.call('HSET', ctr, 'barren', 0)
  else
    redis.call('HINCRBY', ctr, 'barren', 1)
  end
  local pj = tonumber(redis.call('HGET', ctr, 'prefix_job') or '0')
  local pr = tonumber(redis.call('HGET', ctr, 'prefix_rows') or '0')
  while true do
    local v = redis.call('HGET', rowsk, tostring(pj))
    if not v then break end
    pr = pr + tonumber(v)
    pj = pj + 1
  end
  redis.call('HSET', ctr, 'prefix_job', pj, 'prefix_rows', pr)
end
local n = tonumber(redis.call('HGET', meta, 'n'))
local pr = tonumber(redis.call('HGET', ctr, 'prefix_rows') or '0')
local state = redis.call('HGET', meta, 'state')
if pr >= n then
  if state == 'running' and redis.call('SETNX', collect, now) == 1 then
    redis.call('HSET', meta, 'state', 'collecting', 'updated', now)
    return {1, 0, 0}
  end
  return {0, 0, 0}
end
if state ~= 'running' then return {0, 0, 0} end
local total = tonumber(redis.call('HGET', ctr, 'total_rows') or '0')
local dj = tonumber(redis.call('HGET', ctr, 'done_jobs') or '0')
if tonumber(redis.call('HGET', ctr, 'barren') or '0') >= tonumber(ARGV[8]) then
  redis.call('HSET', meta, 'state', 'failed', 'updated', now, 'error',
    'no row accepted in ' .. ARGV[8] .. ' jobs in a row; ' ..
    'check the validation thresholds and constraints')
  return {0, 0, 0}
end
local per = tonumber(redis.call('HGET', meta, 'per_job'))
if dj > 0 then per = math.max(total / dj, 0.01) end
local outstanding = redis.call('HLEN', sent)
local want = math.min(tonumber(redis.call('HGET', meta, 'window')), math.ceil((n - total) / per))
want = want - outstanding
if want < 1 then return {0, 0, 0} end
local first = redis.call('HINCRBY', ctr, 'next', want) - want
for j = first, first + want - 1 do redis.call('HSET', sent, j, now) end
return {0, first, want}
"""

_START = """
local meta, sent, done = KEYS[1], KEYS[2], KEYS[3]
local attempts, workers, ctr = KEYS[4], KEYS[5], KEYS[6]
local job = ARGV[1]
local state = redis.call('HGET', meta, 'state')
if not state then return {'unknown', 0} end
if redis.call('HEXISTS', done, job) == 1 then return {'done', 0} end
if state ~= 'running' then return {state, 0} end
redis.call('SADD', workers, ARGV[3])
if redis.call('HEXISTS', sent, job) == 1 then redis.call('HSET', sent, job, ARGV[2]) end
local attempt = redis.call('HINCRBY', attempts, job, 1)
if attempt > 1 then redis.call('HINCRBY', ctr, 'retries', 1) end
return {'ok', attempt}
"""

_STALE = """
local sent = KEYS[1]
local now, age, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local all = redis.call('HGETALL', sent)
for i = 1, #all, 2 do
  if #out >= limit then break end
  if now - tonumber(all[i + 1]) > age then
    redis.call('HSET', sent, all[i], ARGV[1])
    table.insert(out, all[i])
  end
end
return out
"""


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
        """Seconds to the target at the current rate (inf before the first row)."""
        rate = self.rate
        return max(self.n - self.total_rows, 0) / rate if rate > 0 else float("inf")

    @property
    def acceptance(self) -> float:
        """Accepted notes / rendered notes."""
        return self.total_rows / self.renders if self.renders else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with rate and ETA)."""
        out = dict(self.__dict__)
        out.update(rate=self.rate, eta=None if self.eta == float("inf") else self.eta)
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
            )
        }
        self.k["collect"] = p + "collect"
        self._advance = client.register_script(_ADVANCE)
        self._start = client.register_script(_START)
        self._stale = client.register_script(_STALE)

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
    ) -> None:
        """Store a new run (state ``running``, nothing sent yet).

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
            "per_job": spec.batch_size * len(spec.render.notes),
            "keep_shards": int(keep_shards),
            "faults": (faults or Faults()).model_dump_json(),
            "kind": "dataset" if spec.weights is None else "weights",
            "created": now,
            "started": now,
            "rows_at_start": 0,
            "updated": now,
            "error": "",
        }
        with _translate():
            if not self.r.hsetnx(self.k["meta"], "state", RUNNING):
                raise UsageError(f"run {self.run_id} exists")
            self.r.hset(self.k["meta"], mapping=meta)
            self.r.zadd(RUNS_KEY, {self.run_id: now})

    def exists(self) -> bool:
        """True when the run is in the ledger."""
        with _translate():
            return bool(self.r.exists(self.k["meta"]))

    def require(self) -> Ledger:
        """Self, or raise RunNotFoundError."""
        if not self.exists():
            raise RunNotFoundError(f"no run {self.run_id!r} on this broker (see `farm status`)")
        return self

    def meta(self) -> dict[str, str]:
        """The run's meta hash."""
        with _translate():
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
        with _translate():
            return str(self.r.hget(self.k["meta"], "state") or "")

    def set_state(self, state: str, **fields: Any) -> None:
        """Set the state (and extra meta fields)."""
        with _translate():
            update: dict[Any, Any] = {"state": state, "updated": time.time(), **fields}
            self.r.hset(self.k["meta"], mapping=update)

    def restart(self) -> None:
        """Back to ``running`` after an interruption (resume), with a fresh rate clock."""
        with _translate():
            total = int(self.r.hget(self.k["ctr"], "total_rows") or 0)
            self.r.delete(self.k["collect"])
        self.set_state(RUNNING, started=time.time(), rows_at_start=total, error="")

    # -- jobs -----------------------------------------------------------------------------

    def top_up(self) -> Advance:
        """Claim the jobs to send now (bounded by the window and the rows still missing)."""
        return self._run_advance("topup")

    def start_job(self, job: int, worker: str) -> tuple[str, int]:
        """A worker starts ``job``: ('ok', attempt number) or (why to skip it, 0)."""
        with _translate():
            state, attempt = self._start(
                keys=self._keys("meta", "sent", "done", "attempts", "workers", "ctr"),
                args=[job, time.time(), worker],
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
    ) -> Advance:
        """Record a done job (its rows already flushed to ``shard``) and top up.

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
        }
        return self._run_advance(
            "done", job, rows, json.dumps(detail), renders, json.dumps(dict(rejections))
        )

    def _run_advance(self, mode: str, *args: Any) -> Advance:
        argv: list[Any] = (
            [time.time(), mode, *args] if args else [time.time(), mode, 0, 0, "", 0, "{}"]
        )
        argv.append(MAX_BARREN_JOBS)
        with _translate():
            flag, first, count = self._advance(
                keys=self._keys("meta", "ctr", "sent", "done", "rows", "rej", "collect"),
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
        with _translate():
            self.r.hset(self.k["results"], str(int(job)), json.dumps(result))

    def results(self) -> dict[int, dict[str, Any]]:
        """Every stored job result by job."""
        with _translate():
            raw = self.r.hgetall(self.k["results"])
        return {int(k): json.loads(v) for k, v in raw.items()}

    def stale_jobs(self, older_than_s: float, limit: int = 64) -> list[int]:
        """Outstanding jobs sent or started more than ``older_than_s`` ago (their clock is
        reset: the caller sends them again)."""
        with _translate():
            out = self._stale(keys=[self.k["sent"]], args=[time.time(), older_than_s, limit])
        return [int(j) for j in out]

    def outstanding(self) -> list[int]:
        """Jobs sent and not done."""
        with _translate():
            return sorted(int(j) for j in self.r.hkeys(self.k["sent"]))

    def done_details(self) -> dict[int, dict[str, Any]]:
        """Every done job's detail (shard, first row, rows, rejections, renders)."""
        with _translate():
            raw = self.r.hgetall(self.k["done"])
        return {int(j): json.loads(v) for j, v in raw.items()}

    def reset_jobs(self, jobs: Sequence[int]) -> None:
        """Forget done jobs whose rows were lost, recompute the counters, and mark them
        outstanding (the caller sends them) with the run back to ``running``."""
        details = self.done_details()
        now = time.time()
        with _translate():
            pipe = self.r.pipeline(transaction=True)
            for j in jobs:
                pipe.hdel(self.k["done"], j)
                pipe.hdel(self.k["rows"], j)
                pipe.hset(self.k["sent"], j, now)
            pipe.execute()
        for j in jobs:
            details.pop(j, None)
        self._recount(details)
        with _translate():
            self.r.delete(self.k["collect"])
        self.set_state(RUNNING)

    def _recount(self, details: Mapping[int, Mapping[str, Any]]) -> None:
        rej: dict[Any, Any] = {}
        for d in details.values():
            for reason, c in d["rejections"].items():
                rej[reason] = rej.get(reason, 0) + int(c)
        pj, pr = 0, 0
        while pj in details:
            pr += int(details[pj]["rows"])
            pj += 1
        ctr: dict[Any, Any] = {
            "total_rows": sum(int(d["rows"]) for d in details.values()),
            "done_jobs": len(details),
            "renders": sum(int(d["renders"]) for d in details.values()),
            "prefix_job": pj,
            "prefix_rows": pr,
        }
        with _translate():
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.k["ctr"], mapping=ctr)
            pipe.delete(self.k["rej"])
            if rej:
                pipe.hset(self.k["rej"], mapping=rej)
            pipe.execute()

    # -- reading ----------------------------------------------------------------------------

    def status(self) -> RunStatus:
        """A snapshot of the run."""
        with _translate():
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.k["meta"])
            pipe.hgetall(self.k["ctr"])
            pipe.hgetall(self.k["rej"])
            pipe.hlen(self.k["sent"])
            pipe.smembers(self.k["workers"])
            meta, ctr, rej, outstanding, workers = pipe.execute()
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
        )


def list_runs(client: redis.Redis) -> list[str]:
    """Every run id on the broker, oldest first."""
    with _translate():
        return [str(r) for r in client.zrange(RUNS_KEY, 0, -1)]


@contextmanager
def _translate() -> Iterator[None]:
    """Turns a redis-py connection or password error into a one-line BrokerError."""
    try:
        yield
    except redis.AuthenticationError as e:
        raise BrokerError(f"the broker refused the password: {e}") from e
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BrokerError(f"lost the broker: {e}") from e
