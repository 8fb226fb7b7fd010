"""Liveness without a follower: lost jobs and lost collectors are sent again in bounded time.

Why not Celery's own means alone: a message whose worker was SIGKILLed (or cut off from a
restarted broker) stays in kombu's ``unacked`` until the visibility timeout, which must be
longer than the longest job (hours) or long jobs are delivered twice. So the farm adds:

* **heartbeats**: while a worker process runs a job (or the collector), a thread stamps
  the job in the ledger every ``heartbeat_s`` with the broker's clock. A frozen (SIGSTOP)
  or killed process stops beating; a job that is merely long keeps beating;
* **a supervisor pass** every ``supervise_s``, run by every worker's main process (and by a
  following ``farm submit``), one at a time across the cluster (a Redis lock): for each
  active run, jobs silent for ``lost_after_s`` are sent again, as are jobs sent that long
  ago that never started and whose message is neither queued nor just taken by a worker
  (a message lost with the broker, or prefetched by a dead worker); the window is topped
  up (a top-up lost with a dead worker); a collector silent that long is sent again.

Sending twice is safe: the ledger records a job once and the collector drops duplicate
rows, so the bound costs at most a repeated render, never a wrong row.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field

import redis

from coordinator.broker import COLLECT_TASK, RENDER_TASK, Sender
from coordinator.ledger import COLLECTING, RUNNING, Ledger, active_runs
from coordinator.redis_errors import translate_errors
from farm.settings import FarmSettings

log = logging.getLogger("farm.supervisor")

#: The cluster-wide lock that makes one supervisor pass at a time.
LOCK_KEY = "farm:supervisor"
#: A collector message in :func:`waiting_jobs` (jobs are >= 0).
COLLECTOR = -1


@dataclass
class Pass:
    """What one supervisor pass did for one run."""

    run_id: str
    resent: list[int] = field(default_factory=list)
    topped_up: int = 0
    collector: bool = False

    def __bool__(self) -> bool:
        return bool(self.resent or self.topped_up or self.collector)


def _task_of(raw: str | bytes) -> tuple[str, str, int] | None:
    """(task name, run id, job) of a kombu Redis message, None when it is not ours."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # an unacked entry: [message, exchange, routing key]
            msg = msg[0]
        task = msg["headers"]["task"]
        if task not in (RENDER_TASK, COLLECT_TASK):
            return None
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(task), str(args[0]), int(args[1]) if task == RENDER_TASK else COLLECTOR
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def waiting_jobs(client: redis.Redis, queue: str, fresh_s: float) -> dict[str, set[int]]:
    """Jobs (and :data:`COLLECTOR`) whose message waits on the queue, or was taken by a
    worker less than ``fresh_s`` ago (it is about to start), by run."""
    out: dict[str, set[int]] = {}
    with translate_errors():
        queued = client.lrange(queue, 0, -1)
        now = float(client.time()[0])
        taken = [str(t) for t in client.zrangebyscore("unacked_index", now - fresh_s, "+inf")]
        held = client.hmget("unacked", taken) if taken else []
    for raw in [*queued, *(h for h in held if h)]:
        found = _task_of(raw)
        if found is not None:
            out.setdefault(found[1], set()).add(found[2])
    return out


def supervise_run(
    ledger: Ledger, sender: Sender, settings: FarmSettings, waiting: set[int]
) -> Pass:
    """One pass over one run (see the module's docstring)."""
    done = Pass(ledger.run_id)
    meta = ledger.meta()
    state = meta.get("state", "")
    # The run's own limit (set by its submitter), so status and supervisors agree.
    silent_s = float(meta.get("lost_after_s") or settings.lost_after_s)
    if state == RUNNING:
        done.resent = ledger.lost_jobs(silent_s, sorted(waiting - {COLLECTOR}))
        if done.resent:
            log.warning("run %s: jobs %s went silent; sending them again", ledger.run_id,
                        done.resent)  # fmt: skip
            sender.render(ledger.run_id, done.resent)
        advance = ledger.top_up()
        done.topped_up = len(advance.jobs)
        done.collector = advance.collect
        sender.dispatch(ledger.run_id, advance)
    elif state == COLLECTING and COLLECTOR not in waiting and ledger.reclaim_collector(silent_s):
        log.warning("run %s: the collector went silent; sending it again", ledger.run_id)
        done.collector = True
        sender.collect(ledger.run_id)
    return done


def supervise(
    client: redis.Redis,
    sender: Sender,
    settings: FarmSettings,
    *,
    node: str,
    only: str | None = None,
) -> list[Pass]:
    """One supervisor pass over every active run (or only run ``only``), unless another
    process made one less than ``supervise_s`` ago. Returns what it did."""
    with translate_errors():
        ms = max(int(settings.supervise_s * 1000) - 200, 100)
        if not client.set(LOCK_KEY, node, nx=True, px=ms):
            return []
    runs = [only] if only is not None else active_runs(client)
    if not runs:
        return []
    waiting = waiting_jobs(client, settings.queue, settings.lost_after_s)
    out = []
    for run_id in runs:
        out.append(supervise_run(Ledger(client, run_id), sender, settings,
                                 waiting.get(run_id, set())))  # fmt: skip
    return [p for p in out if p]
