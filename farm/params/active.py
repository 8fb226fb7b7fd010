"""The active-parameter mask: which label columns can change a row's sound.

A parameter is *inactive* in a row when moving it alone, everything else held, cannot
change the audio: its module is off, its module gets no signal, or a switch of its module
selects a mode that does not read it. Two presets that differ only in inactive parameters
render the same sound, so a model should not be asked to predict those columns
(``params/active_continuous`` and ``params/active_categorical``).

The rules follow Vital's signal flow (``docs/active-mask.md``):

* sources (``osc_1..3``, ``sample``) feed a destination: a filter, the effect chain
  (``EFFECTS``), the output directly (``DIRECT OUT``), or one effect alone, which vita
  0.1.0 renders as silence (see :data:`farm.params.constraints.AUDIBLE_ROUTES`);
* a filter that is off passes its input through, so its own controls do nothing; a filter
  that no source reaches does nothing either;
* the effect chain processes whatever reaches a filter or ``EFFECTS``: an effect that is
  off, or a chain that gets nothing, does nothing;
* modulation sources (LFOs, envelopes 2-6, random generators, macros, the mod wheel)
  act only through modulation connections;
* inside an active module, a mode switch decides which controls are read (an oscillator's
  distortion/spectral-morph type "None", tempo sync against seconds, ...).

Every rule was checked by measurement, bit-exact, on random presets of every tier
(``bench/active_mask.py``). A rule is kept only when moving any parameter it marks inactive
never changed a render; the mask is therefore conservative: a parameter it calls active may
still be inaudible in a given row (a level at zero, a release after the render ends).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from farm.params.constraints import AUDIBLE_ROUTES
from farm.params.label import Label
from farm.params.normalize import categorical_to_raw, continuous_to_raw
from farm.params.registry import ParamSpec, get_registry
from farm.params.tiers import TierParams

SOURCES = ("osc_1", "osc_2", "osc_3", "sample")
FILTERS = ("filter_1", "filter_2")
EFFECTS = (
    "chorus",
    "compressor",
    "delay",
    "distortion",
    "eq",
    "filter_fx",
    "flanger",
    "phaser",
    "reverb",
)
#: Destinations whose signal goes through the effect chain (DIRECT OUT skips it).
INTO_EFFECTS = ("FILTER 1", "FILTER 2", "FILTER 1+2", "EFFECTS")
#: Modulation sources that are also modules with controls of their own.
MOD_SOURCES = (
    *(f"lfo_{i}" for i in range(1, 9)),
    *(f"env_{i}" for i in range(2, 7)),
    *(f"random_{i}" for i in range(1, 5)),
    *(f"macro_control_{i}" for i in range(1, 5)),
)
#: An oscillator's distortion types that read another source: option -> that source.
_FM_SOURCES = {
    "osc_1": {7: "osc_2", 8: "osc_3", 9: "sample", 10: "osc_2", 11: "osc_3", 12: "sample"},
    "osc_2": {7: "osc_1", 8: "osc_3", 9: "sample", 10: "osc_1", 11: "osc_3", 12: "sample"},
    "osc_3": {7: "osc_1", 8: "osc_2", 9: "sample", 10: "osc_1", 11: "osc_2", 12: "sample"},
}
#: Controls of an oscillator read only when its distortion / spectral morph is not None.
_OSC_DISTORTION = ("distortion_amount", "distortion_phase", "distortion_spread")
_OSC_MORPH = ("spectral_morph_amount", "spectral_morph_spread")
#: Tempo-synced modules: ``X_sync`` Seconds reads ``X_frequency``, any tempo reads
#: ``X_tempo``.
_SYNCED = ("chorus", "flanger", "phaser", "delay")
#: An oscillator's controls that spread its unison voices: one voice reads none of them
#: (``stack_style`` is read: "Center Drop 12" drops even a single voice an octave).
_UNISON = (
    "unison_detune",
    "unison_blend",
    "detune_power",
    "detune_range",
    "frame_spread",
    "spectral_unison",
    "distortion_spread",
    "spectral_morph_spread",
)
#: An oscillator's controls that move through its wavetable's frames.
_FRAMES = ("wave_frame", "frame_spread", "smooth_interpolation")
#: A filter's controls read only by the Formant model.
_FORMANT = ("formant_resonance", "formant_spread", "formant_transpose", "formant_x", "formant_y")
#: A compressor band's controls (``compressor_{low,high}_*``).
_BAND = ("gain", "lower_ratio", "lower_threshold", "upper_ratio", "upper_threshold")


@dataclass(frozen=True)
class _View:
    """Raw values of one label, every parameter of the synth (outside the tier: the init
    preset's value, which is what the render sets)."""

    raw: dict[str, float]
    options: dict[str, tuple[str, ...]]
    modulated: frozenset[str]
    """Destinations of the label's modulation connections (their value moves)."""

    def option(self, name: str) -> str:
        return self.options[name][round(self.raw[name] - self._min(name))]

    def _min(self, name: str) -> float:
        return _spec(name).min

    def on(self, name: str) -> bool:
        return self.option(f"{name}_on") == "On"


@functools.lru_cache(maxsize=1)
def _specs() -> dict[str, ParamSpec]:
    reg = get_registry()
    return {s.name: s for s in (*reg.continuous, *reg.categorical)}


def _spec(name: str) -> ParamSpec:
    return _specs()[name]


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, float]:
    return {name: float(s.default) for name, s in _specs().items()}


@functools.lru_cache(maxsize=1)
def _options() -> dict[str, tuple[str, ...]]:
    return {name: tuple(s.options) for name, s in _specs().items() if s.options}


@functools.lru_cache(maxsize=1)
def _module_members() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for name, s in _specs().items():
        out.setdefault(s.module, []).append(name)
    return {m: tuple(v) for m, v in out.items()}


def _members(module: str, *, but: Iterable[str] = ()) -> set[str]:
    keep = {f"{module}_{b}" for b in but}
    return {n for n in _module_members().get(module, ()) if n not in keep}


def inactive_names(label: Label, tp: TierParams) -> set[str]:
    """Names of the parameters that cannot change this label's sound (any tier, including
    parameters outside ``tp``)."""
    view = _view(label, tp)
    out: set[str] = set()
    used_sources = {m.source for m in label.modulations}
    # -1: the init preset's wavetable (unless the label injects wavetables of its own).
    custom = "wavetables" in label.extra.get("nonscalar", {})
    audible = _audible_sources(view, (0, 0, 0) if custom else label.wavetables, out)
    # Filters: off passes the input through; no input, nothing to filter.
    fed = _filter_inputs(view, audible)
    for f in FILTERS:
        if not view.on(f) or not fed[f]:
            out |= _members(f, but=("on", "filter_input"))
    # The effect chain: nothing reaches it, or an effect is off.
    into_fx = any(view.option(f"{s}_destination") in INTO_EFFECTS for s in audible)
    if not into_fx:
        for fx in EFFECTS:
            out |= _members(fx)
        out.add("effect_chain_order")
    else:
        for fx in EFFECTS:
            if not view.on(fx):
                out |= _members(fx, but=("on",))
        for fx in _SYNCED:
            _sync_rule(view, fx, out)
        _effect_modes(view, out)
        if view.option("distortion_filter_order") == "None":
            out |= {
                "distortion_filter_cutoff",
                "distortion_filter_resonance",
                "distortion_filter_blend",
            }
    # Modulation sources act through connections only.
    for src in MOD_SOURCES:
        if src not in used_sources:
            out |= _members(src)
        elif not src.startswith(("env_", "macro_")):
            _rate_rule(view, src, out)
    if "mod_wheel" not in used_sources:
        out.add("mod_wheel")
    # One note from a clean state: nothing to glide from, no other voice to steal or
    # limit, no MIDI wheel or MPE input.
    out |= set(SINGLE_NOTE)
    if not _tempo_read(view, out, used_sources):
        out.add("beats_per_minute")
    return out


#: Controls a single note rendered from a clean state never reads (measured).
SINGLE_NOTE = (
    "polyphony",
    "legato",
    "voice_override",
    "voice_priority",
    "mpe_enabled",
    "portamento_time",
    "portamento_slope",
    "portamento_force",
    "portamento_scale",
    "pitch_bend_range",
    "bypass",
)


def _rate_rule(view: _View, src: str, out: set[str]) -> None:
    """A used LFO or random generator reads its rate from seconds, tempo or the note."""
    sync = view.option(f"{src}_sync")
    if sync == "Seconds":
        out |= {f"{src}_tempo", f"{src}_keytrack_transpose", f"{src}_keytrack_tune"}
    elif sync == "Keytrack":
        out |= {f"{src}_tempo", f"{src}_frequency"}
    else:
        out |= {f"{src}_frequency", f"{src}_keytrack_transpose", f"{src}_keytrack_tune"}
    if src.startswith("lfo_") and view.option(f"{src}_smooth_mode") == "Off":
        out.add(f"{src}_smooth_time")


def _tempo_read(view: _View, out: set[str], used_sources: set[str]) -> bool:
    """Whether anything that sounds follows the tempo (``beats_per_minute``): an active
    effect synced to tempo, or any modulation source (LFOs and random generators sync to
    tempo by default)."""
    if used_sources:
        return True
    for fx in _SYNCED:
        if f"{fx}_sync" not in out and view.option(f"{fx}_sync") != "Seconds":
            return True
    return "delay_aux_sync" not in out and view.option("delay_aux_sync") != "Seconds"


def _audible_sources(view: _View, wavetables: tuple[int, ...], out: set[str]) -> list[str]:
    """Sources that reach the output; the controls of the others go into ``out``."""
    # A source another audible oscillator reads (FM/RM) counts whatever its own switch
    # and route: its controls shape that oscillator's sound.
    read: set[str] = set()
    for src in ("osc_1", "osc_2", "osc_3"):
        if view.on(src) and view.option(f"{src}_destination") in AUDIBLE_ROUTES:
            kind = round(view.raw[f"{src}_distortion_type"])
            if kind in _FM_SOURCES[src]:
                read.add(_FM_SOURCES[src][kind])
    audible = []
    for src in SOURCES:
        routed = view.option(f"{src}_destination") in AUDIBLE_ROUTES
        if src in read:
            pass
        elif not view.on(src):
            out |= _members(src, but=("on",))
            continue
        elif not routed:
            out |= _members(src, but=("destination",))
            continue
        if routed and view.on(src):
            audible.append(src)
        if src != "sample":
            _oscillator_modes(view, src, wavetables[SOURCES.index(src)], out)
    return audible


def _oscillator_modes(view: _View, osc: str, wavetable: int, out: set[str]) -> None:
    """Controls an active oscillator does not read in its current mode."""
    if (
        round(view.raw[f"{osc}_unison_voices"]) == 1
        and f"{osc}_unison_voices" not in view.modulated
    ):
        out |= {f"{osc}_{c}" for c in _UNISON}
    if wavetable == -1:
        # The init preset's wavetable has one frame: every frame position is the same.
        out |= {f"{osc}_{c}" for c in _FRAMES}
    if view.option(f"{osc}_distortion_type") == "None":
        out |= {f"{osc}_{c}" for c in _OSC_DISTORTION}
    if view.option(f"{osc}_spectral_morph_type") == "None":
        out |= {f"{osc}_{c}" for c in _OSC_MORPH}


def _effect_modes(view: _View, out: set[str]) -> None:
    """Controls an active effect or filter does not read in its current mode."""
    for f in ("filter_1", "filter_2", "filter_fx"):
        model = view.option(f"{f}_model")
        if model != "Formant":
            out |= {f"{f}_{c}" for c in _FORMANT}
        if model not in ("Comb", "Phaser"):
            out.add(f"{f}_blend_transpose")
    bands = view.option("compressor_enabled_bands")
    if bands in ("High Band", "Single Band"):
        out |= {f"compressor_low_{c}" for c in _BAND}
    if bands in ("Low Band", "Single Band"):
        out |= {f"compressor_high_{c}" for c in _BAND}
    if view.option("delay_style") == "Mono":
        out |= {"delay_aux_frequency", "delay_aux_sync", "delay_aux_tempo"}
    elif view.option("delay_aux_sync") == "Seconds":
        out.add("delay_aux_tempo")
    else:
        out.add("delay_aux_frequency")
    for band, mode in (("band", "Notch"), ("low", "High Pass"), ("high", "Low Pass")):
        if view.option(f"eq_{band}_mode") == mode:
            out.add(f"eq_{band}_gain")


def _filter_inputs(view: _View, audible: list[str]) -> dict[str, bool]:
    routes = {view.option(f"{s}_destination") for s in audible}
    direct = {
        "filter_1": bool(routes & {"FILTER 1", "FILTER 1+2"}),
        "filter_2": bool(routes & {"FILTER 2", "FILTER 1+2"}),
    }
    # ``filter_N_filter_input`` On feeds the other filter's output into filter N.
    fed = dict(direct)
    if view.option("filter_1_filter_input") == "On" and direct["filter_2"]:
        fed["filter_1"] = True
    if view.option("filter_2_filter_input") == "On" and direct["filter_1"]:
        fed["filter_2"] = True
    return fed


def _sync_rule(view: _View, fx: str, out: set[str]) -> None:
    if not view.on(fx):
        return
    if view.option(f"{fx}_sync") == "Seconds":
        out.add(f"{fx}_tempo")
    else:
        out.add(f"{fx}_frequency")


def _view(label: Label, tp: TierParams) -> _View:
    raw = dict(_defaults())
    cont = continuous_to_raw(tp, label.continuous)
    cat = categorical_to_raw(tp, label.categorical)
    for s, v in zip(tp.continuous, cont, strict=True):
        raw[s.name] = float(v)
    for s, v in zip(tp.categorical, cat, strict=True):
        raw[s.name] = float(v)
    return _View(raw, _options(), frozenset(m.destination for m in label.modulations))


def active_mask(label: Label, tp: TierParams) -> tuple[np.ndarray, np.ndarray]:
    """The label's active mask: (continuous, categorical) bool arrays in column order,
    False where the parameter cannot change the sound."""
    off = inactive_names(label, tp)
    cont = np.array([s.name not in off for s in tp.continuous], dtype=bool)
    cat = np.array([s.name not in off for s in tp.categorical], dtype=bool)
    return cont, cat


#: Names that decide other parameters' activity: a check that moves several inactive
#: parameters at once must move these one at a time (see ``bench/active_mask.py``).
SWITCHES = re.compile(
    r"^(\w+_on|\w+_destination|\w+_sync|\w+_model|osc_\d_distortion_type|"
    r"osc_\d_spectral_morph_type|osc_\d_unison_voices|filter_\d_filter_input|"
    r"distortion_filter_order|compressor_enabled_bands|delay_style|eq_\w+_mode|"
    r"lfo_\d_smooth_mode)$"
)
