"""Which workers serve the broker now: each worker's main process announces itself.

A submitter on a cluster does not start the workers, so it cannot know how many pool
processes will take its run's jobs; without that a small run goes out in whole jobs and
most workers idle (see ``coordinator/lua/advance.lua``). So every worker's main process
stamps its name and pool size here with the broker's clock, when it is ready and at every
supervisor tick. A submitter counts the processes of the workers stamped recently: a
worker stopped or killed a moment ago may still be counted (a worker does not withdraw at
shutdown, which would wait on a broker that may be gone), and that makes the run's first
jobs a little smaller, never its rows different.

Keys: ``farm:nodes`` (sorted set: worker name -> last stamp, broker seconds) and
``farm:node_processes`` (hash: worker name -> pool processes).
"""

from __future__ import annotations

import redis

from coordinator.redis_errors import translate_errors

NODES_KEY = "farm:nodes"
PROCESSES_KEY = "farm:node_processes"


def _now(client: redis.Redis) -> float:
    sec, usec = client.time()
    return float(sec) + float(usec) / 1e6


def announce(client: redis.Redis, node: str, processes: int) -> None:
    """Stamp worker ``node`` (``processes`` pool processes) as serving now."""
    with translate_errors():
        now = _now(client)
        pipe = client.pipeline()
        pipe.zadd(NODES_KEY, {node: now})
        pipe.hset(PROCESSES_KEY, node, max(1, processes))
        pipe.execute()


def live_processes(client: redis.Redis, within_s: float) -> int:
    """Pool processes of the workers stamped in the last ``within_s`` seconds (workers
    silent for longer are forgotten)."""
    with translate_errors():
        now = _now(client)
        stale = client.zrangebyscore(NODES_KEY, "-inf", f"({now - within_s}")
        if stale:
            pipe = client.pipeline()
            pipe.zrem(NODES_KEY, *stale)
            pipe.hdel(PROCESSES_KEY, *stale)
            pipe.execute()
        live = [str(m) for m in client.zrange(NODES_KEY, 0, -1)]
        if not live:
            return 0
        counts = client.hmget(PROCESSES_KEY, live)
    return sum(int(c) for c in counts if c is not None)
