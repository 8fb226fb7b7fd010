"""The Celery app of the workers, configured from ``FARM_*`` variables (the edge).

One vita Synth per worker *process*, created once when the pool process starts
(``worker_process_init``), so every pool process, in any number, starts from the same
history and renders the same audio for the same label.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from coordinator.broker import celery_config
from farm.settings import FarmSettings, settings_from_env

#: The settings of the app this process runs (the last one made).
_running: list[FarmSettings] = []


def make_app(settings: FarmSettings) -> Celery:
    """A worker app for ``settings`` with the farm's tasks registered; its processes
    start from these settings (``farm worker`` passes them here directly)."""
    app = Celery("farm")
    app.conf.update(celery_config(settings))
    app.conf.farm_settings = settings
    from workers import tasks

    tasks.register(app)
    _running[:] = [settings]
    return app


#: ``celery -A workers`` (the embedded workers): settings from the environment that
#: :func:`farm.config.settings_env` wrote for them.
app = make_app(settings_from_env(os.environ))


@worker_init.connect
def _preload(**_: Any) -> None:
    # What a job needs (numpy, h5py, scipy.signal for loudness: 0.9 s of imports), imported
    # once in the worker's main process before its pool processes fork: imported by each
    # pool process at its first job, it came after the run was created, in every process at
    # once (1.3 s before the first render of a 3-row run). Not at import: `farm flower`
    # loads this app too and needs none of it.
    import workers.render  # noqa: F401


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    settings = _running[0]
    if settings.die_with_parent:
        from coordinator.processes import die_with_parent

        die_with_parent()
    from workers.context import WorkerContext

    WorkerContext.start(settings)


_supervisor: list[Any] = []


@worker_ready.connect
def _start_supervisor(sender: Any = None, **_: Any) -> None:
    # The main process supervises (lost jobs, lost collectors, stalled top-ups), so a run
    # finishes with no follower; see coordinator.supervisor.
    from workers.liveness import SupervisorThread

    node = str(getattr(sender, "hostname", "") or f"pid-{os.getpid()}")
    processes = int(getattr(getattr(sender, "pool", None), "num_processes", 1) or 1)
    thread = SupervisorThread(_running[0], node, processes)
    thread.start()
    _supervisor.append(thread)


@worker_shutdown.connect
def _stop_supervisor(**_: Any) -> None:
    for thread in _supervisor:
        thread.stop()
