"""Verifies the active-parameter mask by measurement and reports the inactive fraction.

For random presets of a tier (the farm's own sampler and constraints, seed given), it
renders each preset once (one note, clean state) and then again with parameters the mask
calls inactive moved to random values:

* every inactive parameter that is not a switch, all at once (``--redraws`` times with
  different values): one render tests them all; a render that differs is bisected down
  to the parameter(s) that changed the sound;
* every inactive switch (``osc_1_on``, ``*_destination``, ``*_sync``, ...) alone, because
  a switch moved together with the controls it disables could wake them up.

Every moved render must be bit-identical to the preset's own render. Exit 1 otherwise,
with the parameters that broke a rule.

    python bench/active_mask.py --tier 2 --presets 60 [--redraws 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from collections import Counter
from dataclasses import replace

import numpy as np

from farm.config import RenderSettings, RunSpec
from farm.jobs.plan import sample_presets
from farm.params.active import SWITCHES, active_mask
from farm.params.label import Label
from farm.params.registry import get_registry
from farm.params.tiers import TierParams, tier_params
from farm.render.engine import Outcome, RenderEngine

_engine: RenderEngine | None = None


def _render(label: Label) -> bytes | None:
    assert _engine is not None
    r = _engine.render(label)[0]
    return None if r.outcome != Outcome.OK or r.audio is None else r.audio.tobytes()


def _moved(
    label: Label, tp: TierParams, cols: list[tuple[str, int]], rng: np.random.Generator
) -> Label:
    cont = label.continuous.copy()
    cat = label.categorical.copy()
    for kind, c in cols:
        if kind == "c":
            cont[c] = np.float32(rng.random())
        else:
            n = int(tp.n_options[c])
            cat[c] = (int(cat[c]) + 1 + int(rng.integers(n - 1))) % n
    return replace(label, continuous=cont, categorical=cat)


def _culprits(label, tp, cols, base, rng) -> list[str]:
    """Bisect a set of moved columns down to the single ones that change the audio."""
    found = []
    todo = [cols]
    while todo:
        part = todo.pop()
        state = rng.bit_generator.state
        if _render(_moved(label, tp, part, rng)) == base:
            continue
        if len(part) == 1:
            found.append(_name(tp, part[0]))
            continue
        rng.bit_generator.state = state
        half = len(part) // 2
        todo += [part[:half], part[half:]]
    return found


def _name(tp: TierParams, col: tuple[str, int]) -> str:
    kind, c = col
    return (tp.continuous if kind == "c" else tp.categorical)[c].name


def _check(args: tuple[int, int, list[int], int, float, float]) -> dict:
    tier, seed, indices, redraws, note_s, render_s = args
    global _engine
    tp = tier_params(get_registry(), tier)
    settings = RenderSettings(notes=(60,), note_duration=note_s, render_duration=render_s)
    _engine = RenderEngine(tp, settings)
    spec = RunSpec(tier=tier, n=1, seed=seed, render=settings)
    out: dict = {"presets": 0, "renders": 0, "inactive": 0, "columns": 0, "broken": Counter(),
                 "moved": 0, "silent": 0}  # fmt: skip
    for g, label in zip(indices, sample_presets(spec, tp, indices), strict=True):
        rng = np.random.default_rng([seed, g])
        base = _render(label)
        out["renders"] += 1
        if base is None:
            continue
        if not np.any(np.frombuffer(base, np.float32)):
            out["silent"] += 1
        cm, km = active_mask(label, tp)
        out["presets"] += 1
        out["inactive"] += int((~cm).sum() + (~km).sum())
        out["columns"] += cm.size + km.size
        cols = [("c", int(c)) for c in np.flatnonzero(~cm)] + [
            ("k", int(c)) for c in np.flatnonzero(~km)
        ]
        leaves = [c for c in cols if not SWITCHES.match(_name(tp, c))]
        switches = [c for c in cols if SWITCHES.match(_name(tp, c))]
        out["moved"] += len(cols)
        for _ in range(redraws if leaves else 0):
            state = rng.bit_generator.state
            out["renders"] += 1
            if _render(_moved(label, tp, leaves, rng)) != base:
                rng.bit_generator.state = state
                for name in _culprits(label, tp, leaves, base, rng):
                    out["broken"][name] += 1
        for col in switches:
            out["renders"] += 1
            if _render(_moved(label, tp, [col], rng)) != base:
                out["broken"][_name(tp, col)] += 1
    _engine.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tier", type=int, default=2)
    ap.add_argument("--presets", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--redraws", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--note-duration", type=float, default=1.5)
    ap.add_argument("--render-duration", type=float, default=2.0)
    a = ap.parse_args()
    t0 = time.monotonic()
    idx = list(range(a.presets))
    jobs = [(a.tier, a.seed, idx[i :: a.workers], a.redraws, a.note_duration, a.render_duration)
            for i in range(a.workers)]  # fmt: skip
    with mp.get_context("fork").Pool(a.workers) as pool:
        parts = pool.map(_check, jobs)
    total: dict = {"broken": Counter()}
    for p in parts:
        for k, v in p.items():
            total[k] = total.get(k, 0) + v if k != "broken" else total[k] + v
    print(
        f"tier {a.tier}: {total['presets']} presets rendered ({total['silent']} silent), "
        f"{total['renders']} renders in {time.monotonic() - t0:.0f} s; inactive "
        f"{total['inactive'] / max(total['columns'], 1):.1%} of label columns; "
        f"{total['moved']} inactive parameters moved"
    )
    if total["broken"]:
        print("moving these 'inactive' parameters changed the audio (count of presets):")
        for name, n in total["broken"].most_common():
            print(f"  {name}: {n}")
        sys.exit(1)
    print("every moved inactive parameter left the audio bit-identical")


if __name__ == "__main__":
    main()
