"""The resident renderer: clean state for plain labels without a fork per note.

A fork gives every note a clean synth, but the ~6,000 pages a render writes are then
copied on write, one fault each (~3 µs on these machines), and the fork and the exit of a
~300 MB process cost as much again: ~30 ms a note. The resident renderer is one child,
forked once from the engine's process, that renders row after row and puts the synth back
in between: it keeps a copy of the pages of vita's memory that renders write (the *known*
pages), and after each row it copies them back, a few milliseconds of ``memcpy``.

What makes that exact (:mod:`farm.render.pages`):

* vita's memory is known: its own malloc arena and its module's statics, nothing of Python;
* every other page of it is write-protected, and the kernel lists the pages written. A row
  that wrote a page outside the known set is still right (it started clean); the child
  reports the new pages, and the engine process, whose vita memory has not changed since
  the fork (it calls vita only through :class:`~farm.render.pages.VitaThread`, which
  counts its calls), sends their bytes back: the child puts them in place, keeps a copy
  like the other known pages, and goes on. Tier 2's presets keep finding pages for about
  the first 60 presets (voices, effects, buffers only some settings use); a child replaced
  at each of them, as before, cost a fork and its copy-on-write faults each time, 8–13% of
  2 s renders with 2 workers. Where the engine's vita memory did change, or cannot be read,
  the child exits and the next one, forked from the engine process as it is, knows the
  pages too.
* only *plain* labels take this path: setting controls makes vita allocate nothing (counted
  with an ``LD_PRELOAD`` malloc counter: tiers 1 and 2), so restoring the arena's pages
  restores its allocator too. Modulation connections and non-scalar state allocate, and
  keep the fork per note.

A row from the resident renderer is byte-identical to the same row forked from the same
engine process (``tests/test_resident.py``). A crash in the resident child sends the rest of
the preset to the fork path, so a crash is judged (and recorded as ``CRASH``) exactly as
before; a render past the time limit is ``TIMEOUT`` in both.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from farm.render.forked import die_with_parent, read_exact, write_all
from farm.render.pages import (
    Range,
    Unsupported,
    VitaThread,
    WriteWatch,
    arena_regions,
    main_cache_holds,
    merge,
    outside,
)
from farm.render.performance import Played

#: Stop using the resident renderer when the known pages pass this share of vita's memory.
MAX_KNOWN_SHARE = 0.5
#: Stop when this many children in a row had to be replaced before a single clean reuse.
MAX_FRESH_STARTS = 64

_log = logging.getLogger(__name__)
_HEAD = struct.Struct("<ii")  # raw values, notes
_NOTE = struct.Struct("<iidd")  # slot, note, velocity, note duration
_REPLY = struct.Struct("<cii")  # kind, slot, count of new ranges
_RANGE = struct.Struct("<QQ")
_PAGES = struct.Struct("<Q")  # bytes of new pages that follow (0: exit)
#: How long a child that stopped answering may take to become waitable before it is killed.
_REAP_S = 5.0
_DONE, _TAINTED, _UNSUPPORTED = b"D", b"T", b"U"


def _module_file() -> str:
    """Where vita's extension module is mapped from (its statics are vita's state too)."""
    import vita

    mod = sys.modules.get("vita.vita") or vita
    return os.path.realpath(str(getattr(mod, "__file__", "")))


class Resident:
    """The engine's side of the resident child: starts it, sends it rows, learns the pages
    renders write.

    Args:
        render_into: renders one note into a slot of the engine's shared buffers and sets
            its outcome (run in the child).
        set_raw: applies a label's raw values (run in the child).
        outcome: the engine's shared outcome array (written by the child).
        timeout_s: the time limit of one note.
        timed_out: the outcome code of a note past its time limit.
    """

    def __init__(
        self,
        render_into: Callable[[int, Played], None],
        set_raw: Callable[[list[float]], None],
        outcome: np.ndarray,
        timeout_s: float,
        timed_out: int,
    ) -> None:
        self._render_into = render_into
        self._set_raw = set_raw
        self._outcome = outcome
        self._timeout = timeout_s
        self._timed_out = timed_out
        vt = self._vita = VitaThread.get()
        self.arena = vt.arena
        self.error = ""
        if vt.error:
            self._off(vt.error)
        self._calls_at_fork = -1
        self._regions: list[Range] = []
        self._module = _module_file()
        self.known: list[Range] = []
        self._pid = 0
        self._cmd = self._reply = -1
        self._fresh = 0
        self.rows = 0
        self.starts = 0

    @property
    def usable(self) -> bool:
        """False once the resident renderer proved impossible here (see :attr:`error`)."""
        return not self.error

    # -- the engine's side -------------------------------------------------------------

    def render(self, raw: list[float], played: Sequence[Played], slots: Sequence[int]) -> list[int]:
        """Render ``played[k]`` into slot ``slots[k]``, each from a clean state.

        Returns:
            The slots left for the fork path (a child crashed, or the resident renderer
            became unusable); every other slot has its outcome (OK, SHAPE or TIMEOUT).
        """
        todo = list(zip(slots, played, strict=True))
        while todo:
            if not self._start():
                return [s for s, _ in todo]
            self._send(raw, todo)
            while todo:
                reply = self._recv()
                if reply is None:  # the child died or overran: TIMEOUT, or a crash
                    # A child that just died closes its pipe before the kernel makes it
                    # waitable: give it a moment, or a crash would read as a kill (TIMEOUT).
                    status = self._stop(kill=True, grace_s=_REAP_S)
                    slot = todo[0][0]
                    timed_out = status is None or (
                        os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
                    )
                    if not timed_out:
                        if status is not None and os.WIFEXITED(status):
                            self._off(f"the resident child failed (exit {os.WEXITSTATUS(status)})")
                        return [s for s, _ in todo]  # the fork path judges the crash
                    self._outcome[slot] = self._timed_out
                    todo.pop(0)
                    break
                kind, slot, new = reply
                if kind == _UNSUPPORTED:
                    self._stop(kill=True)
                    return [s for s, _ in todo]
                todo.pop(0)
                self.rows += 1
                if kind == _TAINTED:
                    self._learn(new)
                    if not self._send_pages(new):
                        self._stop(kill=False)
                        break
                self._fresh = 0
        return []

    def _start(self) -> bool:
        if self._pid:
            return True
        if not self.usable:
            return False
        if self._fresh >= MAX_FRESH_STARTS:
            self._off(f"{MAX_FRESH_STARTS} resident children in a row wrote new pages")
            return False
        regions = arena_regions(self.arena, self._module)
        self.known = _clip(self.known, regions)
        self._regions = regions
        if self._too_many_known():
            self._off("renders write more than half of vita's memory")
            return False
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the resident child: never returns
            code = 0
            try:
                os.close(cmd_w)
                os.close(rep_r)
                self._serve(cmd_r, rep_w, regions)
            except BaseException:
                code = 4
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(rep_w)
        self._calls_at_fork = self._vita.calls
        self._pid, self._cmd, self._reply = pid, cmd_w, rep_r
        self.starts += 1
        self._fresh += 1
        return True

    def _send(self, raw: list[float], todo: list[tuple[int, Played]]) -> None:
        msg = [_HEAD.pack(len(raw), len(todo)), np.asarray(raw, np.float64).tobytes()]
        for slot, p in todo:
            msg.append(_NOTE.pack(slot, p.note, p.velocity, p.note_duration))
        write_all(self._cmd, b"".join(msg))

    def _recv(self) -> tuple[bytes, int, list[Range]] | None:
        """One reply, or None when the child died or overran its time (then killed)."""
        deadline = time.monotonic() + self._timeout + 5.0
        head = read_exact(self._reply, _REPLY.size, deadline)
        if head is None:
            return None
        kind, slot, n = _REPLY.unpack(head)
        if kind == _UNSUPPORTED:
            text = read_exact(self._reply, n, deadline) or b""
            self._off(text.decode(errors="replace") or "the resident child could not start")
            return kind, slot, []
        body = read_exact(self._reply, n * _RANGE.size, deadline) if n else b""
        if body is None:
            return None
        new = [_RANGE.unpack_from(body, k * _RANGE.size) for k in range(n)]
        return kind, slot, new

    def _off(self, reason: str) -> None:
        """Stop using the resident renderer, and say why once (rows stay clean: the engine
        forks per note instead)."""
        self.error = reason
        _log.warning("resident renderer off (%s): a fork per note from now on", reason)

    def _learn(self, new: list[Range]) -> None:
        self.known = merge(self.known + new)

    def _too_many_known(self) -> bool:
        total = sum(hi - lo for lo, hi in self._regions)
        return sum(hi - lo for lo, hi in self.known) > MAX_KNOWN_SHARE * total

    def _send_pages(self, new: list[Range]) -> bool:
        """Send the child the bytes of pages it wrote outside the known set, as they were
        when it was forked (this process's own: its vita memory changes only through
        VitaThread calls). False, and the child told to exit, when they may have changed
        or cannot be read, or the known set grew past its limit."""
        data = None
        if self._vita.calls == self._calls_at_fork and not self._too_many_known():
            data = _read_own(new)
        if data is None:
            write_all(self._cmd, _PAGES.pack(0))
            return False
        write_all(self._cmd, _PAGES.pack(len(data)))
        write_all(self._cmd, data)  # up to ~30 MB at a new engine's first row: no copy
        return True

    def _stop(self, *, kill: bool, grace_s: float = 0.0) -> int | None:
        """End the child; its wait status (None when it had to be killed). With ``kill``,
        a child still running after ``grace_s`` seconds is killed."""
        if not self._pid:
            return None
        killed = False
        if kill:
            deadline = time.monotonic() + grace_s
            while True:
                try:
                    pid, status = os.waitpid(self._pid, os.WNOHANG)
                except ChildProcessError:
                    pid, status = self._pid, 0
                if pid != 0 or time.monotonic() >= deadline:
                    break
                time.sleep(0.001)
            if pid == 0:
                os.kill(self._pid, signal.SIGKILL)
                killed = True
                status = os.waitpid(self._pid, 0)[1]
        else:
            status = os.waitpid(self._pid, 0)[1]
        for fd in (self._cmd, self._reply):
            os.close(fd)
        self._pid, self._cmd, self._reply = 0, -1, -1
        return None if killed else status

    def close(self) -> None:
        """End the resident child. It waits for a command and holds nothing: killing it
        loses nothing, and waiting for end of file on its pipe could hang, since every
        process forked from this one since holds a copy of the pipe."""
        self._stop(kill=True)
        self.error = self.error or "closed"
        self._render_into = self._set_raw = _closed  # they hold the engine and its Synth

    # -- the child's side --------------------------------------------------------------

    def _serve(self, cmd: int, reply: int, regions: list[Range]) -> None:
        """The resident child's loop: apply, render, copy the known pages back."""
        die_with_parent()
        faulthandler.disable()  # a vita segfault is an expected outcome here
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        # Python's collector must not write into objects that live in vita's pages.
        gc.disable()
        gc.freeze()
        try:
            if main_cache_holds(regions):
                raise Unsupported(
                    "vita's memory was freed outside its thread (a Synth destroyed there)"
                )
            watch = WriteWatch(regions)
            watch.protect(self.known, on=False)
        except Unsupported as e:
            text = str(e).encode()
            write_all(reply, _REPLY.pack(_UNSUPPORTED, 0, len(text)) + text)
            return
        copy = _Copy(self.known)
        while True:
            head = read_exact(cmd, _HEAD.size, None)
            if head is None:
                return
            n_raw, n_notes = _HEAD.unpack(head)
            body = read_exact(cmd, n_raw * 8 + n_notes * _NOTE.size, None)
            if body is None:
                return
            raw = np.frombuffer(body, np.float64, n_raw).tolist()
            off = n_raw * 8
            for _ in range(n_notes):
                slot, note, velocity, note_duration = _NOTE.unpack_from(body, off)
                off += _NOTE.size
                signal.setitimer(signal.ITIMER_REAL, self._timeout)
                self._set_raw(raw)
                self._render_into(slot, Played(note, velocity, note_duration))
                signal.setitimer(signal.ITIMER_REAL, 0)
                new = outside(watch.written(), self.known)
                if not new:
                    copy.restore()
                    write_all(reply, _REPLY.pack(_DONE, slot, 0))
                    continue
                msg = [_REPLY.pack(_TAINTED, slot, len(new))]
                msg += [_RANGE.pack(lo, hi) for lo, hi in new]
                write_all(reply, b"".join(msg))
                head = read_exact(cmd, _PAGES.size, None)
                size = _PAGES.unpack(head)[0] if head else 0
                data = read_exact(cmd, size, None) if size else None
                if data is None or size != sum(hi - lo for lo, hi in new):
                    return  # the engine process cannot vouch for those pages: a new child
                # The new pages stay writable (written pages are no longer protected), so
                # they are known from now on: kept, and put back after every row.
                copy.add(new, data)
                self.known = merge(self.known + new)
                copy.restore()


class _Copy:
    """A copy of some page ranges of this process, to put back after each row."""

    def __init__(self, ranges: list[Range]) -> None:
        size = sum(hi - lo for lo, hi in ranges)
        self._buf = ctypes.create_string_buffer(max(size, 1))
        self._extra: list[ctypes.Array[ctypes.c_char]] = []
        base = ctypes.addressof(self._buf)
        self._plan: list[tuple[int, int, int]] = []
        off = 0
        for lo, hi in ranges:
            self._plan.append((lo, base + off, hi - lo))
            ctypes.memmove(base + off, lo, hi - lo)
            off += hi - lo

    def add(self, ranges: list[Range], data: bytes) -> None:
        """Keep ``data`` (the bytes of ``ranges``, in order) to put back too."""
        buf = ctypes.create_string_buffer(data, len(data))
        self._extra.append(buf)
        base, off = ctypes.addressof(buf), 0
        for lo, hi in ranges:
            self._plan.append((lo, base + off, hi - lo))
            off += hi - lo

    def restore(self) -> None:
        """Copy every range back."""
        move = ctypes.memmove
        for addr, saved, n in self._plan:
            move(addr, saved, n)


def _read_own(ranges: list[Range]) -> bytes | None:
    """This process's bytes in ``ranges`` (through ``/proc/self/mem``, so a range that
    is no longer mapped is an error, not a crash); None when one cannot be read."""
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parts = [os.pread(fd, hi - lo, lo) for lo, hi in ranges]
    except OSError:
        return None
    finally:
        os.close(fd)
    if any(len(p) != hi - lo for p, (lo, hi) in zip(parts, ranges, strict=True)):
        return None
    return b"".join(parts)


def _closed(*_: object) -> None:
    raise RuntimeError("the render engine is closed")


def _clip(ranges: list[Range], regions: list[Range]) -> list[Range]:
    """``ranges`` cut to what ``regions`` still map (a heap can shrink)."""
    out = []
    for lo, hi in ranges:
        for rlo, rhi in regions:
            a, b = max(lo, rlo), min(hi, rhi)
            if a < b:
                out.append((a, b))
    return merge(out)
