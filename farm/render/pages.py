"""vita's memory, found and watched page by page (Linux).

The resident renderer (:mod:`farm.render.resident`) gives each row a clean synth state by
copying back the pages a render wrote instead of forking a fresh process. That needs two
things from the kernel and from glibc, both here:

* **Where vita's state lives.** The engine's Synth is built in a thread of its own
  (:class:`VitaThread`), so glibc serves its allocations from that thread's malloc arena:
  64 MiB-aligned *heaps* whose header names the arena. Those heaps, plus the writable
  segments of vita's extension module (its statics), hold every byte a render of a plain
  label reads or writes; Python's own objects live elsewhere (the main arena, pymalloc's
  arenas). ``M_MMAP_THRESHOLD`` is raised first so that no vita buffer gets a private
  ``mmap`` outside the arena.
* **Which pages a render wrote.** ``userfaultfd`` in asynchronous write-protect mode
  (Linux 6.7+) marks pages; a write clears the mark without stopping the process, and the
  ``PAGEMAP_SCAN`` ioctl on ``/proc/self/pagemap`` lists the pages written since.

Where either is missing (another kernel, a seccomp profile that refuses ``userfaultfd``,
another libc), :func:`supported` says why and the engine forks per note as before.
"""

from __future__ import annotations

import atexit
import bisect
import ctypes
import os
import platform
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: glibc's HEAP_MAX_SIZE on 64-bit: every non-main arena heap starts at a multiple of it.
HEAP_ALIGN = 64 << 20
#: glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2).
_MMAP_THRESHOLD_MAX = 32 << 20
_M_MMAP_THRESHOLD = -3

_SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}
_UFFD_USER_MODE_ONLY = 1
_UFFD_API = 0xAA
_FEATURE_WP_UNPOPULATED = 1 << 13
_FEATURE_WP_ASYNC = 1 << 15
_REGISTER_MODE_WP = 1 << 1
_WRITEPROTECT_MODE_WP = 1 << 0
_PAGE_IS_WRITTEN = 1 << 1


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


class _Api(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


class _Register(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


class _WriteProtect(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64), ("mode", ctypes.c_uint64)]


class _PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("cats", ctypes.c_uint64)]


class _ScanArg(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "size",
            "flags",
            "start",
            "end",
            "walk_end",
            "vec",
            "vec_len",
            "max_pages",
            "category_inverted",
            "category_mask",
            "category_anyof_mask",
            "return_mask",
        )
    ]


_UFFDIO_API = _iowr(_UFFD_API, 0x3F, ctypes.sizeof(_Api))
_UFFDIO_REGISTER = _iowr(_UFFD_API, 0x00, ctypes.sizeof(_Register))
_UFFDIO_WRITEPROTECT = _iowr(_UFFD_API, 0x06, ctypes.sizeof(_WriteProtect))
_PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(_ScanArg))

Range = tuple[int, int]
T = TypeVar("T")
#: Threads started at most to find an arena no thread used before (glibc allows 8 per core).
_ARENA_TRIES = 64


def _STOP() -> None:
    """The call that ends a :class:`VitaThread`'s loop."""


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def main_cache_holds(regions: list[Range]) -> bool:
    """True when this thread's malloc cache (glibc's tcache) holds chunks of ``regions``:
    vita memory freed by this thread, which its next small allocations would reuse."""
    libc = _LIBC
    chunks = [libc.malloc(size) for size in range(24, 1033, 16) for _ in range(8)]
    hit = any(lo <= p < hi for p in chunks for lo, hi in regions)
    for p in chunks:
        libc.free(p)
    return hit


class Unsupported(Exception):
    """The resident renderer cannot work in this process (the reason is the message)."""


class VitaThread:
    """A thread that owns vita's malloc arena: every call that builds or changes the
    engine's Synth outside a render child runs here, so vita's objects stay in the
    arena's heaps (:func:`arena_regions`) and never mix with Python's.

    One per process (:meth:`get`); it lives as long as the process, so no other thread
    is ever handed its arena. Calls are handed over through two pipes, not Python's
    locks and conditions: those allocate in the waiting thread and may be freed by the
    other, and a chunk of vita's arena freed by another thread lands in that thread's
    malloc cache, from where Python could take it (:func:`main_cache_holds`).
    """

    _instance: VitaThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._todo: list[Callable[[], Any]] = []
        self._out: list[Any] = []
        self._owned: dict[int, Any] = {}
        self._calls = threading.Lock()
        self._req_r, self._req_w = os.pipe()
        self._done_r, self._done_w = os.pipe()
        self.arena = self.heap = 0
        self.error = ""
        #: Calls made so far: vita's memory in this process changes only through them, so
        #: an unchanged count means unchanged memory (:mod:`farm.render.resident`).
        self.calls = 0
        self._thread = threading.Thread(target=self._loop, name="vita-arena", daemon=True)
        self._thread.start()
        self._probe()
        atexit.register(self._drop_all)

    @classmethod
    def get(cls) -> VitaThread:
        """This process's vita thread (started on first use; a forked child starts its
        own, since a fork keeps only the calling thread)."""
        with cls._lock:
            inst = cls._instance
            if inst is None or not inst._thread.is_alive():
                if sys.platform == "linux":
                    # Before the first vita allocation: buffers up to 32 MiB come from the
                    # arena's heaps, never from a private mmap the page watch would miss.
                    _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                inst = cls._instance = cls._fresh()
            return inst

    @classmethod
    def _fresh(cls) -> VitaThread:
        """A vita thread on a malloc arena no other thread has used. glibc hands a new
        thread an arena from its free list first, and a forked child finds every arena of
        its parent's threads there, with whatever those threads left in them. So threads
        are started, and kept busy, until one lands in a heap that did not exist before."""
        stale: list[VitaThread] = []
        try:
            for _ in range(_ARENA_TRIES):
                before = {lo for lo, _ in _anon_rw() if lo % HEAP_ALIGN == 0}
                vt = VitaThread()
                if vt.error or vt.heap not in before:
                    return vt
                stale.append(vt)  # holds that used arena while the next thread looks
            vt = stale.pop()
            vt.error = f"no fresh malloc arena after {_ARENA_TRIES} threads"
            return vt
        finally:
            for old in stale:
                old._stop()

    def new_synth(self) -> Any:
        """A new ``vita.Synth``, built in this thread and held here until :meth:`drop`."""

        def build() -> Any:
            import vita

            synth = vita.Synth()
            self._owned[id(synth)] = synth
            return synth

        return self.call(build)

    def drop(self, key: int) -> None:
        """Let go of the Synth whose ``id`` is ``key``: vita then frees its memory in this
        thread, where it was allocated. While anything else still holds it, it stays here
        for good (a leak, not a hazard): the last reference must not go in another thread.
        """

        def release() -> None:
            synth = self._owned.get(key)
            # The dict, this name and getrefcount's argument: nothing else.
            if synth is not None and sys.getrefcount(synth) == 3:
                del self._owned[key], synth

        self.call(release)

    def _drop_all(self) -> None:
        if self._thread.is_alive():
            self.call(self._owned.clear)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the vita thread and return its result (or raise its error)."""
        with self._calls:
            self.calls += 1
            self._todo.append(fn)
            os.write(self._req_w, b"c")
            os.read(self._done_r, 1)
            out = self._out.pop()
        if isinstance(out, BaseException):
            raise out
        return out  # type: ignore[no-any-return]

    def _loop(self) -> None:
        while True:
            os.read(self._req_r, 1)
            fn = self._todo.pop()
            if fn is _STOP:
                return
            try:
                out = fn()
            except BaseException as e:  # handed to the caller
                out = e
            self._out.append(out)
            # Hold nothing between calls: a daemon thread's references outlive the
            # interpreter, and a Synth never destroyed aborts the process at exit.
            del fn, out
            os.write(self._done_w, b"d")

    def _probe(self) -> None:
        """Find this thread's arena: the header of the heap a fresh allocation lands in.
        Only the allocation runs in the thread: Python garbage made there (ctypes makes
        classes, which only the cycle collector frees, in whatever thread it runs) would
        be vita memory freed by another thread."""
        if sys.platform != "linux":
            self.error = "not Linux"
            return
        p = int(self.call(lambda: _free_after(_LIBC, _LIBC.malloc(64))))
        self.heap = p & ~(HEAP_ALIGN - 1)
        if not any(lo == self.heap for lo, _ in _anon_rw()):
            self.error = "vita's thread shares the main malloc arena"
            return
        self.arena = ctypes.c_uint64.from_address(self.heap).value

    def _stop(self) -> None:
        """End the thread (its arena goes back to glibc's free list)."""
        with self._calls:
            self._todo.append(_STOP)
            os.write(self._req_w, b"s")
        self._thread.join()
        for fd in (self._req_r, self._req_w, self._done_r, self._done_w):
            os.close(fd)


def _free_after(libc: Any, p: int) -> int:
    libc.free(p)
    return p


_LIBC: Any = _libc() if sys.platform == "linux" else None


def _maps() -> list[tuple[int, int, str, str]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


def _anon_rw() -> list[Range]:
    return [(lo, hi) for lo, hi, perm, path in _maps() if perm == "rw-p" and not path]


def arena_regions(arena: int, module_file: str) -> list[Range]:
    """The memory that holds vita's state: every heap of ``arena`` and the writable
    segments of the extension module ``module_file`` with the anonymous ``.bss`` right
    after them.

    A heap is found by glibc's ``heap_info`` header at its 64 MiB-aligned start, which
    names its arena. The heap is every writable anonymous mapping inside that aligned
    64 MiB: the kernel may split one heap into several mappings.
    """
    maps = _maps()
    heaps = {
        lo
        for lo, _, perm, path in maps
        if perm == "rw-p"
        and not path
        and lo % HEAP_ALIGN == 0
        and ctypes.c_uint64.from_address(lo).value == arena
    }
    regions = []
    for i, (lo, hi, perm, path) in enumerate(maps):
        if perm != "rw-p":
            continue
        if not path and lo - lo % HEAP_ALIGN in heaps:
            regions.append((lo, min(hi, lo - lo % HEAP_ALIGN + HEAP_ALIGN)))
        elif path == module_file:
            regions.append((lo, hi))
            if i + 1 < len(maps):
                nlo, nhi, nperm, npath = maps[i + 1]
                if nlo == hi and nperm == "rw-p" and not npath:
                    regions.append((nlo, nhi))
    return merge(regions)


class WriteWatch:
    """Asynchronous write-protection of ``regions`` and the list of pages written since.

    Args:
        regions: page-aligned address ranges of this process.

    Raises:
        Unsupported: no ``userfaultfd`` with asynchronous write-protect, or no
            ``PAGEMAP_SCAN`` (the message says which).
    """

    def __init__(self, regions: list[Range]) -> None:
        self._libc = libc = _LIBC
        nr = _SYS_USERFAULTFD.get(platform.machine())
        if nr is None:
            raise Unsupported(f"no userfaultfd number known for {platform.machine()}")
        fd = libc.syscall(nr, os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY)
        if fd < 0:
            raise Unsupported(f"userfaultfd refused: {os.strerror(ctypes.get_errno())}")
        self._fd = int(fd)
        self._pagemap = -1
        try:
            api = _Api(_UFFD_API, _FEATURE_WP_ASYNC | _FEATURE_WP_UNPOPULATED, 0)
            self._ioctl(self._fd, _UFFDIO_API, api, "asynchronous write-protect")
            for lo, hi in regions:
                self._ioctl(
                    self._fd,
                    _UFFDIO_REGISTER,
                    _Register(lo, hi - lo, _REGISTER_MODE_WP, 0),
                    "register",
                )
            self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
            self._vec = (_PageRegion * 1024)()
            self.regions = list(regions)
            self.protect(self.regions)
            self.written()  # PAGEMAP_SCAN itself (Linux 6.7+)
        except BaseException:
            self.close()
            raise

    def _ioctl(self, fd: int, request: int, arg: ctypes.Structure, what: str) -> int:
        r = int(self._libc.ioctl(fd, request, ctypes.byref(arg)))
        if r < 0:
            raise Unsupported(f"{what} refused: {os.strerror(ctypes.get_errno())}")
        return r

    def protect(self, ranges: list[Range], on: bool = True) -> None:
        """Write-protect ``ranges`` (``on``) or lift the protection."""
        mode = _WRITEPROTECT_MODE_WP if on else 0
        for lo, hi in ranges:
            self._ioctl(self._fd, _UFFDIO_WRITEPROTECT, _WriteProtect(lo, hi - lo, mode), "protect")

    def written(self) -> list[Range]:
        """Page ranges of the regions that are not write-protected: written since they
        were protected, or never protected."""
        out: list[Range] = []
        n_vec = len(self._vec)
        for lo, hi in self.regions:
            start = lo
            while start < hi:
                arg = _ScanArg(size=ctypes.sizeof(_ScanArg), start=start, end=hi)
                arg.vec, arg.vec_len = ctypes.addressof(self._vec), n_vec
                arg.category_mask = arg.return_mask = _PAGE_IS_WRITTEN
                n = self._ioctl(self._pagemap, _PAGEMAP_SCAN, arg, "PAGEMAP_SCAN")
                out.extend((self._vec[i].start, self._vec[i].end) for i in range(n))
                if n < n_vec or arg.walk_end >= hi:
                    break
                start = int(arg.walk_end)
        return out

    def close(self) -> None:
        """Close the descriptors (the protection ends with them)."""
        for fd in (self._pagemap, self._fd):
            if fd >= 0:
                os.close(fd)
        self._pagemap = self._fd = -1


def merge(ranges: list[Range]) -> list[Range]:
    """Sorted, non-overlapping ranges covering ``ranges``."""
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def outside(ranges: list[Range], cover: list[Range]) -> list[Range]:
    """The parts of ``ranges`` that ``cover`` (sorted, non-overlapping) does not contain."""
    starts = [lo for lo, _ in cover]
    out = []
    for lo, hi in ranges:
        pos = lo
        i = max(bisect.bisect_right(starts, lo) - 1, 0)
        while pos < hi:
            while i < len(cover) and cover[i][1] <= pos:
                i += 1
            if i == len(cover) or cover[i][0] >= hi:
                out.append((pos, hi))
                break
            if cover[i][0] > pos:
                out.append((pos, cover[i][0]))
            pos = cover[i][1]
    return out
