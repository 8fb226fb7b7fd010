"""The render engine: every row rendered from a clean synth state, crashes confined.

A reused vita Synth leaks state into later renders (docs/vita.md), and ``load_init_preset``
does not clear it. So the engine's process holds one warm Synth that **never renders**, and
for each preset:

* it forks a *preset child*, which applies the label once (parameters, non-scalar state,
  modulations) and never renders either, except for the last note;
* the preset child forks one *note grandchild* per note but the last, each rendering its
  note from the clean applied state; it renders the last note itself, which is just as
  clean and saves one fork.

A *plain* label (controls only: tiers 1 and 2) takes a faster road to the same state: the
resident child (:mod:`farm.render.resident`), forked once, applies and renders it and then
copies back every page of vita's memory the row wrote, ~5 ms instead of ~30 ms of forking
and copy-on-write per note, with byte-identical audio. Its crashes are handed to the fork
path, which judges them as it always did.

Children write audio straight into an anonymous shared mapping, so nothing is pickled or
piped. A child killed by a signal (a vita segfault) costs only the notes it had not
finished: they come back as ``CRASH`` (or ``TIMEOUT`` when the per-note alarm fired), and
the engine's process never dies from vita. A child killed from outside (SIGKILL from the
kernel's OOM killer, SIGTERM) is no verdict on the preset: its notes are rendered again
(the same clean state, so the same audio), and a preset whose children are killed every
time stops the job with :class:`~farm.errors.RenderKilledError` instead of leaving its
rows out. Because every render starts from the same memory image, the same label and note
give bit-identical audio in any worker process started the same way.
"""

from __future__ import annotations

import faulthandler
import mmap
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from farm.config import RenderSettings
from farm.errors import PresetError, RenderKilledError
from farm.params.label import Label
from farm.params.tiers import TierParams
from farm.render.apply import LabelApplier
from farm.render.forked import CRASH_SIGNALS
from farm.render.pages import VitaThread
from farm.render.performance import Played, performances
from farm.render.resident import Resident


class Outcome(IntEnum):
    """How one note's render ended (written by the child into shared memory)."""

    PENDING = 0
    OK = 1
    CRASH = 2
    TIMEOUT = 3
    ERROR = 4
    SHAPE = 5
    #: killed from outside (not a crash): rendered again, never returned
    KILLED = 6


#: Renders of a note while its child is killed from outside (see the module).
RENDER_TRIES = 3


@dataclass(frozen=True)
class NoteRender:
    """One rendered note.

    Attributes:
        note: MIDI note.
        velocity: the note-on velocity it was played with.
        note_duration: seconds the key was held.
        outcome: OK, or why there is no audio (CRASH, TIMEOUT, ERROR, SHAPE).
        audio: float32 (2, T) when ``outcome`` is OK, else None. A copy: safe to keep.
        detail: a short message for ERROR outcomes.
    """

    note: int
    outcome: Outcome
    audio: np.ndarray | None
    detail: str = ""
    velocity: float = 0.8
    note_duration: float = 1.5


_EXIT_OK = 0
_EXIT_PRESET_ERROR = 3
_EXIT_UNEXPECTED = 4


class RenderEngine:
    """Renders labels of one tier with clean state per note and crash isolation.

    Args:
        tp: the tier of the labels to render.
        settings: notes, durations, sample rate, per-note timeout.
        synth: an existing ``vita.Synth`` to hold (it must never render); a new one by
            default.
    """

    def __init__(
        self,
        tp: TierParams,
        settings: RenderSettings,
        synth: Any = None,
        *,
        resident: bool = True,
        prepared: bool = False,
    ) -> None:
        vt = VitaThread.get()
        self._owns_synth = synth is None
        if synth is None:
            synth = vt.new_synth()
        self.tp = tp
        self.settings = settings
        self.synth = synth
        if not prepared:
            self.prepare()
        self.applier = LabelApplier(synth, tp)
        self._shape = (2, settings.samples)
        row_bytes = 2 * settings.samples * 4
        n = settings.notes_per_preset
        self._map = mmap.mmap(-1, n * row_bytes + 8 * n)
        self._audio = np.ndarray((n, *self._shape), np.float32, self._map, 0)
        self._outcome = np.ndarray((n,), np.int32, self._map, n * row_bytes)
        self._pid = os.getpid()
        self.resident = (
            Resident(
                self._render_into,
                self.applier.set_raw,
                self._outcome,
                settings.timeout_s,
                Outcome.TIMEOUT,
            )
            if resident
            else None
        )

    def prepare(self) -> None:
        """Put the Synth in this engine's state: its sample rate and the init preset.

        Every render forks from (or, resident, was forked from) that state. A Synth
        prepared twice renders some presets differently from one prepared once (tier-3
        modulations, docs/vita.md), so engines that share a Synth prepare it only when it
        is at another sample rate.
        """
        synth, rate = self.synth, self.settings.sample_rate

        def init() -> None:
            synth.set_sample_rate(rate)
            synth.load_init_preset()

        # vita allocates in its own thread and arena; Python's lists stay in this one
        # (farm.render.pages).
        VitaThread.get().call(init)

    def render(
        self,
        label: Label,
        notes: Sequence[int | Played] | None = None,
        *,
        allow_unknown_modulation: bool = False,
    ) -> list[NoteRender]:
        """Render ``label`` at each note (default: the settings' notes), each from a clean
        state.

        Args:
            label: the preset to render.
            notes: what to play (:func:`farm.render.performance.performances`), at most
                ``settings.notes_per_preset`` rows; plain MIDI notes play at the settings'
                velocity and note length (fixed settings only).
            allow_unknown_modulation: fault injection only; skip the modulation-name check
                so an unknown destination really segfaults vita (in a child).

        Returns:
            One :class:`NoteRender` per note, in the order given. A preset that cannot be
            applied (unknown modulation name, ...) returns ERROR for every note without
            rendering.
        """
        if os.getpid() != self._pid:
            raise RuntimeError("a RenderEngine must be used by the process that built it")
        played = self._played(notes)
        try:
            self.applier.check(label, allow_unknown_modulation=allow_unknown_modulation)
        except PresetError as e:
            return [_result(p, Outcome.ERROR, None, str(e)) for p in played]
        self._outcome[: len(played)] = Outcome.PENDING
        slots = list(range(len(played)))
        r = self.resident
        if (
            r is not None
            and r.usable
            and self.applier.is_plain(label)
            and not allow_unknown_modulation
        ):
            slots = r.render(self.applier.raw_values(label), played, slots)
        self._fork_path(label, played, slots)
        results = []
        for i, p in enumerate(played):
            outcome = Outcome(int(self._outcome[i]))
            audio = self._audio[i].copy() if outcome == Outcome.OK else None
            detail = "vita could not apply the preset" if outcome == Outcome.ERROR else ""
            results.append(_result(p, outcome, audio, detail))
        return results

    def _fork_path(self, label: Label, played: tuple[Played, ...], slots: list[int]) -> None:
        """Render ``slots`` in a preset child, again for notes whose child was killed from
        outside; every slot ends with its outcome.

        Raises:
            RenderKilledError: their children were killed every one of the tries.
        """
        for _ in range(RENDER_TRIES):
            if not slots:
                return
            status = self._run_child(label, tuple(played[i] for i in slots), slots)
            for i in slots:
                if self._outcome[i] == Outcome.PENDING:
                    # The child died before this note finished; a clean exit that left a
                    # note unwritten is a bug in the child, never audio to keep.
                    self._outcome[i] = Outcome.ERROR if status == Outcome.OK else status
            slots = [i for i in slots if self._outcome[i] == Outcome.KILLED]
            for i in slots:
                self._outcome[i] = Outcome.PENDING
        if slots:
            raise RenderKilledError(
                f"the render of a note was killed from outside {RENDER_TRIES} times (the "
                "kernel's out-of-memory killer? see `dmesg`): not the preset's fault, so "
                "its rows are not left out"
            )

    def _played(self, notes: Sequence[int | Played] | None) -> tuple[Played, ...]:
        s = self.settings
        if notes is None and s.varied:
            raise ValueError("varied render settings: give each row's Played")
        if notes is None:
            notes = performances(s, 0, 0)  # fixed settings: the same for every preset
        out = []
        for n in notes:
            if isinstance(n, Played):
                out.append(n)
                continue
            if s.varied:
                raise ValueError("varied render settings: give each row's Played")
            assert not isinstance(s.velocity, tuple) and not isinstance(s.note_duration, tuple)
            out.append(Played(int(n), s.velocity, s.note_duration))
        if len(out) > s.notes_per_preset:
            raise ValueError("more notes than the engine was built for")
        return tuple(out)

    def _run_child(self, label: Label, notes: tuple[Played, ...], slots: list[int]) -> Outcome:
        """Fork the preset child and wait; returns the outcome for notes it left PENDING."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # preset child: never returns
            code = _EXIT_UNEXPECTED
            try:
                # A vita segfault is an expected outcome here: no Python traceback dump.
                faulthandler.disable()
                _arm(self.settings.timeout_s)
                self.applier.apply(label)
                code = self._render_notes(notes, slots)
            except PresetError:
                code = _EXIT_PRESET_ERROR
            finally:
                os._exit(code)
        return _outcome_of(_wait(pid))

    def _render_notes(self, notes: tuple[Played, ...], slots: list[int]) -> int:
        """In the preset child: a grandchild per note, the last note rendered in place."""
        last = len(notes) - 1
        limit = self.settings.timeout_s
        for k, (i, note) in enumerate(zip(slots, notes, strict=True)):
            if k == last:
                _arm(limit)
                self._render_into(i, note)
                break
            # The grandchild's own timer fires first; this one only guards the wait.
            _arm(limit + 5.0)
            pid = os.fork()
            if pid == 0:  # note grandchild (a fork clears inherited timers)
                code = _EXIT_UNEXPECTED
                try:
                    _arm(limit)
                    self._render_into(i, note)
                    code = _EXIT_OK
                finally:
                    os._exit(code)
            outcome = _outcome_of(_wait(pid))
            if self._outcome[i] == Outcome.PENDING:
                self._outcome[i] = outcome
        return _EXIT_OK

    def _render_into(self, i: int, p: Played) -> None:
        s = self.settings
        audio = self.synth.render(p.note, p.velocity, p.note_duration, s.render_duration)
        if audio.shape != self._shape:
            self._outcome[i] = Outcome.SHAPE
            return
        self._audio[i] = audio
        self._outcome[i] = Outcome.OK

    def close(self) -> None:
        """End the resident child and release the shared audio buffer."""
        if self.resident is not None:
            self.resident.close()
        self.resident = None  # its bound methods hold this engine
        if self._owns_synth and self.synth is not None:
            key = id(self.synth)
            self.synth = self.applier = None  # type: ignore[assignment]
            VitaThread.get().drop(key)
        del self._audio, self._outcome
        self._map.close()


def _result(p: Played, outcome: Outcome, audio: np.ndarray | None, detail: str) -> NoteRender:
    return NoteRender(p.note, outcome, audio, detail, p.velocity, p.note_duration)


def _arm(seconds: float) -> None:
    """(Re)start this process's SIGALRM timer: its default action kills the process, which
    the parent reads as TIMEOUT. vita's render runs in C without the GIL, so no Python
    handler could interrupt it."""
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue


def _outcome_of(status: int) -> Outcome:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGALRM:
            return Outcome.TIMEOUT
        return Outcome.CRASH if sig in CRASH_SIGNALS else Outcome.KILLED
    code = os.WEXITSTATUS(status)
    if code == _EXIT_OK:
        return Outcome.OK
    return Outcome.ERROR
