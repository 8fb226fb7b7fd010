"""Tier 3 modulation: sampling connections and the dense (4, 32, 428) label matrix.

Distribution of a synthetic preset's connections (documented in the README):

* k = 1 + Poisson(median_connections - 1), capped at ``max_connections`` (<= 64, vita's
  slot count): median 6, about 1 in 20 presets above 10.
* each connection: a uniform (source, destination) pair without repeats, from vita's own
  lists, excluding by default the 128 ``modulation_N_amount/power`` destinations whose
  meaning depends on slot numbering;
* amount uniform in [-1, 1] (|amount| < 1e-3 is redrawn so that a stored connection is
  never all zeros in the matrix), bipolar and stereo fair coins, power uniform in [-10, 10].
"""

from __future__ import annotations

import numpy as np

from farm.params.label import Modulation

MAX_SLOTS = 64
CHANNELS = ("amount", "bipolar", "power", "stereo")
CHANNEL_MIN = (-1.0, 0.0, -10.0, 0.0)
CHANNEL_MAX = (1.0, 1.0, 10.0, 1.0)


def allowed_destinations(destinations: tuple[str, ...], slot_dependent: bool) -> list[int]:
    """Indices of destinations a sampler may draw from."""
    return [
        i for i, d in enumerate(destinations) if slot_dependent or not d.startswith("modulation_")
    ]


def canonical(
    mods: list[Modulation], sources: tuple[str, ...], destinations: tuple[str, ...]
) -> tuple[Modulation, ...]:
    """Connections sorted by (source index, destination index): the order they connect in.

    Unknown names sort last (they are rejected before render, see the render engine).
    """
    s_ix = {s: i for i, s in enumerate(sources)}
    d_ix = {d: i for i, d in enumerate(destinations)}
    big = len(sources) + len(destinations)
    return tuple(
        sorted(
            mods,
            key=lambda m: (s_ix.get(m.source, big), d_ix.get(m.destination, big), m.source),
        )
    )


def sample_modulations(
    rng: np.random.Generator,
    sources: tuple[str, ...],
    destinations: tuple[str, ...],
    *,
    median_connections: int = 6,
    max_connections: int = MAX_SLOTS,
    slot_dependent: bool = False,
) -> tuple[Modulation, ...]:
    """Draw one preset's connections (see the module docstring for the distribution)."""
    dests = allowed_destinations(destinations, slot_dependent)
    cap = min(max_connections, MAX_SLOTS, len(sources) * len(dests))
    k = min(cap, 1 + int(rng.poisson(max(median_connections - 1, 0))))
    pairs = rng.choice(len(sources) * len(dests), size=k, replace=False)
    mods = []
    for p in pairs:
        s, d = divmod(int(p), len(dests))
        amount = 0.0
        while abs(amount) < 1e-3:
            amount = float(rng.uniform(-1.0, 1.0))
        mods.append(
            Modulation(
                source=sources[s],
                destination=destinations[dests[d]],
                amount=float(np.float32(amount)),
                bipolar=int(rng.integers(0, 2)),
                power=float(np.float32(rng.uniform(-10.0, 10.0))),
                stereo=int(rng.integers(0, 2)),
            )
        )
    return canonical(mods, sources, destinations)


def to_matrix(
    mods: tuple[Modulation, ...], sources: tuple[str, ...], destinations: tuple[str, ...]
) -> np.ndarray:
    """The dense float32 (4, n_sources, n_destinations) label: channels as ``CHANNELS``."""
    m = np.zeros((len(CHANNELS), len(sources), len(destinations)), dtype=np.float32)
    s_ix = {s: i for i, s in enumerate(sources)}
    d_ix = {d: i for i, d in enumerate(destinations)}
    for c in mods:
        m[:, s_ix[c.source], d_ix[c.destination]] = (c.amount, c.bipolar, c.power, c.stereo)
    return m


def from_matrix(
    m: np.ndarray, sources: tuple[str, ...], destinations: tuple[str, ...]
) -> tuple[Modulation, ...]:
    """Connections of a stored matrix, in canonical order (inverse of :func:`to_matrix`)."""
    out = []
    for s, d in zip(*np.nonzero(np.any(m != 0, axis=0)), strict=True):
        a, b, p, st = (float(v) for v in m[:, s, d])
        out.append(Modulation(sources[s], destinations[d], a, int(b), p, int(st)))
    return canonical(out, sources, destinations)
