"""Real presets into records: what a community or factory preset is, in farm's terms.

vita reads each file itself (``load_json`` upgrades presets of older Vital versions and
refuses newer ones), in a child forked from a Synth that never loads anything, so a preset
that crashes vita costs only itself. From the loaded synth the child reads:

* every registry parameter's raw value (a parameter the file lacks has vita's default);
* the modulation slots in slot order: connections whose names vita does not list are
  dropped and counted (connecting one would segfault the render);
* the non-scalar state (LFO shapes, the sample) and the three oscillators' wavetables.

A record is plain JSON. The coordinator stores it in the content-addressed store
(:mod:`farm.store`), wavetables as separate objects, and jobs carry only hashes.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.errors import SourceError
from farm.params.label import Modulation
from farm.params.modulation import CHANNEL_MAX, CHANNEL_MIN, CHANNELS, MAX_SLOTS, canonical
from farm.params.registry import get_registry, modulation_names
from farm.presets.cache import PresetCache
from farm.presets.files import Scan, SourceFile
from farm.render.forked import CRASH_SIGNALS, call_in_child

#: Settings keys that are preset state but not parameters: kept and injected as they are.
STATE_KEYS = ("lfos", "sample")
#: A connection whose slot values are all zero vanishes from the tier-3 matrix; one that
#: another slot modulates (``modulation_N_amount``) still matters, so it keeps this amount.
TINY_AMOUNT = 1e-6

#: The newest Vital release vita's sources match. vita's own ``synth_version`` is a
#: placeholder (99999.9.9) and its ``load_json`` accepts any lower version, so a preset from
#: a newer Vital would load without complaint and render features vita does not have.
NEWEST_VITAL = (1, 5, 5)

#: Seconds a file's read may take (a read takes about 0.1 s) before it is a ``timeout``.
READ_TIMEOUT_S = 60

#: Reads of one file while the answer is ``error`` (a failure that is not the file's).
READ_TRIES = 3

_META = re.compile(r"^modulation_(\d+)_(amount|power)$")


@dataclass
class Converted:
    """Records made from preset files, and what was lost on the way."""

    records: list[dict[str, Any]] = field(default_factory=list)
    dropped_modulations: int = 0


def convert(
    files: Sequence[SourceFile],
    source: str,
    scan: Scan,
    *,
    cache: PresetCache | None = None,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> Converted:
    """Read each file with vita (one forked child per file) into a record.

    Args:
        files: preset files (from :func:`farm.presets.files.scan`).
        source: ``community`` or ``factory`` (stored in each row).
        scan: where skipped files are recorded (``malformed_json``, ``not_a_preset``,
            ``newer_version``, ``rejected_by_vita``, ``crash``, ``timeout``, ``duplicate``).
        cache: what earlier reads found, by file content: a file read before is not read
            again.
        workers: processes reading at once (each with its own Synth and a child per file;
            never this process, which may render next).
        on_progress: called with (done, total) now and then.

    Returns:
        Records in file order, each with a ``wavetables`` list of the three oscillators'
        wavetable JSON (replaced by hashes when stored). The same whatever ``workers`` and
        ``cache`` are.
    """
    # Built here once: a child would build it again for every file and lose it (0.2 s).
    get_registry()
    # Nothing else of vita's runs in this process: ``farm generate`` renders in it next,
    # and a Synth built, or vita's modulation names listed, before its engine's Synth
    # changes some renders (docs/vita.md). The readers are processes of their own.
    own_version = vita_version()
    found: list[dict[str, Any] | None] = [None] * len(files)
    todo = []
    for i, f in enumerate(files):
        found[i] = _known(f, own_version, cache)
        if found[i] is None:
            todo.append(i)
    done = len(files) - len(todo)
    for i, read in zip(todo, _read_all([files[i] for i in todo], workers), strict=True):
        found[i] = _keep(cache, files[i], read)
        done += 1
        if on_progress is not None and (done % 25 == 0 or done == len(files)):
            on_progress(done, len(files))
    out = Converted()
    seen: set[str] = set()
    for f, got in zip(files, found, strict=True):
        assert got is not None
        reason = got.get("reason")
        if reason is None:
            rec = record_of(got, f, source)
            key = json.dumps([rec["raw"], rec["modulations"], rec["state"]], sort_keys=True)
            key += json.dumps(rec["wavetables"], sort_keys=True)
            if key in seen:
                reason = "duplicate"
            else:
                seen.add(key)
                out.dropped_modulations += rec["dropped_modulations"]
                out.records.append(rec)
        if reason is not None:
            scan.skip(f.origin, reason)
    if on_progress is not None and files and not todo:
        on_progress(len(files), len(files))
    return out


def vita_version() -> tuple[int, ...]:
    """The newest preset version this vita reads (:data:`NEWEST_VITAL` at most), asked of a
    Synth in a child, so the calling process's vita memory stays as it was.

    Raises:
        SourceError: the child did not answer.
    """

    def ask() -> bytes:
        import vita

        return str(json.loads(vita.Synth().to_json()).get("synth_version")).encode()

    data, status = call_in_child(ask)
    if data is None:  # else every file would read as newer than this vita
        raise SourceError(f"vita could not say its version (wait status {status})")
    return min(NEWEST_VITAL, _version(data.decode()))


def read_file(
    f: SourceFile,
    own_version: Sequence[int],
    cache: PresetCache | None = None,
    reader: Callable[[SourceFile], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What one file holds, read as :func:`convert` reads it (the same dict, cached the same
    way), or ``{"reason": ...}``, in a process with no Synth to read with: by ``reader``
    (:class:`farm.presets.reader.Reader`), else in a child that builds a fresh Synth. A
    render worker's clean-state Synth is never touched (a second Synth in that process
    would change some renders, docs/vita.md).
    """
    found = _known(f, tuple(own_version), cache)
    if found is None:
        found = _keep(cache, f, tried(reader or functools.partial(read_with, None), f))
    return found


def tried(read: Callable[[SourceFile], dict[str, Any]], f: SourceFile) -> dict[str, Any]:
    """``read(f)``, again while its answer is ``error``, up to :data:`READ_TRIES` times.

    An ``error`` is not cached and not the file's fault: once given, a fault (a read
    child killed, out of memory) would leave that preset's rows out of a streamed run
    that a run without the fault keeps.
    """
    for _ in range(READ_TRIES - 1):
        found = read(f)
        if found.get("reason") != "error":
            return found
    return read(f)


def _known(
    f: SourceFile, own_version: tuple[int, ...], cache: PresetCache | None
) -> dict[str, Any] | None:
    """What ``f`` holds without vita: a reason the check finds, or the cached read (None:
    it must be read)."""
    reason = _precheck(f, own_version)
    if reason is not None:
        return {"reason": reason}
    return cache.get(f.data) if cache is not None else None


def _keep(cache: PresetCache | None, f: SourceFile, read: dict[str, Any]) -> dict[str, Any]:
    """``read``, kept in the cache unless it is an ``error`` (which may not happen again)."""
    if cache is not None and read.get("reason") != "error":
        cache.put(f.data, read)
    return read


def record_of(read: dict[str, Any], f: SourceFile, source: str) -> dict[str, Any]:
    """A record: what the file says (read once, cached by content) and where it is."""
    content = dict(read)
    name = content.pop("name_in_file") or f.stem
    return {
        "name": str(name)[:80],
        "author": content.pop("author"),
        "source": source,
        "origin": f.origin,
        "licence": f.licence,
        **content,
    }


def _read_all(files: Sequence[SourceFile], workers: int) -> Iterator[dict[str, Any]]:
    """What each file holds (or ``{"reason": ...}``), in order, read by ``workers``
    processes."""
    if not files:
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork: the pool's processes start with this one's registry and vita already loaded.
    # Even one reader is a process of its own, so this one never builds a Synth.
    with ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(files))),
        mp_context=mp.get_context("fork"),
        initializer=_pool_start,
    ) as pool:
        yield from pool.map(_pool_read, files, chunksize=4)


_POOL_SYNTH: Any = None


def _pool_start() -> None:
    global _POOL_SYNTH
    import vita

    _POOL_SYNTH = vita.Synth()
    modulation_names()  # once per reader, not once per file's child


def _pool_read(f: SourceFile) -> dict[str, Any]:
    return tried(functools.partial(read_with, _POOL_SYNTH), f)


def _version(v: Any) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(v).split(".")[:3])
    except ValueError:
        return (0,)


def _precheck(f: SourceFile, own_version: tuple[int, ...]) -> str | None:
    try:
        doc = json.loads(f.data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "malformed_json"
    if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict):
        return "not_a_preset"
    if _version(doc.get("synth_version", "0")) > own_version:
        return "newer_version"
    return None


def read_with(synth: Any, f: SourceFile) -> dict[str, Any]:
    """Load ``f`` in a child of ``synth``'s process (None: the child builds its own Synth):
    what it holds, or ``{"reason": ...}`` (not through the cache)."""

    def work() -> bytes | None:
        import vita

        # A load that never ends would hold the submitter, or a worker's job, for ever. The
        # default action: a Python handler inherited from the parent would never run while
        # vita holds the thread.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(READ_TIMEOUT_S)
        return _content_bytes(vita.Synth() if synth is None else synth, f)

    data, status = call_in_child(work)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGALRM:
            return {"reason": "timeout"}
        # The signal marks a crash told from a kill (see PresetCache.get).
        return {"reason": "crash", "signal": sig} if sig in CRASH_SIGNALS else {"reason": "error"}
    if data is None:
        return {"reason": "rejected_by_vita" if os.WEXITSTATUS(status) == 3 else "error"}
    content: dict[str, Any] = json.loads(data)
    return content


def _content_bytes(synth: Any, f: SourceFile) -> bytes | None:
    content = _read_loaded(synth, f)
    return None if content is None else json.dumps(content).encode()


def _read_loaded(synth: Any, f: SourceFile) -> dict[str, Any] | None:
    """In the child: load the preset and read back what it holds, nothing about where the
    file is (None: vita refused)."""
    text = f.data.decode("utf-8")
    if not synth.load_json(text):
        return None
    doc = json.loads(text)
    reg = get_registry()
    controls = synth.get_controls()
    raw = {p.name: float(controls[p.name].value()) for p in (*reg.continuous, *reg.categorical)}
    settings = json.loads(synth.to_json())["settings"]
    slots = []
    for i, m in enumerate(settings.get("modulations", [])[:MAX_SLOTS], start=1):
        values = [float(controls[f"modulation_{i}_{c}"].value()) for c in CHANNELS]
        slots.append((str(m.get("source", "")), str(m.get("destination", "")), values))
    mods, dropped = slot_connections(slots)
    return {
        "name_in_file": str(doc.get("preset_name") or ""),
        "author": str(doc.get("author", ""))[:200],
        "raw": raw,
        "modulations": [m.to_list() for m in mods],
        "dropped_modulations": dropped,
        "state": {k: settings[k] for k in STATE_KEYS if k in settings},
        "wavetables": list(settings.get("wavetables", [])),
    }


def slot_connections(
    slots: Sequence[tuple[str, str, Sequence[float]]],
) -> tuple[tuple[Modulation, ...], int]:
    """A preset's modulation slots (in slot order) as label connections in canonical order.

    Unknown names are dropped and counted. Connections are renumbered: a destination
    ``modulation_N_amount`` (slot N's amount, modulated) names slot N of the preset, and the
    label connects in canonical order, so it is rewritten to the slot the same connection
    takes there. A connection whose values are all zero would vanish from the tier-3
    matrix; when another slot modulates it, it keeps :data:`TINY_AMOUNT` instead.

    Returns:
        (connections, dropped): dropped counts unknown names, meta-modulations of empty
        slots, and connections past a renumbering that does not settle.
    """
    sources, destinations = modulation_names()
    known_s, known_d = frozenset(sources), frozenset(destinations)
    kept: dict[int, list[Any]] = {}  # original slot -> [source, destination, values]
    dropped = 0
    for slot, (src, dst, values) in enumerate(slots, start=1):
        if not src and not dst:
            continue
        if src not in known_s or dst not in known_d:
            dropped += 1
            continue
        v = np.clip(np.asarray(values, dtype=np.float64), CHANNEL_MIN, CHANNEL_MAX)
        a, b, p, st = v.tolist()
        kept[slot] = [src, dst, [float(np.float32(a)), round(b), float(np.float32(p)), round(st)]]
    targets = {}
    for slot, (_, dst, _) in list(kept.items()):
        meta = _META.match(dst)
        if meta:
            t = int(meta.group(1))
            if t not in kept:
                del kept[slot]  # modulates an empty slot: no effect
                dropped += 1
                continue
            targets[slot] = (t, meta.group(2))
    for slot, (_, _, v) in kept.items():
        if slot in {t for t, _ in targets.values()} and v == [0.0, 0, 0.0, 0]:
            v[0] = float(np.float32(TINY_AMOUNT))
    # Renumber until the canonical order names the same connections (a few rounds at most).
    order = list(kept)
    for _ in range(MAX_SLOTS):
        new_slot = {orig: i + 1 for i, orig in enumerate(order)}
        for slot, (t, what) in targets.items():
            kept[slot][1] = f"modulation_{new_slot[t]}_{what}"
        mods = {slot: Modulation(s, d, v[0], v[1], v[2], v[3]) for slot, (s, d, v) in kept.items()}
        ranked = canonical(list(mods.values()), sources, destinations)
        by_id = {id(m): slot for slot, m in mods.items()}
        new_order = [by_id[id(m)] for m in ranked]
        if new_order == order:
            return ranked, dropped
        order = new_order
    meta_slots = set(targets)  # did not settle: keep the connections that do not depend on it
    plain = [m for slot, m in mods.items() if slot not in meta_slots]
    return canonical(plain, sources, destinations), dropped + len(meta_slots)
