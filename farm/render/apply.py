"""Applying a label to a vita Synth: set parameters, inject non-scalar JSON, connect
modulations. One flow for every preset, synthetic or real.

Every value is clamped before ``set`` (vita does not clamp, and an out-of-range value
segfaults the render) and every modulation name is checked against vita's own lists
before anything touches the synth (an unknown name segfaults the render).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from farm.errors import PresetError
from farm.params.label import Label, Modulation
from farm.params.modulation import CHANNEL_MAX, CHANNEL_MIN, MAX_SLOTS
from farm.params.normalize import categorical_to_raw, continuous_to_raw
from farm.params.registry import modulation_names
from farm.params.tiers import TierParams

_SLOT_CONTROLS = ("amount", "bipolar", "power", "stereo")


class LabelApplier:
    """Applies labels of one tier to one Synth.

    Args:
        synth: a ``vita.Synth`` in its init state.
        tp: the tier the labels belong to.
    """

    def __init__(self, synth: Any, tp: TierParams) -> None:
        self.synth = synth
        self.tp = tp
        controls = synth.get_controls()
        self._cont = [controls[s.name] for s in tp.continuous]
        self._cat = [controls[s.name] for s in tp.categorical]
        self._controls = self._cont + self._cat
        self._slots = [
            [controls[f"modulation_{slot}_{c}"] for c in _SLOT_CONTROLS]
            for slot in range(1, MAX_SLOTS + 1)
        ]
        sources, destinations = modulation_names()
        self._sources = frozenset(sources)
        self._destinations = frozenset(destinations)

    def check(self, label: Label, *, allow_unknown_modulation: bool = False) -> None:
        """Refuse a label that could crash vita or does not fit the tier.

        Args:
            label: the label to check.
            allow_unknown_modulation: skip the name check. Only for fault injection: an
                unknown destination makes the render segfault for real.

        Raises:
            PresetError: wrong shape, too many connections, or an unknown modulation name.
        """
        if label.continuous.shape != (len(self._cont),) or label.categorical.shape != (
            len(self._cat),
        ):
            raise PresetError(
                f"label shape {label.continuous.shape}/{label.categorical.shape} does not fit "
                f"tier {self.tp.tier} ({len(self._cont)} continuous, {len(self._cat)} "
                "categorical)"
            )
        if len(label.modulations) > MAX_SLOTS:
            raise PresetError(f"{len(label.modulations)} connections exceed {MAX_SLOTS} slots")
        if allow_unknown_modulation:
            return
        for m in label.modulations:
            if m.source not in self._sources:
                raise PresetError(f"unknown modulation source {m.source!r}")
            if m.destination not in self._destinations:
                raise PresetError(f"unknown modulation destination {m.destination!r}")

    def apply(self, label: Label) -> None:
        """Set parameters, inject non-scalar state, connect modulations (call :meth:`check`
        first). The synth must be in its init state: in the render engine it always is,
        because each preset is applied in a freshly forked child."""
        self.set_raw(self.raw_values(label))
        nonscalar = label.extra.get("nonscalar")
        if nonscalar:
            self._inject(nonscalar)
        for slot, m in enumerate(label.modulations):
            self._connect(slot, m)

    def raw_values(self, label: Label) -> list[float]:
        """The raw value :meth:`apply` sets on each control, continuous then categorical."""
        raw: list[float] = continuous_to_raw(self.tp, label.continuous).tolist()
        cat: list[float] = categorical_to_raw(self.tp, label.categorical).tolist()
        return raw + cat

    def set_raw(self, values: list[float]) -> None:
        """Set every labelled control to its raw value (:meth:`raw_values`' order)."""
        for ctrl, value in zip(self._controls, values, strict=True):
            ctrl.set(value)

    @staticmethod
    def is_plain(label: Label) -> bool:
        """True when applying ``label`` only sets controls: no modulation connection and no
        non-scalar state, the two steps that make vita allocate memory."""
        return not label.modulations and not label.extra.get("nonscalar")

    def _inject(self, nonscalar: dict[str, Any]) -> None:
        # Non-scalar state (wavetables, LFO shapes, samples) is reachable only through the
        # preset JSON; to_json carries the values just set, so load_json keeps them.
        preset = json.loads(self.synth.to_json())
        preset["settings"].update(nonscalar)
        if not self.synth.load_json(json.dumps(preset)):
            raise PresetError("vita refused the preset's non-scalar state (load_json failed)")

    def _connect(self, slot: int, m: Modulation) -> None:
        if not self.synth.connect_modulation(m.source, m.destination):
            raise PresetError(f"modulation {m.source} -> {m.destination} is connected twice")
        values = np.clip(
            [m.amount, m.bipolar, m.power, m.stereo], CHANNEL_MIN, CHANNEL_MAX
        ).tolist()
        for ctrl, value in zip(self._slots[slot], values, strict=True):
            ctrl.set(value)
