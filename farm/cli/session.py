"""What a command talks to: the configured broker, or the embedded one with its local
workers, opened and closed around the command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import UsageError


@dataclass
class Farm:
    """What a command talks to: settings (with the broker URL), the ledger's Redis, a task
    sender, and the local workers when embedded."""

    settings: Any
    client: Any
    sender: Any
    workers: Any = None

    @property
    def embedded(self) -> bool:
        return self.workers is not None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextmanager
def open_farm(settings: Any, *, run_workers: int | None) -> Iterator[Farm]:
    """Connect to the configured broker, or start the embedded one (with ``run_workers``
    local worker processes when given, else for a short command)."""
    from coordinator.broker import Sender, connect
    from coordinator.embedded import EmbeddedBroker, LocalWorkers

    if settings.broker_url:
        client = connect(settings)
        yield Farm(settings, client, Sender.for_settings(settings))
        return
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(settings.data_dir)
    if run_workers is None:
        with broker.reader() as url:
            local = settings.model_copy(update={"broker_url": url})
            yield Farm(local, connect(local), Sender.for_settings(local))
        return
    with broker.owner(settings.queue) as url:
        local = settings.model_copy(update={"broker_url": url})
        with LocalWorkers(local, run_workers, broker.dir / "logs") as workers:
            yield Farm(local, connect(local), Sender.for_settings(local), workers)


def local_workers(given: int | None) -> int:
    if given is None:
        return cpu_count()
    if given < 1:
        raise UsageError(f"--workers must be at least 1, got {given}")
    return given
