"""How the farm runs (not what it makes): one typed :class:`FarmSettings`, built at the
edges (the CLI, a worker's start-up) from options and ``FARM_*`` variables and passed down;
:func:`settings_env` is the one way it reaches a worker process the farm starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FarmSettings(_Frozen):
    """How the farm runs (not what it makes): broker, data folder, queue and retry policy.

    Built once at the edge (CLI, worker start-up) from options and ``FARM_*`` variables and
    passed down.
    """

    data_dir: str = "data"
    """Folder every output, shard and embedded-broker file stays in."""
    broker_url: str | None = None
    """``redis://[:password@]host:port/db``; None starts the embedded private Redis."""
    queue: str = "farm"
    """Celery queue of render and collect tasks."""
    window: int = Field(0, ge=0, le=100_000)
    """Most jobs enqueued and not done at once (0: 2 x local workers, or 512 on a
    broker); bounds Redis memory whatever n is."""
    max_attempts: int = Field(4, ge=1, le=100)
    """Deliveries of one job before its presets are recorded as CRASH and it is dropped."""
    lost_after_s: float = Field(40.0, ge=1.0, le=86_400)
    """A running job whose worker has sent no heartbeat for this long (killed, frozen,
    cut off from the broker), or a job sent this long ago that never started and whose
    message is neither queued nor just taken by a worker, is sent again. Jobs that are
    merely long keep beating and are never sent twice. With the defaults a lost job is
    sent again within about a minute (this + ``supervise_s`` + ``heartbeat_s``)."""
    heartbeat_s: float = Field(5.0, gt=0, le=3600)
    """How often a worker process says that its running job (or collector) is alive."""
    supervise_s: float = Field(10.0, gt=0, le=3600)
    """How often a worker (and a following ``farm submit``) looks for lost jobs, a lost
    collector and runs that stopped topping up."""
    broker_retry_s: float = Field(300.0, ge=0, le=86_400)
    """How long a following ``farm submit``/``resume`` keeps reconnecting to a lost broker
    (with backoff) before it gives up and prints the resume command."""
    task_time_limit_s: float = Field(3600.0, gt=0)
    """Hard Celery time limit of one job."""
    visibility_timeout_s: float = Field(7200.0, gt=0)
    """Redis transport: an unacknowledged message returns to the queue after this long;
    above the longest job, or a slow job is delivered twice."""
    max_tasks_per_child: int = Field(1000, ge=1)
    """Worker pool processes are replaced after this many tasks (bounds any leak)."""
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    """Broker connect timeout: an unreachable broker is an error in seconds, not a hang."""
    keep_shards: bool = False
    """Keep per-worker shards after the collector succeeds."""
    soft_shutdown_s: float = Field(60.0, ge=0, le=3600)
    """A worker told to stop (``docker stop``, a scale-down) lets its running jobs finish
    for this long, then cancels them back onto the queue (Celery's soft shutdown; the
    image sets ``REMAP_SIGTERM=SIGQUIT`` so SIGTERM starts it). Keep it above the longest
    job and below the container's stop grace period."""
    flower_url: str | None = None
    """Where the Flower dashboard of this broker is (shown by ``farm status``)."""
    tls_ca_file: str | None = None
    """For a ``rediss://`` broker (Redis over TLS, workers on other hosts): the CA
    certificate that signed the broker's certificate. The broker's certificate is always
    verified."""
    tls_cert_file: str | None = None
    """Client certificate for a broker that asks for one (``tls-auth-clients yes``)."""
    tls_key_file: str | None = None
    """The client certificate's private key."""
    flower_cert_file: str | None = None
    """With ``flower_key_file``: ``farm flower`` serves HTTPS with this certificate."""
    flower_key_file: str | None = None
    """The private key of ``flower_cert_file``."""
    flower_address: str = "127.0.0.1"
    """Interface ``farm flower`` listens on (0.0.0.0 in a container)."""
    flower_port: int = Field(5555, ge=1, le=65535)
    """Port of ``farm flower``."""
    flower_max_tasks: int = Field(10_000, ge=100, le=1_000_000)
    """Tasks Flower keeps in memory (its own default is 100,000): a 100,000-row run sends
    thousands of tasks, and Flower's memory grows with every one it keeps."""
    flower_basic_auth: str | None = Field(None, repr=False)
    """``USER:PASSWORD[,USER:PASSWORD]`` of the dashboard (also read from Flower's own
    ``FLOWER_BASIC_AUTH``). A secret: never passed on to worker processes."""
    die_with_parent: bool = False
    """Worker pool processes exit when their parent dies (the embedded workers of a
    ``farm submit``: a killed submitter leaves nothing running)."""
    output_roots: tuple[str, ...] = ()
    """Absolute folders outside the data folder that a run's output may be written to
    (``FARM_OUTPUT_ROOTS``, separated by ``:``). Granted by whoever starts the workers, never
    by the broker: an embedded ``farm submit -o /elsewhere/x.h5`` grants its own workers
    ``/elsewhere``; a cluster's workers (and its submitter) need it in their environment."""

    @field_validator("output_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p for p in value.split(os.pathsep) if p)
        return value

    @field_validator("output_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for root in value:
            if not os.path.isabs(root):
                raise ValueError(f"output root {root!r} is not an absolute path")
        return value

    @model_validator(mode="after")
    def _beats_fit(self) -> FarmSettings:
        if self.heartbeat_s * 2 > self.lost_after_s:
            raise ValueError("lost_after_s must be at least twice heartbeat_s")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if bool(self.flower_cert_file) != bool(self.flower_key_file):
            raise ValueError("flower_cert_file and flower_key_file go together")
        return self

    @property
    def tls(self) -> bool:
        """True when the broker is reached over TLS (a ``rediss://`` URL)."""
        return bool(self.broker_url and self.broker_url.startswith("rediss://"))


#: Settings that never travel to another process's environment.
_SECRETS = ("flower_basic_auth",)


def settings_from_env(env: Mapping[str, str], **given: Any) -> FarmSettings:
    """Farm settings from ``FARM_*`` variables (and Flower's ``FLOWER_BASIC_AUTH``),
    overridden by ``given`` values that are not None. Called only at the edges (CLI,
    worker start-up)."""
    fields: dict[str, Any] = {}
    for name in FarmSettings.model_fields:
        value = env.get("FARM_" + name.upper())
        if value is not None and value != "":
            fields[name] = value
    if "flower_basic_auth" not in fields and env.get("FLOWER_BASIC_AUTH"):
        fields["flower_basic_auth"] = env["FLOWER_BASIC_AUTH"]
    fields.update({k: v for k, v in given.items() if v is not None})
    return FarmSettings(**fields)


def settings_env(settings: FarmSettings) -> dict[str, str]:
    """The ``FARM_*`` variables that rebuild ``settings`` in another process (secrets left
    out): the one way settings reach a worker process started by the farm."""
    out = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, tuple):
            value = os.pathsep.join(value)
        if value is not None and name not in _SECRETS:
            out["FARM_" + name.upper()] = str(value)
    return out
