"""One call in a forked child, its bytes back through a pipe: for work that may crash vita
or must not touch the calling process's synth state."""

from __future__ import annotations

import os
from collections.abc import Callable


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
