"""The broker side of the farm: a checked Redis connection, the Celery configuration every
process shares, and sending tasks **by name** (the coordinator never imports the workers).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery

from coordinator.ledger import Advance
from farm.errors import BrokerError, UsageError
from farm.settings import FarmSettings

RENDER_TASK = "farm.render"
COLLECT_TASK = "farm.collect"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def tls_options(settings: FarmSettings) -> dict[str, Any]:
    """redis-py's TLS arguments for a ``rediss://`` broker (empty for ``redis://``): the
    broker's certificate verified against ``tls_ca_file`` (or the system's CAs), and the
    client certificate when one is given.

    Raises:
        UsageError: a certificate or key file named in the settings does not exist.
    """
    if not settings.tls:
        return {}
    files = {
        "ssl_ca_certs": settings.tls_ca_file,
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
    }
    for name, path in files.items():
        if path and not Path(path).is_file():
            raise UsageError(f"TLS file {path} ({name.removeprefix('ssl_')}) does not exist")
    return {"ssl_cert_reqs": "required", **{k: v for k, v in files.items() if v}}


def connect(settings: FarmSettings) -> redis.Redis:
    """A Redis client for the ledger on the settings' broker, checked with PING.

    Raises:
        UsageError: the URL is not a redis:// (or rediss://) URL, or a TLS file is missing.
        BrokerError: the broker does not answer within the connect timeout, refuses the
            password, or its TLS handshake fails.
    """
    url = settings.broker_url or ""
    timeout_s = settings.connect_timeout_s
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"broker URL {redact(url)!r} is not redis://host:port/db")
    tls = tls_options(settings)
    try:
        # The probe's read timeout is short too: a port that accepts and never answers is
        # as unreachable as one that refuses.
        probe = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **tls
        )
        probe.ping()
        probe.close()
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=timeout_s,
            socket_timeout=max(timeout_s, 10.0),
            health_check_interval=30,
            **tls,
        )
    except redis.AuthenticationError as e:
        raise BrokerError(f"broker {redact(url)} refused the password: {e}") from e
    except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError) as e:
        hint = " (TLS: check FARM_TLS_CA_FILE and the broker's certificate)" if tls else ""
        raise BrokerError(f"cannot reach the broker at {redact(url)}: {e}{hint}") from e
    except redis.RedisError as e:
        raise BrokerError(f"the broker at {redact(url)} does not answer as Redis: {e}") from e
    return client


def celery_config(settings: FarmSettings) -> dict[str, Any]:
    """The Celery settings of every farm process (client and worker); why each one is set
    is in ``docs/architecture.md``."""
    return {
        "broker_url": settings.broker_url,
        # JSON only: a pickled message is refused by the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        # At least once: ack after the job is recorded; a worker that dies puts it back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit_s,
        "worker_max_tasks_per_child": settings.max_tasks_per_child,
        "task_default_queue": settings.queue,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_connect_timeout": settings.connect_timeout_s,
        },
        "broker_connection_timeout": settings.connect_timeout_s,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Soft shutdown: on SIGQUIT (SIGTERM in the image, REMAP_SIGTERM=SIGQUIT) running
        # jobs get this long to finish; the rest are cancelled and, being acks_late,
        # return to the queue instead of being lost or waiting out the visibility timeout.
        "worker_soft_shutdown_timeout": settings.soft_shutdown_s,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        # Redis over TLS: kombu takes the same files as the ledger's client.
        **({"broker_use_ssl": _kombu_tls(settings)} if settings.tls else {}),
    }


def _kombu_tls(settings: FarmSettings) -> dict[str, Any]:
    if not settings.tls:
        return {}
    out: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    for key, value in tls_options(settings).items():
        if key != "ssl_cert_reqs":
            out[key] = value
    return out


class Sender:
    """Sends farm tasks by name on the farm queue."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue

    @classmethod
    def for_settings(cls, settings: FarmSettings) -> Sender:
        """A client-only Celery app on the settings' broker."""
        app = Celery("farm-client", set_as_current=False)
        app.conf.update(celery_config(settings))
        return cls(app, settings.queue)

    def render(self, run_id: str, jobs: Iterable[int]) -> None:
        """Send ``farm.render(run_id, job)`` for each job."""
        try:
            with self.app.producer_or_acquire() as producer:
                for job in jobs:
                    self.app.send_task(
                        RENDER_TASK,
                        args=(run_id, int(job)),
                        queue=self.queue,
                        producer=producer,
                        # What Flower and the worker log show for the task.
                        argsrepr=f"run={run_id} job={int(job)}",
                    )
        except OSError as e:  # kombu raises OperationalError (an OSError) when Redis is gone
            raise BrokerError(f"cannot send tasks: {e}") from e

    def collect(self, run_id: str) -> None:
        """Send ``farm.collect(run_id)``."""
        try:
            self.app.send_task(
                COLLECT_TASK, args=(run_id,), queue=self.queue, argsrepr=f"run={run_id}"
            )
        except OSError as e:
            raise BrokerError(f"cannot send the collector: {e}") from e

    def dispatch(self, run_id: str, advance: Advance) -> None:
        """Send what a ledger decision asks for."""
        if advance.jobs:
            self.render(run_id, advance.jobs)
        if advance.collect:
            self.collect(run_id)
