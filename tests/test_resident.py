"""The resident renderer (farm.render.resident) on real vita: the same bytes as the fork
path from the same engine process, the pages it learns, and what happens when its child
dies, overruns or cannot watch pages at all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm.config import NoteDraw, RenderSettings, RunSpec
from farm.jobs.plan import sample_job
from farm.params.label import Label
from farm.params.tiers import TierParams
from farm.render import resident as resident_mod
from farm.render.engine import NoteRender, Outcome, RenderEngine
from farm.render.pages import Unsupported, merge, outside
from farm.render.performance import performances

from .conftest import init_label

SHORT = RenderSettings(notes=(48, 60, 72), note_duration=0.4, render_duration=0.6)


def _forked(engine: RenderEngine, labels: list[Label], notes: Any = None) -> list[list[NoteRender]]:
    """The same labels through the fork path of the same engine process."""
    keep, engine.resident = engine.resident, None
    try:
        return [engine.render(label, notes) for label in labels]
    finally:
        engine.resident = keep


def _assert_same(a: list[list[NoteRender]], b: list[list[NoteRender]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert [r.outcome for r in ra] == [r.outcome for r in rb]
        for x, y in zip(ra, rb, strict=True):
            assert (x.audio is None) == (y.audio is None)
            if x.audio is not None and y.audio is not None:
                assert x.audio.tobytes() == y.audio.tobytes()


@pytest.mark.parametrize("tier", [1, 2])
def test_resident_rows_are_the_forked_rows(tier: int, tp1: TierParams, tp2: TierParams) -> None:
    """Every row rendered by the resident child equals, byte for byte, the same row forked
    from the same engine process; and the child is reused, not forked per row."""
    tp = tp1 if tier == 1 else tp2
    labels = sample_job(RunSpec(tier=tier, n=1, seed=11, batch_size=12), tp, 0)
    engine = RenderEngine(tp, SHORT)
    r = engine.resident
    assert r is not None and r.usable, r and r.error
    fast = [engine.render(label) for label in labels]
    _assert_same(fast, _forked(engine, labels))
    assert r.rows == 3 * len(labels), r.error  # every row took the resident path
    assert r.known  # it learned which pages renders write
    # One child for every row: pages found on the way came from the engine process.
    assert r.starts == 1, (r.starts, r.rows)
    audible = sum(
        x.audio is not None and float(np.abs(x.audio).max()) > 1e-3 for y in fast for x in y
    )
    assert audible >= len(labels)  # the comparison covers real sound, not only silence
    engine.close()


def test_after_a_vita_call_new_pages_start_a_new_child(tp2: TierParams) -> None:
    """Once the engine process has called vita since the child was forked, it cannot vouch
    for its pages as they were: a row that writes new pages ends the child, and the next
    one is forked from the engine process as it is. Rows stay the forked rows."""
    from farm.render.pages import VitaThread

    labels = sample_job(RunSpec(tier=2, n=1, seed=12, batch_size=8), tp2, 0)
    engine = RenderEngine(tp2, SHORT)
    r = engine.resident
    assert r is not None and r.usable, r and r.error
    fast = []
    for label in labels:
        fast.append(engine.render(label))
        VitaThread.get().call(lambda: None)
    _assert_same(fast, _forked(engine, labels))
    assert r.rows == 3 * len(labels), r.error
    assert r.starts >= 2, r.starts  # the first child's new pages could not be sent
    engine.close()


def test_varied_performances_match(tp2: TierParams) -> None:
    """Drawn notes, velocities and note lengths: still the forked bytes."""
    s = RenderSettings(
        notes=NoteDraw(lo=36, hi=84, per_preset=2),
        velocity=(0.2, 1.0),
        note_duration=(0.1, 0.4),
        render_duration=0.5,
    )
    labels = sample_job(RunSpec(tier=2, n=1, seed=3, batch_size=6, render=s), tp2, 0)
    engine = RenderEngine(tp2, s)
    plays = [performances(s, 3, g) for g in range(len(labels))]
    fast = [engine.render(label, p) for label, p in zip(labels, plays, strict=True)]
    keep, engine.resident = engine.resident, None
    slow = [engine.render(label, p) for label, p in zip(labels, plays, strict=True)]
    engine.resident = keep
    _assert_same(fast, slow)
    assert keep is not None and keep.rows == 2 * len(labels)
    engine.close()


def test_labels_that_allocate_keep_the_fork(tp3: TierParams) -> None:
    """Modulation connections make vita allocate: such labels are forked per note."""
    labels = sample_job(RunSpec(tier=3, n=1, seed=5, batch_size=3), tp3, 0)
    assert all(label.modulations for label in labels)
    engine = RenderEngine(tp3, RenderSettings(notes=(60,), render_duration=0.5, note_duration=0.3))
    out = [engine.render(label) for label in labels]
    assert engine.resident is not None and engine.resident.rows == 0
    assert all(r.outcome is Outcome.OK for y in out for r in y)
    engine.close()


def test_a_killed_child_hands_the_preset_to_the_fork_path(tp2: TierParams) -> None:
    """SIGSEGV into the resident child mid-render (an injected crash): the preset's notes
    are rendered again through the fork path, which finds no crash; the rows are the
    fault-free rows, and the next preset uses a new resident child."""
    settings = RenderSettings(notes=(48, 60, 72), note_duration=1.5, render_duration=2.0)
    engine = RenderEngine(tp2, settings)
    r = engine.resident
    assert r is not None
    label = init_label(tp2)
    for _ in range(3):  # a warm child, waiting for the next row
        engine.render(label, (60,))
    pid = r._pid
    assert pid
    killer = threading.Timer(0.05, os.kill, (pid, signal.SIGSEGV))
    killer.start()
    hit = engine.render(label)
    killer.join()
    rows_before = r.rows
    _assert_same([hit], _forked(engine, [label]))
    assert all(x.outcome is Outcome.OK for x in hit)
    assert r._pid != pid and r.usable
    engine.render(label, (48,))
    assert r.rows == rows_before + 1 and r._pid and r._pid != pid
    engine.close()


def test_overrun_is_a_timeout_and_the_engine_goes_on(tp2: TierParams) -> None:
    """A note past ``timeout_s`` is TIMEOUT in the resident child as in the fork path, and
    the notes after it still render."""
    settings = RenderSettings(
        notes=(48, 60), note_duration=1.0, render_duration=6.0, timeout_s=0.02
    )
    engine = RenderEngine(tp2, settings)
    t0 = time.monotonic()
    out = engine.render(init_label(tp2))
    assert [x.outcome for x in out] == [Outcome.TIMEOUT, Outcome.TIMEOUT]
    assert time.monotonic() - t0 < 30
    assert [x.outcome for x in _forked(engine, [init_label(tp2)])[0]] == [Outcome.TIMEOUT] * 2
    assert engine.resident is not None and engine.resident.usable
    engine.close()


def test_without_page_watching_the_engine_forks(
    tp1: TierParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where userfaultfd is refused (an injected refusal, as a strict seccomp profile
    would), the engine says why once and renders every row through the fork path."""

    class Refused:
        def __init__(self, regions: Any) -> None:
            raise Unsupported("userfaultfd refused: Operation not permitted (injected)")

    monkeypatch.setattr(resident_mod, "WriteWatch", Refused)
    labels = sample_job(RunSpec(tier=1, n=1, seed=2, batch_size=3), tp1, 0)
    engine = RenderEngine(tp1, SHORT)
    out = [engine.render(label) for label in labels]
    r = engine.resident
    assert r is not None and not r.usable and "injected" in r.error
    assert r.rows == 0 and r.starts == 1
    _assert_same(out, _forked(engine, labels))
    engine.close()


def test_close_ends_the_child(tp1: TierParams) -> None:
    engine = RenderEngine(tp1, SHORT)
    for _ in range(3):  # past the first rows, which teach it new pages
        engine.render(init_label(tp1), (60,))
    assert engine.resident is not None
    pid = engine.resident._pid
    assert pid
    engine.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_ranges() -> None:
    assert merge([(5, 8), (0, 2), (1, 3), (8, 9)]) == [(0, 3), (5, 9)]
    cover = [(10, 20), (30, 40)]
    assert outside([(10, 20), (30, 40)], cover) == []
    assert outside([(0, 50)], cover) == [(0, 10), (20, 30), (40, 50)]
    assert outside([(15, 35)], cover) == [(20, 30)]
    assert outside([(42, 44), (12, 13)], cover) == [(42, 44)]


_COUNT = """
import ctypes, gc, json, sys
from farm.config import RunSpec
from farm.jobs.plan import sample_job
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.apply import LabelApplier
from farm.render.pages import VitaThread, arena_regions
from farm.render.resident import _module_file

lib = ctypes.CDLL(None)
on = ctypes.c_int.in_dll(lib, "mc_on")
names = ("malloc", "free", "realloc", "inside_malloc", "inside_free")
count = [ctypes.c_long.in_dll(lib, "mc_" + k) for k in names]
out = {}
vt = VitaThread.get()
for tier in (2, 3):
    tp = tier_params(get_registry(), tier)
    synth = vt.new_synth()
    vt.call(lambda: synth.set_sample_rate(44100))
    vt.call(synth.load_init_preset)
    ap = LabelApplier(synth, tp)
    heaps = arena_regions(vt.arena, _module_file())
    lo = (ctypes.c_ulong * 16).in_dll(lib, "mc_lo")
    hi = (ctypes.c_ulong * 16).in_dll(lib, "mc_hi")
    for i, (a, b) in enumerate(heaps):
        lo[i], hi[i] = a, b
    ctypes.c_int.in_dll(lib, "mc_n").value = len(heaps)
    labels = sample_job(RunSpec(tier=tier, n=1, seed=4, batch_size=4), tp, 0)
    calls = {"set": [], "apply": [], "render": []}
    gc.disable()
    for label in labels:
        raw = ap.raw_values(label)
        for what, fn in (
            ("set", lambda: ap.set_raw(raw)),
            ("apply", lambda: ap.apply(label) if label.modulations else None),
            ("render", lambda: synth.render(60, 0.8, 0.2, 0.3)),
        ):
            before = [c.value for c in count]
            on.value = 1
            x = fn()
            on.value = 0
            del x
            calls[what].append(dict(zip(names, (c.value - b for c, b in zip(count, before)))))
    out[tier] = calls
json.dump(out, sys.stdout)
"""


def test_plain_labels_make_vita_allocate_nothing(tmp_path: Path) -> None:
    """The resident path rests on this: setting a tier-2 label's controls calls no
    allocator, and a render neither frees nor hands out memory of vita's arena (counted
    by an LD_PRELOAD malloc counter that knows the arena's heaps)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the malloc counter")
    lib = tmp_path / "malloc_count.so"
    src = Path(__file__).with_name("malloc_count.c")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", lib, src, "-ldl"], check=True)
    env = dict(os.environ, LD_PRELOAD=str(lib))
    proc = subprocess.run(
        [sys.executable, "-c", _COUNT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    for calls in out["2"]["set"] + out["2"]["render"]:
        # Nothing of vita's arena freed or handed out by this (the main) thread.
        assert calls["inside_free"] == calls["inside_malloc"] == 0, out
    # And setting controls allocates nothing that vita would keep (Python's first call
    # may warm a cache once).
    assert sum(c["malloc"] for c in out["2"]["set"]) <= 1, out
    # Connecting modulations frees vita's own memory from the calling thread: the hazard
    # the resident path avoids, seen by the counter.
    assert any(c["inside_free"] > 0 for c in out["3"]["apply"]), out
