"""The content-addressed store: large preset data written once, read by every worker.

Wavetables, LFO shapes and samples can be megabytes; they never travel through Redis. The
coordinator puts each object here once under the sha256 of its canonical JSON
(``data/.store/<sha>.json.gz``), and a job carries only hashes. Workers share the data
folder, so they read the same bytes; an object's name is its hash, so a name from a message
can never point outside the store.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from farm.errors import StoreError
from farm.paths import write_atomic

_HASH = re.compile(r"^[0-9a-f]{64}$")


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces): what an object's hash covers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def object_hash(obj: Any) -> str:
    """sha256 (hex) of an object's canonical JSON."""
    return hashlib.sha256(canonical(obj)).hexdigest()


class Store:
    """Objects by hash under ``<data_dir>/.store``.

    Args:
        data_dir: the farm's data folder (shared by the coordinator and every worker).
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / ".store"

    def path(self, sha: str) -> Path:
        """Where object ``sha`` lives.

        Raises:
            StoreError: ``sha`` is not a sha256 hex digest.
        """
        if not _HASH.match(sha):
            raise StoreError(f"invalid object hash {sha[:80]!r}")
        return self.root / f"{sha}.json.gz"

    def put(self, obj: Any) -> str:
        """Store ``obj`` (if absent) and return its hash. Written to a temporary name and
        renamed, so a reader never sees half an object."""
        data = canonical(obj)
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if path.exists():
            return sha
        self.root.mkdir(parents=True, exist_ok=True)
        # mtime=0: the same object gives the same bytes on every machine.
        write_atomic(path, gzip.compress(data, compresslevel=6, mtime=0))
        return sha

    def get(self, sha: str) -> Any:
        """The object stored under ``sha``.

        Raises:
            StoreError: missing, unreadable, or its bytes do not hash to ``sha``.
        """
        path = self.path(sha)
        try:
            data = gzip.decompress(path.read_bytes())
        except FileNotFoundError:
            raise StoreError(
                f"object {sha[:12]} is missing from {self.root} (do the workers share the "
                "coordinator's data folder?)"
            ) from None
        except (OSError, EOFError) as e:
            raise StoreError(f"object {sha[:12]} in {self.root} is unreadable: {e}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise StoreError(f"object {sha[:12]} in {self.root} is corrupt (hash mismatch)")
        return json.loads(data)
