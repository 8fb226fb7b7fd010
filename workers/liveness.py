"""The worker's side of liveness (see :mod:`coordinator.supervisor`): a heartbeat thread
while a job or the collector runs, and the supervisor thread of a worker's main process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coordinator.broker import Sender, connect
from coordinator.nodes import announce
from coordinator.supervisor import supervise
from farm.errors import FarmError
from farm.settings import FarmSettings

log = logging.getLogger("farm.liveness")


@contextmanager
def beating(beat: Callable[[], object], every_s: float) -> Iterator[None]:
    """Call ``beat`` every ``every_s`` seconds in a thread while the block runs.

    The thread stops with the process: a killed or frozen (SIGSTOP) worker stops beating,
    which is exactly what the supervisor looks for. A beat that fails (broker away) is
    logged and tried again at the next tick.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                beat()
            except (FarmError, OSError) as e:
                log.warning("heartbeat failed: %s", e)

    thread = threading.Thread(target=loop, name="farm-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s + 5)


class SupervisorThread:
    """A daemon thread of a worker's main process making supervisor passes.

    It also stamps the worker as serving (:mod:`coordinator.nodes`) at every tick, the
    first at once, so a submitter on the broker knows how many processes share its run.

    Args:
        settings: the worker's settings (broker, intervals).
        node: this worker's name (holder of the cluster-wide pass lock).
        processes: the worker's pool processes.
    """

    def __init__(self, settings: FarmSettings, node: str, processes: int = 1) -> None:
        self.settings = settings
        self.node = node
        self.processes = processes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="farm-supervisor", daemon=True)

    def start(self) -> None:
        """Start passing (returns at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()

    def _loop(self) -> None:
        client = None
        sender = None
        wait = 0.0  # the first stamp at once, passes every supervise_s
        while not self._stop.wait(wait):
            wait = self.settings.supervise_s
            try:
                if client is None:
                    client = connect(self.settings)
                    sender = Sender.for_settings(self.settings)
                assert sender is not None
                announce(client, self.node, self.processes)
                for p in supervise(client, sender, self.settings, node=self.node):
                    log.warning(
                        "supervisor: run %s: resent %s, topped up %d, collector %s",
                        p.run_id, p.resent, p.topped_up, p.collector,
                    )  # fmt: skip
            except (FarmError, OSError) as e:
                # The broker is away (restarting) or full: try again next time.
                log.warning("supervisor pass failed: %s", e)
                client = None
