"""``farm gc``: what a data folder holds that no run needs any more.

Shards, output claims and store objects are kept while a run that may still need them is
known to the ledger and not done (running, collecting, failed or cancelled runs can be
resumed). Everything else goes: the shards of done runs and of runs the broker no longer
knows (a lost or wiped broker), claims of those runs, store objects no such run's library
names, temporary files whose writer is gone (a dead process of this host, or older than a
day), and the embedded workers' leftover temporary folders.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from coordinator.ledger import DONE, Ledger, list_runs
from farm.config import RunSpec
from farm.paths import pid_alive, writer_gone
from farm.store import Store

#: A temporary file of another host older than this is taken as abandoned.
TEMP_MAX_AGE_S = 24 * 3600


@dataclass
class Garbage:
    """What ``farm gc`` found: paths with why each can go."""

    items: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes they hold."""
        return sum(_size(p) for p, _ in self.items)

    def remove(self) -> None:
        """Delete them."""
        for path, _ in self.items:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def find_garbage(client: redis.Redis, data_dir: str | os.PathLike[str]) -> Garbage:
    """Everything in ``data_dir`` that no run known to ``client`` still needs."""
    root = Path(data_dir).resolve()
    states: dict[str, str] = {}
    live_store: set[str] = set()
    for run_id in list_runs(client):
        ledger = Ledger(client, run_id)
        meta = ledger.meta()
        states[run_id] = meta.get("state", "")
        if states[run_id] != DONE and meta.get("spec"):
            live_store |= _library_objects(root, RunSpec.from_json(meta["spec"]))
    out = Garbage()
    shards = root / ".shards"
    for folder in sorted(shards.iterdir()) if shards.is_dir() else []:
        why = _why_not_needed(states.get(folder.name))
        if why:
            out.items.append((folder, f"shards of a run {why}"))
    claims = root / ".claims"
    for claim in sorted(claims.iterdir()) if claims.is_dir() else []:
        holder = claim.read_text(errors="replace").split("\n", 1)[0].strip()
        why = _why_not_needed(states.get(holder))
        if why:
            out.items.append((claim, f"output claim of a run {why}"))
    store = root / ".store"
    for obj in sorted(store.glob("*.json.gz")) if store.is_dir() else []:
        if obj.name.removesuffix(".json.gz") not in live_store:
            out.items.append((obj, "store object no resumable run uses"))
    out.items += [(p, "temporary file of a finished writer") for p in _dead_temps(root)]
    farm_dir = root / ".farm"
    for tmp in sorted(farm_dir.glob("tmp-*")) if farm_dir.is_dir() else []:
        pid = tmp.name.removeprefix("tmp-")
        if not (pid.isdigit() and pid_alive(int(pid))):
            out.items.append((tmp, "temporary folder of stopped local workers"))
    return out


def _why_not_needed(state: str | None) -> str:
    """'' when a run in ``state`` may still need its files, else why it does not."""
    if state is None:
        return "the broker does not know"
    return "that is done" if state == DONE else ""


def _library_objects(root: Path, spec: RunSpec) -> set[str]:
    """The store objects a spec's library uses (its manifest, presets and wavetables)."""
    sha = spec.sources.library
    if sha is None:
        return set()
    try:
        manifest = Store(root).get(sha)
    except Exception:  # a missing or corrupt manifest protects nothing else
        return {sha}
    files = [f[0] for f in manifest.get("files", [])]  # a streamed library's files
    return {sha, *manifest.get("presets", []), *manifest.get("wavetables", []), *files}


def _dead_temps(root: Path) -> Iterator[Path]:
    """``*.tmp`` files whose writer is gone (found, not removed)."""
    now = time.time()
    for tmp in root.rglob("*.tmp"):
        if ".farm" in tmp.relative_to(root).parts:
            continue
        try:
            old = now - tmp.stat().st_mtime > TEMP_MAX_AGE_S
        except OSError:
            continue
        if old or writer_gone(tmp):
            yield tmp
