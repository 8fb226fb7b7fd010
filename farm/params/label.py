"""A label: the exact parameter vector of one preset, which is what a row is rendered from."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Modulation:
    """One modulation connection and its slot settings (raw vita values).

    Attributes:
        source: a name from ``vita.get_modulation_sources()``.
        destination: a name from ``vita.get_modulation_destinations()``.
        amount: raw amount in [-1, 1].
        bipolar: 0 or 1.
        power: raw curve power in [-10, 10].
        stereo: 0 or 1.
    """

    source: str
    destination: str
    amount: float
    bipolar: int = 0
    power: float = 0.0
    stereo: int = 0

    def to_list(self) -> list[Any]:
        """Canonical JSON-able form (floats rounded through float32, as stored)."""
        return [
            self.source,
            self.destination,
            float(np.float32(self.amount)),
            int(self.bipolar),
            float(np.float32(self.power)),
            int(self.stereo),
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> Modulation:
        """Inverse of :meth:`to_list`."""
        return cls(str(v[0]), str(v[1]), float(v[2]), int(v[3]), float(v[4]), int(v[5]))


@dataclass(frozen=True, eq=False)
class Label:
    """The parameters one preset is rendered from.

    Attributes:
        tier: the tier whose columns ``continuous`` and ``categorical`` follow.
        continuous: float32 (C,), linear normalized values in [0, 1].
        categorical: int32 (K,), option indices.
        modulations: connections in canonical order (sorted by source, destination index).
        name: preset name stored in the row (not part of the hash).
        source: ``synthetic`` | ``community`` | ``factory`` (not part of the hash).
        wavetables: the three oscillators' wavetables as indices into the run's library
            (``params/wavetable`` in a dataset); -1: the init preset's.
        state: the real preset (library index) whose non-scalar state the label carries
            (``metadata/library_preset``); -1: none.
        extra: ``{"nonscalar": {...}}`` holds preset-JSON ``settings`` entries (wavetables,
            LFO shapes, sample) injected before rendering; part of the hash when present.
    """

    tier: int
    continuous: np.ndarray
    categorical: np.ndarray
    modulations: tuple[Modulation, ...] = ()
    name: str = ""
    source: str = "synthetic"
    wavetables: tuple[int, int, int] = (-1, -1, -1)
    state: int = -1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "continuous", np.ascontiguousarray(self.continuous, np.float32))
        object.__setattr__(self, "categorical", np.ascontiguousarray(self.categorical, np.int32))

    @functools.cached_property
    def hash(self) -> str:
        """sha256 of the canonical label: tier, float32 continuous bytes, int32 categorical
        bytes and the canonical modulation list. Two rows with equal hashes are the same
        preset, whatever their audio (vita's phase is random, so audio is never the key)."""
        h = hashlib.sha256()
        h.update(f"farm-label-v1|tier={self.tier}|".encode())
        h.update(self.continuous.astype("<f4").tobytes())
        h.update(b"|")
        h.update(self.categorical.astype("<i4").tobytes())
        h.update(b"|")
        mods = [m.to_list() for m in self.modulations]
        h.update(json.dumps(mods, separators=(",", ":")).encode())
        nonscalar = self.extra.get("nonscalar")
        if nonscalar:
            h.update(b"|")
            h.update(json.dumps(nonscalar, sort_keys=True, separators=(",", ":")).encode())
        return h.hexdigest()
