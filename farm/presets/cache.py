"""What reading a preset file found, kept by the file's content, so a preset already read
(in this data folder, by any run) is never read again.

An entry is keyed by the sha256 of the file's bytes together with everything else the read
depends on: vita's version, the parameter registry and this reader's format. A changed
file, another vita or another registry is simply another key. Entries hold what the file
says (parameters, modulations, state, wavetables, its name and author) or why it was
skipped; where the file is (its path, folder licence, source) is added each run. Files
are written to a temporary name and renamed, so a reader never sees half an entry.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from farm.paths import write_atomic

#: Bump when what :func:`farm.presets.convert._read_loaded` returns changes.
FORMAT = 1


def _salt() -> bytes:
    from importlib.metadata import PackageNotFoundError, version

    from farm.params.registry import get_registry

    try:
        vita_version = version("vita")
    except PackageNotFoundError:  # pragma: no cover - vita from a source tree
        vita_version = "unknown"
    return f"{FORMAT}:{vita_version}:{get_registry().fingerprint}:".encode()


class PresetCache:
    """Read results under ``<data_dir>/.cache/presets``.

    Args:
        data_dir: the data folder.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / ".cache" / "presets"
        self._salt = _salt()
        self.hits = 0

    def _path(self, data: bytes) -> Path:
        key = hashlib.sha256(self._salt + data).hexdigest()
        return self.root / f"{key}.json.gz"

    def get(self, data: bytes) -> dict[str, Any] | None:
        """What reading a file of these bytes found, or None (never read, or unreadable)."""
        try:
            found: dict[str, Any] = json.loads(gzip.decompress(self._path(data).read_bytes()))
        except (OSError, ValueError, EOFError):
            return None  # absent or damaged: read the file again
        if found.get("reason") == "crash" and "signal" not in found:
            # Kept before a reading child killed from outside was told from vita crashing
            # (both were "crash"): read again, once.
            return None
        self.hits += 1
        return found

    def put(self, data: bytes, found: dict[str, Any]) -> None:
        """Keep what reading a file of these bytes found."""
        path = self._path(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, gzip.compress(json.dumps(found).encode(), compresslevel=1, mtime=0))
