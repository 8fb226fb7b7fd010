"""Constraints on sampled presets: heuristic ranges and conditional rules against silence.

All constraints work on a batch in label space: ``cont`` (B, C) floats in [0, 1) and ``cat``
(B, K) option indices, and only touch parameters in the tier. Rules are named so a run spec
can switch each one off; the README reports what each one buys in accepted rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from farm.config import Constraints
from farm.errors import UsageError
from farm.params.tiers import TierParams

Rule = Callable[[TierParams, np.ndarray, np.ndarray, np.random.Generator], None]

#: Routes that reach the output. Measured on vita 0.1.0 from the init preset: a source
#: routed into one effect (CHORUS, COMPRESSOR, DELAY, DISTORTION, EQ, FX FILTER, FLANGER,
#: PHASER, REVERB) renders silence whether that effect, or every effect, is on or off, and
#: whatever the chain order; a filter that is off passes its input through.
AUDIBLE_ROUTES = ("FILTER 1", "FILTER 2", "FILTER 1+2", "EFFECTS", "DIRECT OUT")
ROUTED = ("osc_1_destination", "osc_2_destination", "osc_3_destination", "sample_destination")


def routing(tp: TierParams, cont: np.ndarray, cat: np.ndarray, rng: np.random.Generator) -> None:
    """A source is never routed into a single effect (silent in vita 0.1.0): such a draw is
    redrawn uniformly among the audible routes."""
    for param in ROUTED:
        col = tp.categorical_index(param)
        if col < 0:
            continue
        options = tp.categorical[col].options
        audible = np.array([options.index(r) for r in AUDIBLE_ROUTES])
        dead = ~np.isin(cat[:, col], audible)
        cat[dead, col] = audible[rng.integers(len(audible), size=int(dead.sum()))]


#: Upper bounds (normalized) of amp-envelope times. vita's envelope times are quartic
#: (seconds = raw**4, raw = x * max): delay 0.6 -> 0.52 s, attack 0.4 -> 0.82 s, so the
#: envelope peaks within the default 1.5 s note. Measured on 480 tier-2 presets: with
#: attack in [0.5, 0.75) 53% render silent, below 0.4 10%; delay above 0.9 (2.6 s) 100%.
AMP_LIMITS = {"env_1_delay": 0.6, "env_1_attack": 0.4}


def _squeeze(cont: np.ndarray, col: int, lo: float, hi: float) -> None:
    # An affine map of the draw keeps a Latin Hypercube column one hit per stratum.
    cont[:, col] = lo + cont[:, col] * (hi - lo)


def amp_envelope(
    tp: TierParams, cont: np.ndarray, cat: np.ndarray, rng: np.random.Generator
) -> None:
    """The amp envelope (env 1) opens within the note: bounded delay and attack."""
    for name, hi in AMP_LIMITS.items():
        col = tp.continuous_index(name)
        if col >= 0:
            _squeeze(cont, col, 0.0, hi)


#: Oscillator key tracking switches: Off renders the same audio at every note.
KEY_TRACKING = ("osc_1_midi_track", "osc_2_midi_track", "osc_3_midi_track")


def key_tracking(
    tp: TierParams, cont: np.ndarray, cat: np.ndarray, rng: np.random.Generator
) -> None:
    """Oscillators follow the note (key tracking On): no preset renders the same audio at
    every note. Opt-in: it removes key-tracking-off sounds (drones, fixed-pitch effects)
    from the data; measured on tier 1 (``bench/redundant_notes.py``) it lifts distinct
    rows per render from 79% to 96%."""
    for name in KEY_TRACKING:
        col = tp.categorical_index(name)
        if col >= 0:
            cat[:, col] = tp.categorical[col].options.index("On")


RULES: dict[str, Rule] = {
    "routing": routing,
    "amp_envelope": amp_envelope,
    "key_tracking": key_tracking,
}


def apply_constraints(
    tp: TierParams,
    constraints: Constraints,
    cont: np.ndarray,
    cat: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ranges, fixed options and rules to one batch; returns new arrays.

    Raises:
        UsageError: a rule name is unknown or a fixed option index is out of range.
    """
    cont = np.array(cont, dtype=np.float64)
    cat = np.array(cat, dtype=np.int64)
    for name, (lo, hi) in constraints.ranges.items():
        col = tp.continuous_index(name)
        if col >= 0:
            cont[:, col] = lo + cont[:, col] * (hi - lo)
    for name, option in constraints.fixed.items():
        col = tp.categorical_index(name)
        if col < 0:
            continue
        if not 0 <= option < tp.categorical[col].n_options:
            raise UsageError(f"fixed option {option} of {name} is out of range")
        cat[:, col] = option
    for rule in constraints.rules:
        if rule not in RULES:
            raise UsageError(f"unknown constraint rule {rule!r}; known: {', '.join(RULES)}")
        RULES[rule](tp, cont, cat, rng)
    return cont, cat
