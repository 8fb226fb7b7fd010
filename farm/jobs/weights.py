"""Parameter importance: how much the sound changes when one parameter moves.

For a base preset, every continuous parameter is moved by ``delta`` (normalized, away from
the nearer bound) and every categorical one switched to its next option; each variant is
rendered from a clean state and compared with the base by a multi-resolution log-spectral
distance. The base is rendered twice: the distance between those two renders is the noise
floor (vita is not bit-deterministic for every patch), subtracted from every change. The
weight of a parameter is its mean floor-corrected change over the base presets, normalized
so the weights of each kind average 1.

The per-base work (:func:`measure_base`) runs in farm jobs; :func:`aggregate` combines
them in the collector.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from farm.config import RunSpec, WeightsSettings
from farm.errors import UsageError
from farm.params.label import Label
from farm.params.tiers import TierParams
from farm.paths import write_atomic
from farm.render.engine import Outcome, RenderEngine
from farm.render.performance import performances
from farm.render.spectra import log_spectra, spectra_distance
from farm.render.validate import Reason, validate


def fix_label(label: Label, tp: TierParams, fixed: Mapping[str, str]) -> Label:
    """``label`` with the ``fixed`` raw values (or option labels) set.

    Raises:
        UsageError: a name not in this tier, a value out of range or not an option.
    """
    cont = label.continuous.copy()
    cat = label.categorical.copy()
    for name, value in fixed.items():
        i = tp.continuous_index(name)
        if i >= 0:
            spec = tp.continuous[i]
            try:
                raw = float(value)
            except ValueError:
                raise UsageError(f"--set {name}={value}: not a number") from None
            if not spec.min <= raw <= spec.max:
                raise UsageError(f"--set {name}={value}: outside [{spec.min:g}, {spec.max:g}]")
            span = spec.max - spec.min
            cont[i] = (raw - spec.min) / span if span > 0 else 0.0
            continue
        k = tp.categorical_index(name)
        if k < 0:
            raise UsageError(f"--set {name}: not a parameter of tier {tp.tier}")
        spec = tp.categorical[k]
        if value in spec.options:
            cat[k] = spec.options.index(value)
            continue
        try:
            raw = float(value)
        except ValueError:
            raise UsageError(f"--set {name}={value}: options are {list(spec.options)}") from None
        index = round(raw - spec.min)
        if not 0 <= index < spec.n_options:
            raise UsageError(f"--set {name}={value}: outside [{spec.min:g}, {spec.max:g}]")
        cat[k] = index
    return dataclasses.replace(label, continuous=cont, categorical=cat)


def variants(label: Label, tp: TierParams, delta: float) -> Iterator[tuple[str, int, Label]]:
    """Each one-parameter change of ``label``: ("continuous" | "categorical", column,
    label)."""
    for i in range(len(tp.continuous)):
        cont = label.continuous.copy()
        v = float(cont[i])
        cont[i] = v + delta if v + delta <= 1.0 else v - delta
        yield "continuous", i, dataclasses.replace(label, continuous=cont)
    for k in range(len(tp.categorical)):
        n = int(tp.n_options[k])
        if n < 2:
            continue
        cat = label.categorical.copy()
        cat[k] = (int(cat[k]) + 1) % n
        yield "categorical", k, dataclasses.replace(label, categorical=cat)


def _render(engine: RenderEngine, label: Label) -> np.ndarray | None:
    # The first row a dataset of these settings would play (seed 0, preset 0).
    note = engine.render(label, performances(engine.settings, 0, 0)[:1])[0]
    return note.audio if note.outcome == Outcome.OK else None


def measure_base(
    engine: RenderEngine, spec: RunSpec, label: Label
) -> tuple[dict[str, Any] | None, Reason | None, int]:
    """The changes of one base preset: (result, None, renders), or (None, why the base is
    unusable, renders).

    The result holds ``noise`` (the floor) and the raw distances ``continuous`` (C,) and
    ``categorical`` (K,; null for one-option columns). A variant that fails to render
    gets null (left out of the mean).
    """
    ws = spec.weights or WeightsSettings()
    shape = (2, spec.render.samples)
    base = _render(engine, label)
    if base is None:
        return None, Reason.CRASH, 1
    reason = validate(base, spec.validation, shape, spec.render.sample_rate).reason
    if reason is not None:
        return None, reason, 1
    again = _render(engine, label)
    if again is None:
        return None, Reason.CRASH, 2
    renders = 2
    # The base's spectra once, not once per variant (hundreds per base preset).
    base_spectra = log_spectra(base, ws.fft_sizes)
    noise = spectra_distance(base_spectra, log_spectra(again, ws.fft_sizes))
    out: dict[str, list[float | None]] = {
        "continuous": [None] * len(engine.tp.continuous),
        "categorical": [None] * len(engine.tp.categorical),
    }
    for kind, column, variant in variants(label, engine.tp, ws.delta):
        audio = _render(engine, variant)
        renders += 1
        if audio is not None:
            out[kind][column] = spectra_distance(base_spectra, log_spectra(audio, ws.fft_sizes))
    return {"noise": noise, **out}, None, renders


def aggregate(results: Sequence[Mapping[str, Any]], tp: TierParams) -> dict[str, Any]:
    """Weights from the per-base results: mean of max(distance - noise, 0), each kind
    normalized to mean 1 (all zeros stay zeros)."""
    if not results:
        raise UsageError("no usable base preset: nothing to weigh")
    noise = np.array([float(r["noise"]) for r in results])
    out: dict[str, Any] = {}
    for kind, specs in (("continuous", tp.continuous), ("categorical", tp.categorical)):
        d = np.array(
            [[np.nan if x is None else float(x) for x in r[kind]] for r in results],
            dtype=np.float64,
        ).reshape(len(results), len(specs))
        change = np.maximum(d - noise[:, None], 0.0)
        with np.errstate(invalid="ignore"):
            mean = np.where(np.isnan(change).all(axis=0), 0.0, np.nanmean(change, axis=0))
        scale = float(mean.mean()) if mean.size else 0.0
        weights = mean / scale if scale > 0 else mean
        out[kind] = {s.name: float(w) for s, w in zip(specs, weights, strict=True)}
    out["noise_floor"] = float(np.median(noise))
    out["bases"] = len(results)
    return out


def write_json(path: Path, weights: Mapping[str, Any]) -> None:
    """The weights as JSON (temporary name, then renamed)."""
    write_atomic(path, (json.dumps(weights, indent=1, sort_keys=False) + "\n").encode())
