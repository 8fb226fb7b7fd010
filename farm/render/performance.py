"""What each row plays: note, velocity and note length, per preset.

Fixed settings give every preset the settings' notes at the settings' velocity and note
length (the values themselves, so datasets made before ranges existed render byte for
byte). Ranges are drawn from the run's seed and the preset's global index only, never from
the job or worker that renders it, so the batch size and the schedule do not change them.
Drawn values are rounded to float32, the dtype ``metadata/velocity`` and
``metadata/note_duration`` store: the stored value is exactly the value rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farm.config import NoteDraw, RenderSettings

#: Random stream of the per-row draws (distinct from the sampler's and fault injection's).
_STREAM = 7


@dataclass(frozen=True)
class Played:
    """One row's performance.

    Attributes:
        note: MIDI note.
        velocity: note-on velocity, 0..1.
        note_duration: seconds the key is held.
    """

    note: int
    velocity: float
    note_duration: float


def performances(settings: RenderSettings, seed: int, g: int) -> tuple[Played, ...]:
    """The rows of global preset ``g``: the settings' notes in their order, or the drawn
    notes in ascending order.

    Args:
        settings: the run's render settings.
        seed: the run's seed.
        g: the preset's global index.
    """
    if not settings.varied:
        assert isinstance(settings.notes, tuple)
        v, d = settings.velocity, settings.note_duration
        assert not isinstance(v, tuple) and not isinstance(d, tuple)
        return tuple(Played(n, v, d) for n in settings.notes)
    rng = np.random.default_rng([seed, _STREAM, g])
    notes = _notes(settings.notes, rng)
    k = len(notes)
    velocities = _values(settings.velocity, rng, k)
    durations = _values(settings.note_duration, rng, k)
    return tuple(Played(n, v, d) for n, v, d in zip(notes, velocities, durations, strict=True))


def _notes(notes: tuple[int, ...] | NoteDraw, rng: np.random.Generator) -> list[int]:
    if isinstance(notes, tuple):
        return list(notes)
    pool = np.arange(notes.lo, notes.hi + 1)
    return sorted(int(n) for n in rng.choice(pool, size=notes.per_preset, replace=False))


def _values(v: float | tuple[float, float], rng: np.random.Generator, k: int) -> list[float]:
    if not isinstance(v, tuple):
        return [v] * k
    lo, hi = v
    draws = lo + rng.random(k) * (hi - lo)
    return [float(np.float32(x)) for x in np.clip(draws, lo, hi)]
