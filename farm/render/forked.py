"""One call in a forked child, its bytes back through a pipe: for work that may crash vita
or must not touch the calling process's synth state."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time
from collections.abc import Callable

#: Signals a child dies of because of what it ran (vita crashed on a preset or a file). Any
#: other (SIGKILL from the kernel's OOM killer or a person, SIGTERM) says nothing about
#: the work: it is done again, never recorded as the work's crash.
CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP}
)


def call_in_child(fn: Callable[[], bytes | None]) -> tuple[bytes | None, int]:
    """Run ``fn`` in a forked child and return (its bytes, wait status).

    The bytes are None when the child did not finish cleanly or ``fn`` returned None;
    the wait status tells why (``os.WIFSIGNALED`` for a segfault).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            os.close(r)
            data = fn()
            if data is not None:
                view = memoryview(data)
                while view:
                    view = view[os.write(w, view) :]
                code = 0
            else:
                code = 3
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as pipe:  # read before waiting: the child blocks on a full pipe
        while chunk := pipe.read(1 << 20):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return (b"".join(chunks) if ok else None), status


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this (forked) process when its parent dies (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes from ``fd``; None at end of file or past ``deadline``."""
    parts: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, n)
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
