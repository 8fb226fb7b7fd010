"""Real servers for fault tests: a Redis that can be SIGKILLed and restarted on the same
port and folder, and ``farm worker`` processes that can be killed, frozen and restarted."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis

from coordinator.embedded import redis_server_binary


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1 with a password and an append-only file
    (``appendfsync everysec``, as a cluster runs it) in ``folder``."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password or secrets.token_hex(8)
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start (or restart) the server and wait until it answers."""
        conf = self.folder / "redis.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\n"
            f'dir {self.folder}\nappendonly yes\nappendfsync everysec\nsave ""\n'
            "maxmemory-policy noeviction\n"
        )
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL the server (what it had not yet written to its file is lost)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """Stop the server if it runs."""
        self.kill()


class Workers:
    """``count`` real ``farm worker`` processes (one pool process each), each in its own
    process group so a signal reaches its main process, pool and render children."""

    def __init__(self, cwd: Path, url: str, env: dict[str, str], count: int = 2) -> None:
        self.cwd = cwd
        self.url = url
        self.env = env
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> None:
        """Start ``count`` new workers."""
        for _ in range(self.count):
            self.started += 1
            log = open(self.cwd / f"worker-{self.started}.log", "ab")  # noqa: SIM115
            argv = [sys.executable, "-m", "farm.cli", "worker"]
            # An empty URL: the broker comes from FARM_BROKER_URL (off the command line).
            argv += ["--broker", self.url] if self.url else []
            argv += ["--data-dir", "data", "-c", "1", "-n", f"w{self.started}@%h"]
            self.procs.append(
                subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()

    def signal(self, index: int, sig: int) -> None:
        """Send ``sig`` to every process of worker ``index`` (of those running)."""
        os.killpg(self.procs[index].pid, sig)

    def index_of(self, worker_name: str) -> int:
        """Which worker runs the farm process named ``worker_name`` (``host-PID-token``)."""
        pid = int(worker_name.rsplit("-", 2)[1])
        group = os.getpgid(pid)
        return next(i for i, p in enumerate(self.procs) if p.pid == group)

    def kill_all(self) -> None:
        """SIGKILL every worker, whole process groups, and forget them."""
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        self.procs.clear()

    def __enter__(self) -> Workers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_all()


def send_run(url: str, data: Path, spec_args: list[str], fingerprint: str = "") -> str:
    """Create and send a run as a submitter on another machine would (its own codec, its
    own vita), bypassing this machine's submit-time checks."""
    from coordinator.broker import Sender
    from coordinator.ledger import Ledger
    from coordinator.run import new_run_id
    from coordinator.run import submit as submit_run
    from farm.config import CompressionSettings, RenderSettings, RunSpec
    from farm.settings import FarmSettings

    codec = spec_args[0] if spec_args else "none"
    spec = RunSpec(
        tier=1,
        n=8,
        batch_size=4,
        seed=7,
        render=RenderSettings(notes=(48, 60), note_duration=0.3, render_duration=0.5),
        compression=CompressionSettings(codec=codec),  # type: ignore[arg-type]
    )
    client = redis.Redis.from_url(url, decode_responses=True)
    run_id = new_run_id(spec)
    settings = FarmSettings(broker_url=url, data_dir=str(data))
    submit_run(Ledger(client, run_id), Sender.for_settings(settings), spec,
               output=f"{run_id}.h5", window=4, fingerprint=fingerprint)  # fmt: skip
    return run_id
