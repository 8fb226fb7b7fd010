"""Watching a farm: the Flower dashboard (behind basic auth) and the container health check.

Flower reads the task events every farm worker sends (``worker_send_task_events``); the
render tasks carry ``argsrepr`` ``run=<id> job=<n>`` so its task list says which run and
job each one is.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from farm.errors import BrokerError, UsageError
from farm.settings import FarmSettings


def check_basic_auth(value: str | None) -> list[str]:
    """Flower's ``user:password`` pairs (comma-separated), checked.

    Raises:
        UsageError: no credentials, or a pair without a user or a password. Flower without
            them would show every task to anyone who can reach its port.
    """
    if not value:
        raise UsageError(
            "farm flower needs credentials: --basic-auth USER:PASSWORD or FLOWER_BASIC_AUTH"
        )
    pairs = [p.strip() for p in value.split(",") if p.strip()]
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not (sep and user and password):
            raise UsageError("--basic-auth must be USER:PASSWORD[,USER:PASSWORD...]")
    return pairs


def flower_argv(
    address: str, port: int, pairs: list[str], settings: FarmSettings | None = None
) -> list[str]:
    """The ``celery flower`` arguments (the broker comes from the app's configuration);
    HTTPS when the settings name a certificate and key.

    Raises:
        UsageError: the certificate or key file does not exist.
    """
    argv = ["flower", f"--address={address}", f"--port={port}", f"--basic-auth={','.join(pairs)}"]
    if settings is not None:
        argv.append(f"--max_tasks={settings.flower_max_tasks}")
    if settings is not None and settings.flower_cert_file and settings.flower_key_file:
        for path in (settings.flower_cert_file, settings.flower_key_file):
            if not Path(path).is_file():
                raise UsageError(f"Flower's TLS file {path} does not exist")
        argv += [f"--certfile={settings.flower_cert_file}", f"--keyfile={settings.flower_key_file}"]
    return argv


def protect_metrics() -> None:
    """Put Flower's ``/metrics`` behind the same basic auth as the rest of it.

    Flower 2 serves ``/metrics`` (task names, worker names, counts) to anyone; Prometheus
    can send basic-auth credentials, so nothing is lost by asking for them. ``/healthcheck``
    (it answers "OK" and nothing else) stays open for the container health check.
    """
    from flower.views import monitor

    def prepare(self: Any) -> None:
        if self.application.options.basic_auth:
            # Raises HTTP 401 (with WWW-Authenticate) for a missing or wrong password.
            self.get_current_user()

    monitor.Metrics.prepare = prepare


def health_problems(settings: FarmSettings, worker_node: str | None = None) -> list[str]:
    """What keeps this container from doing its work, as one line each (empty: healthy).

    Checks that the broker answers (when one is configured), that the data folder is
    writable, and, for a worker, that its Celery node answers a ping.
    """
    from coordinator.broker import connect, redact

    problems: list[str] = []
    if settings.broker_url:
        try:
            connect(settings).close()
        except BrokerError as e:
            problems.append(str(e))
    data = Path(settings.data_dir)
    try:
        data.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data, prefix=".health-"):
            pass
    except OSError as e:
        problems.append(f"data folder {data} is not writable: {e.strerror or e}")
    if worker_node and settings.broker_url and not problems:
        from coordinator.broker import Sender

        app = Sender.for_settings(settings).app
        try:
            answers = app.control.ping(destination=[worker_node], timeout=3.0)
        except OSError as e:
            problems.append(f"cannot ping {worker_node} on {redact(settings.broker_url)}: {e}")
        else:
            if not answers:
                problems.append(f"worker {worker_node} does not answer")
    return problems


def this_worker_node() -> str:
    """The Celery node name of a worker started in this container (``celery@hostname``)."""
    return f"celery@{os.environ.get('HOSTNAME') or socket.gethostname()}"
