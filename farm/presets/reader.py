"""A preset reader process for a process that must not hold a second Synth: a render
worker reading a streamed library (:mod:`farm.presets.library`).

vita must not build a Synth in a worker's engine process (it would change some renders,
docs/vita.md), and a fresh Synth in a child per file costs about 0.2 s more than the read
itself (268 against 69 ms a file, measured on the shared presets). So the first read forks
a reader process that builds one Synth of its own and reads each file the way the
submitter's reading pool does (:func:`farm.presets.convert._read_one`: a child per file,
so a file that crashes vita costs only that child). The reader closes every descriptor it
inherited but its two pipes, and dies with the process that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from typing import Any

from farm.presets.convert import read_with
from farm.presets.files import SourceFile
from farm.render.forked import die_with_parent, read_exact, write_all

_SIZE = struct.Struct("<Q")


class Reader:
    """Reads preset files in a process of its own (started at the first read)."""

    def __init__(self) -> None:
        self._pid = 0
        self._owner = 0
        self._to = self._from = -1

    def read(self, f: SourceFile) -> dict[str, Any]:
        """What ``f`` holds, or ``{"reason": ...}`` (:func:`farm.presets.convert.read_file`'s
        answer). A reader that died is started again once; then the file is read in a child
        with a fresh Synth."""
        for _ in range(2):
            if self._pid == 0 or self._owner != os.getpid():
                self._start()
            try:
                write_all(self._to, _SIZE.pack(len(f.data)) + f.data)
                head = read_exact(self._from, _SIZE.size, None)
                body = read_exact(self._from, _SIZE.unpack(head)[0], None) if head else None
            except OSError:
                body = None
            if body is not None:
                found: dict[str, Any] = json.loads(body)
                return found
            self.close()
        return read_with(None, f)

    def close(self) -> None:
        """End the reader process (its pipe closes: it exits)."""
        if self._pid and self._owner == os.getpid():
            for fd in (self._to, self._from):
                os.close(fd)
            os.kill(self._pid, 9)
            os.waitpid(self._pid, 0)
        self._pid, self._to, self._from = 0, -1, -1

    def _start(self) -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the reader: never returns
            try:
                die_with_parent()
                for fd in _open_fds() - {to_r, from_w, 0, 1, 2}:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                _serve(to_r, from_w)
            finally:
                os._exit(0)
        os.close(to_r)
        os.close(from_w)
        self._pid, self._owner, self._to, self._from = pid, os.getpid(), to_w, from_r


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _serve(requests: int, replies: int) -> None:
    import vita

    from farm.params.registry import modulation_names

    synth = vita.Synth()
    modulation_names()  # once here, not once per file's child
    while (head := read_exact(requests, _SIZE.size, None)) is not None:
        data = read_exact(requests, _SIZE.unpack(head)[0], None)
        if data is None:
            return
        reply = json.dumps(read_with(synth, SourceFile("", "", data))).encode()
        write_all(replies, _SIZE.pack(len(reply)) + reply)
