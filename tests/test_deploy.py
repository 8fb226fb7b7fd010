"""Deployment and security on real processes: a password-protected Redis on loopback, a
real ``farm worker`` (Celery, prefork) and the real Flower dashboard.

One broker and one worker serve the whole module (as in a cluster); each test sends its
own traffic and checks what the worker did with it.
"""

from __future__ import annotations

import base64
import json
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import redis

from coordinator.broker import Sender
from coordinator.embedded import EmbeddedBroker
from coordinator.ledger import Ledger
from farm.settings import FarmSettings
from tests.farm_helpers import farm, farm_env, keys

pytestmark = pytest.mark.slow

TIER1 = ["--tier", "1", "--batch-size", "4", "--notes", "60", "--note-duration", "0.3"]
TIER1 += ["--render-duration", "0.5", "--seed", "3"]
FARM = [sys.executable, "-m", "farm.cli"]


class Cluster:
    """A broker URL with a password, a data folder and one worker's log."""

    def __init__(self, root: Path, url: str, log: Path) -> None:
        self.root = root
        self.url = url
        self.log = log
        self.data = root / "data"

    def submit(self, n: int, output: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """``farm submit`` on the cluster's broker, waiting for the file."""
        args = ["submit", "--broker", self.url, "-n", str(n), "-o", output, "--wait"]
        return farm(self.root, *args, *TIER1, *extra)

    def wait_log(self, text: str, timeout_s: float = 60.0) -> str:
        """The worker log once it contains ``text`` (bounded in time)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            content = self.log.read_text(errors="replace")
            if text in content:
                return content
            time.sleep(0.2)
        raise AssertionError(f"worker log never said {text!r}:\n{content[-3000:]}")

    def queue_empty(self, timeout_s: float = 30.0) -> None:
        """Wait until no message is queued or unacknowledged."""
        r = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if r.llen("farm") == 0 and r.hlen("unacked") == 0:
                return
            time.sleep(0.2)
        raise AssertionError("messages stayed on the queue")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    log = root / "worker.log"
    with EmbeddedBroker(root / "redis").owner("farm") as url:
        assert url.startswith("redis://:") and "@127.0.0.1:" in url  # a password, loopback
        with log.open("w") as out:
            worker = subprocess.Popen(
                [
                    *FARM,
                    "worker",
                    "--broker",
                    url,
                    "--data-dir",
                    "data",
                    "-c",
                    "1",
                    "-n",
                    "deploy@%h",
                ],
                cwd=root,
                env=farm_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            c = Cluster(root, url, log)
            c.wait_log("ready.")
            yield c
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _rows(path: Path, n: int) -> None:
    """The file holds exactly ``n`` distinct rows."""
    with h5py.File(path, "r") as f:
        assert f["audio/waveforms"].shape[0] == n
        assert np.isfinite(f["audio/waveforms"][:]).all()
    assert len(set(keys(path))) == n


def test_password_broker_end_to_end(cluster: Cluster) -> None:
    res = cluster.submit(12, "pw.h5")
    assert res.returncode == 0, res.stderr
    _rows(cluster.data / "pw.h5", 12)

    port = cluster.url.rsplit(":", 1)[1].split("/")[0]
    for url, exit_code in (
        (f"redis://:wrong-password@127.0.0.1:{port}/0", 3),
        (f"redis://127.0.0.1:{port}/0", 3),
    ):
        res = cluster.submit(4, "never.h5", "--broker", url)
        assert res.returncode == exit_code, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert "wrong-password" not in res.stderr  # redacted
        assert not (cluster.data / "never.h5").exists()


class _Touch:
    """Unpickling this creates a file: proof that a worker ran pickle on a message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_pickled_message_is_refused(cluster: Cluster) -> None:
    marker = cluster.root / "unpickled"
    task_id = str(uuid.uuid4())
    body = pickle.dumps(((_Touch(marker), 0), {}, {}))
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {"lang": "py", "task": "farm.render", "id": task_id, "root_id": task_id},
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "farm"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": task_id,
        },
    }
    # Straight onto the queue, as anyone with the broker password could.
    redis.Redis.from_url(cluster.url).lpush("farm", json.dumps(message))
    cluster.wait_log("Refusing to deserialize untrusted content of type pickle")
    cluster.queue_empty()
    assert not marker.exists()
    # The worker is still working.
    res = cluster.submit(4, "after-pickle.h5")
    assert res.returncode == 0, res.stderr
    _rows(cluster.data / "after-pickle.h5", 4)


def test_messages_cannot_write_outside_the_data_folder(cluster: Cluster) -> None:
    before = sorted(p.name for p in cluster.root.parent.iterdir())
    settings = FarmSettings(broker_url=cluster.url, data_dir=str(cluster.data))
    sender = Sender.for_settings(settings)
    for bad in ("../../escape", "/tmp/escape", "..", "a/../../b"):
        sender.render(bad, [0])
        sender.collect(bad)
    cluster.wait_log("invalid run id '/tmp/escape'")

    # A finished run whose stored output was rewritten on the broker to leave the folder.
    res = cluster.submit(4, "forged.h5")
    assert res.returncode == 0, res.stderr
    r = redis.Redis.from_url(cluster.url, decode_responses=True)
    run_id = next(
        rid
        for rid in r.zrange("farm:runs", 0, -1)
        if Ledger(r, rid).meta().get("output") == "forged.h5"
    )
    ledger = Ledger(r, run_id)
    forgeries = {
        "../../outside.h5": "escapes the data folder",
        str(cluster.root.parent / "abs.h5"): "is outside the data folder",  # no root granted
    }
    for forged, why in forgeries.items():
        r.hset(ledger.k["meta"], "output", forged)
        sender.collect(run_id)
        cluster.wait_log(f"stored output {forged!r} {why}")
    cluster.queue_empty()
    assert sorted(p.name for p in cluster.root.parent.iterdir()) == before
    assert not (cluster.root / "escape").exists() and not Path("/tmp/escape").exists()
    assert not (cluster.data / ".shards" / "..").resolve().joinpath("escape").exists()


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture()
def flower(cluster: Cluster) -> Iterator[str]:
    port = _free_port()
    log = (cluster.root / "flower.log").open("w")
    proc = subprocess.Popen(
        [*FARM, "flower", "--broker", cluster.url, "--address", "127.0.0.1", "--port", str(port)],
        cwd=cluster.root,
        env=farm_env(FLOWER_BASIC_AUTH="researcher:s3cret-pass"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (cluster.root / "flower.log").read_text()
            try:
                # Up, and its event receiver subscribed: it has seen the worker's heartbeat
                # (every 2 s). Events are published to whoever listens at the time, so a
                # task that fails before then never reaches Flower.
                if (
                    _get(base + "/healthcheck")[0] == 200
                    and b'flower_worker_online{worker="deploy@'
                    in _get(base + "/metrics", ("researcher", "s3cret-pass"))[1]
                ):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("Flower did not start, or never saw the worker")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_flower_shows_the_farm_behind_basic_auth(cluster: Cluster, flower: str) -> None:
    auth = ("researcher", "s3cret-pass")
    for path in ("/api/workers", "/api/tasks", "/metrics", "/", "/tasks"):
        assert _get(flower + path)[0] == 401, path
        assert _get(flower + path, ("researcher", "wrong"))[0] == 401, path

    res = cluster.submit(8, "flower.h5")
    assert res.returncode == 0, res.stderr
    run_id = res.stderr.split()[1].rstrip(":")

    deadline = time.monotonic() + 60
    while True:
        code, body = _get(flower + "/api/tasks", auth)
        assert code == 200
        tasks = json.loads(body).values()
        renders = [t for t in tasks if t["name"] == "farm.render" and run_id in t["args"]]
        if len(renders) >= 2 and all(t["state"] == "SUCCESS" for t in renders):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.5)
    assert {f"run={run_id} job={j}" for j in range(2)} <= {t["args"] for t in renders}
    assert any(t["name"] == "farm.collect" and t["args"] == f"run={run_id}" for t in tasks)

    code, body = _get(flower + "/api/workers?refresh=1", auth)
    assert code == 200
    assert any(name.startswith("deploy@") for name in json.loads(body)), body[:500]

    code, body = _get(flower + "/metrics", auth)
    assert code == 200
    assert b'flower_events_total{task="farm.render"' in body

    # farm status points at the dashboard when FARM_FLOWER_URL is set.
    out = farm(
        cluster.root,
        "status",
        "--broker",
        cluster.url,
        env=farm_env(FARM_FLOWER_URL=flower),
    )
    assert out.returncode == 0, out.stderr
    assert f"dashboard: {flower} (Flower)" in out.stdout
    assert run_id in out.stdout


def test_flower_shows_a_failed_run_and_why(cluster: Cluster, flower: str) -> None:
    """A worker that refuses a run (here: another vita registry than the run's) fails it,
    and Flower lists the failing task with its exception."""
    from tests.redis_helpers import send_run

    run_id = send_run(cluster.url, cluster.data, [], fingerprint="f" * 64)
    auth = ("researcher", "s3cret-pass")
    deadline = time.monotonic() + 60
    while True:
        code, body = _get(flower + "/api/tasks", auth)
        assert code == 200
        failed = [
            t
            for t in json.loads(body).values()
            if t["name"] == "farm.render" and run_id in t["args"] and t["state"] == "FAILURE"
        ]
        if failed:
            break
        assert time.monotonic() < deadline, "Flower never showed the failed task"
        time.sleep(0.5)
    assert "RunFailedError" in failed[0]["exception"] and "vita registry" in failed[0]["exception"]
    st = Ledger(redis.Redis.from_url(cluster.url, decode_responses=True), run_id).status()
    assert st.state == "failed" and "vita registry" in st.error


def test_flower_refuses_to_start_without_credentials(cluster: Cluster) -> None:
    for env in (farm_env(), farm_env(FLOWER_BASIC_AUTH="researcher:")):
        res = farm(cluster.root, "flower", "--broker", cluster.url, env=env, timeout=60)
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_compute_weights_on_the_broker(cluster: Cluster) -> None:
    args = ["compute-weights", "--broker", cluster.url, "--tier", "1", "--n-base", "2"]
    args += ["--note-duration", "0.3", "--render-duration", "0.5", "--json", "w.json", "--wait"]
    res = farm(cluster.root, *args)
    assert res.returncode == 0, res.stderr
    weights = json.loads((cluster.data / "w.json").read_text())
    assert weights["bases"] == 2 and weights["continuous"]["volume"] > 0
    run_id = weights["run_id"]
    out = farm(cluster.root, "status", run_id, "--broker", cluster.url)
    assert out.returncode == 0, out.stderr
    assert "2/2 base presets" in out.stdout and "done" in out.stdout
