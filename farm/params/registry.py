"""The parameter registry: every sound parameter of vita, discovered from a live Synth.

Nothing here is a hand-written list of parameters. The rules that classify the 772 vita
controls are:

* ``modulation_*`` (64 slots x 5 controls) are modulation-slot state, not sound
  parameters; tier 3 labels them as a matrix instead (see :mod:`farm.params.modulation`).
* ``view_spectrogram`` and ``osc_N_view_2d`` only change Vital's GUI.
* A discrete control with option labels is **categorical** (stored as option index);
  everything else is **continuous** (stored normalized linearly to [0, 1]), including the
  29 discrete controls without labels (transpose, unison voices, ...), which are rounded
  when rendering.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from farm.errors import RegistryError

VITA_VERSION = "0.1.0"
EXPECTED_CONTINUOUS = 322
EXPECTED_CATEGORICAL = 126

Kind = Literal["continuous", "categorical"]

_VIEW_CONTROL = re.compile(r"^(view_spectrogram|osc_\d+_view_2d)$")
_NUMBERED_MODULE = re.compile(r"^(osc|filter|env|lfo|random|macro_control)_(\d+|fx)")
_GLOBAL_NAMES = {
    "volume",
    "polyphony",
    "bypass",
    "legato",
    "oversampling",
    "beats_per_minute",
    "pitch_bend_range",
    "velocity_track",
    "mpe_enabled",
    "effect_chain_order",
    "stereo_routing",
    "stereo_mode",
    "mod_wheel",
}


@dataclass(frozen=True)
class ParamSpec:
    """One sound parameter of vita.

    Attributes:
        name: vita control name, e.g. ``filter_1_cutoff``.
        kind: ``continuous`` (label in [0, 1]) or ``categorical`` (label = option index).
        module: the synth section it belongs to, e.g. ``filter_1``, ``chorus``, ``global``.
        min: raw minimum as vita reports it.
        max: raw maximum.
        default: raw value in vita's init preset.
        scale: vita's display scale (``Linear``, ``Quartic``, ...). Informational only:
            farm normalizes linearly whatever the scale.
        integer: raw values are whole numbers (rounded when rendering).
        options: option labels of a categorical parameter, in index order.
    """

    name: str
    kind: Kind
    module: str
    min: float
    max: float
    default: float
    scale: str
    integer: bool
    options: tuple[str, ...] = ()

    @property
    def n_options(self) -> int:
        """Number of option indices a categorical label may take."""
        return len(self.options)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``farm params --json``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "module": self.module,
            "min": self.min,
            "max": self.max,
            "default": self.default,
            "integer": self.integer,
            "options": list(self.options),
        }


def module_of(name: str) -> str:
    """Return the synth section a control belongs to (``osc_1``, ``chorus``, ``global`` ...)."""
    m = _NUMBERED_MODULE.match(name)
    if m:
        return m.group(0)
    if name in _GLOBAL_NAMES:
        return "global"
    return name.split("_", 1)[0]


def is_sound_parameter(name: str) -> bool:
    """True for the 448 controls that shape the sound (not a modulation slot, not a view)."""
    return not name.startswith("modulation_") and not _VIEW_CONTROL.match(name)


class Registry:
    """The ordered table of vita's 448 sound parameters, split into continuous and categorical.

    Order is alphabetical by name inside each kind, so it does not depend on vita's dict
    order. The registry is immutable; build it with :func:`get_registry` or
    :meth:`from_synth`.
    """

    def __init__(self, specs: Iterable[ParamSpec], vita_version: str = VITA_VERSION) -> None:
        ordered = sorted(specs, key=lambda s: s.name)
        self.continuous: tuple[ParamSpec, ...] = tuple(s for s in ordered if s.kind == "continuous")
        self.categorical: tuple[ParamSpec, ...] = tuple(
            s for s in ordered if s.kind == "categorical"
        )
        self.vita_version = vita_version
        self._by_name = {s.name: s for s in ordered}

    @classmethod
    def from_synth(cls, synth: Any) -> Registry:
        """Discover the registry from a live ``vita.Synth``.

        Raises:
            RegistryError: the synth's controls do not classify into 322 + 126.
        """
        specs = []
        for name in sorted(synth.get_controls()):
            if not is_sound_parameter(name):
                continue
            info = synth.get_control_details(name)
            options = tuple(str(o) for o in info.options)
            kind: Kind = "categorical" if info.is_discrete and options else "continuous"
            specs.append(
                ParamSpec(
                    name=name,
                    kind=kind,
                    module=module_of(name),
                    min=float(info.min),
                    max=float(info.max),
                    default=float(info.default_value),
                    scale=str(info.scale).rsplit(".", 1)[-1],
                    integer=bool(info.is_discrete),
                    options=options,
                )
            )
        registry = cls(specs)
        counts = (len(registry.continuous), len(registry.categorical))
        if counts != (EXPECTED_CONTINUOUS, EXPECTED_CATEGORICAL):
            raise RegistryError(
                f"vita exposes {counts[0]} continuous + {counts[1]} categorical sound "
                f"parameters, expected {EXPECTED_CONTINUOUS} + {EXPECTED_CATEGORICAL}; "
                f"is vita pinned to {VITA_VERSION}?"
            )
        return registry

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[ParamSpec]:
        yield from self.continuous
        yield from self.categorical

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> ParamSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise RegistryError(f"unknown parameter {name!r}") from None

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over every spec and the vita version: equal fingerprints, equal label space."""
        payload = json.dumps(
            {"vita": self.vita_version, "params": [asdict(s) for s in self]},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


@functools.cache
def get_registry() -> Registry:
    """The registry of the installed vita, discovered once per process from a throwaway Synth."""
    try:
        import vita
    except ImportError as e:  # pragma: no cover - vita is a hard dependency
        raise RegistryError("vita is not installed (pip install vita==0.1.0)") from e
    installed = getattr(getattr(vita, "version", None), "__version__", VITA_VERSION)
    if installed != VITA_VERSION:
        raise RegistryError(f"vita {installed} is installed, farm needs {VITA_VERSION}")
    return Registry.from_synth(vita.Synth())


@functools.cache
def modulation_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """vita's valid modulation (sources, destinations), in vita's order."""
    import vita

    return tuple(vita.get_modulation_sources()), tuple(vita.get_modulation_destinations())
