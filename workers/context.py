"""What one worker process keeps between tasks: its Synth, engines, broker clients, name."""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import redis

from coordinator.broker import Sender, connect
from coordinator.ledger import Ledger
from farm.config import Faults, RunSpec
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.presets.library import Library
from farm.render.engine import RenderEngine
from farm.render.pages import VitaThread
from farm.settings import FarmSettings
from farm.store import Store

#: Engines a worker process keeps (one per tier and render settings, each with a resident
#: child of a few hundred MB): the least recently used one is closed.
ENGINES_KEPT = 2


class WorkerContext:
    """One per worker process, built once (the Synth is created here and never renders).

    Args:
        settings: the farm settings of this worker.
    """

    _current: ClassVar[WorkerContext | None] = None

    def __init__(self, settings: FarmSettings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "host"
        # Unique per process start: a recycled pid never appends to a dead process's shard.
        self._host = host[:40]
        self.name = ""
        self.new_shard()
        #: Shard files this process has written rows to (see workers.render._write).
        self.shards_written: set[Path] = set()
        # Same order as a local run: the registry's throwaway Synth, then the engine's.
        self.registry = get_registry()
        # Built in vita's own thread and malloc arena (farm.render.pages).
        self.synth = VitaThread.get().new_synth()
        self._engines: OrderedDict[tuple[int, str], RenderEngine] = OrderedDict()
        self._rate: int | None = None  # the sample rate the Synth is prepared at
        self._specs: dict[str, RunSpec] = {}
        self._meta: dict[str, dict[str, str]] = {}
        self._libraries: dict[str, Library] = {}
        self._redis: redis.Redis | None = None
        self._sender: Sender | None = None

    def new_shard(self) -> None:
        """Take a new name (and so a new shard file) for the jobs after this one: a shard
        that an error left in doubt is never appended to again."""
        self.name = f"{self._host}-{self.pid}-{secrets.token_hex(3)}"

    @classmethod
    def start(cls, settings: FarmSettings) -> WorkerContext:
        """Build this process's context (called when a pool process starts)."""
        cls._current = cls(settings)
        return cls._current

    @classmethod
    def get(cls, settings: FarmSettings) -> WorkerContext:
        """This process's context (built on first use, e.g. in a solo pool)."""
        if cls._current is None or cls._current.pid != os.getpid():
            return cls.start(settings)
        return cls._current

    @property
    def redis(self) -> redis.Redis:
        """The ledger's Redis client (connected on first use)."""
        if self._redis is None:
            self._redis = connect(self.settings)
        return self._redis

    @property
    def sender(self) -> Sender:
        """Sends follow-up tasks by name."""
        if self._sender is None:
            self._sender = Sender.for_settings(self.settings)
        return self._sender

    def ledger(self, run_id: str) -> Ledger:
        """The ledger of one run."""
        return Ledger(self.redis, run_id)

    def spec(self, ledger: Ledger) -> RunSpec:
        """A run's spec (cached: it never changes)."""
        if ledger.run_id not in self._specs:
            self._specs[ledger.run_id] = RunSpec.from_json(self._run_meta(ledger)["spec"])
        return self._specs[ledger.run_id]

    def _run_meta(self, ledger: Ledger) -> dict[str, str]:
        if ledger.run_id not in self._meta:
            self._meta[ledger.run_id] = ledger.meta()
        return self._meta[ledger.run_id]

    def faults(self, ledger: Ledger) -> Faults:
        """A run's fault injection (cached: it never changes)."""
        raw = self._run_meta(ledger).get("faults")
        return Faults.model_validate_json(raw) if raw else Faults()

    def run_fingerprint(self, ledger: Ledger) -> str:
        """The registry fingerprint the run's labels index ('' for an unchecked run)."""
        return self._run_meta(ledger).get("fingerprint", "")

    def library(self, spec: RunSpec) -> Library | None:
        """A run's library (cached per process with the objects it has read)."""
        sha = spec.sources.library
        if sha is None:
            return None
        if sha not in self._libraries:
            self._libraries[sha] = Library(Store(self.settings.data_dir), sha)
        return self._libraries[sha]

    def engine(self, spec: RunSpec) -> RenderEngine:
        """The render engine for a spec's tier and render settings, with the Synth at its
        sample rate.

        All engines share the process's one Synth, as a local run has one: a second Synth
        in a process renders some presets differently (docs/vita.md). An engine sets the
        sample rate and the init preset on it, and preparing it again (even at the same
        rate) changes some tier-3 renders, so it is prepared only when it is at another
        sample rate. Engines at one sample rate therefore render what a fresh worker does,
        whatever runs the worker served before.
        """
        key = (spec.tier, spec.render.model_dump_json())
        rate = spec.render.sample_rate
        engine = self._engines.get(key)
        if engine is None:
            while len(self._engines) >= ENGINES_KEPT:
                self._engines.popitem(last=False)[1].close()
            tp = tier_params(self.registry, spec.tier)
            engine = RenderEngine(tp, spec.render, synth=self.synth, prepared=self._rate == rate)
            self._engines[key] = engine
        elif self._rate != rate:
            engine.prepare()
        self._engines.move_to_end(key)
        self._rate = rate
        return engine

    def close(self) -> Any:
        """Release the engines' shared buffers."""
        for e in self._engines.values():
            e.close()
        self._engines.clear()
