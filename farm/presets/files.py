"""Finding preset files: ``.vital`` files and ``.vitalbank`` zip banks, read safely.

Nothing here trusts a file: a file over 64 MB, a name that is not UTF-8, a bank entry
whose path climbs out (``../``) or is absolute, or a bank that inflates past its limits
(a zip bomb) is skipped with a counted reason. Bank entries are read into memory, never
extracted, so nothing is written anywhere.
"""

from __future__ import annotations

import os
import platform
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from farm.errors import SourceError

#: A preset file (or bank entry) larger than this is skipped.
MAX_PRESET_BYTES = 64 * 2**20
#: A bank whose entries inflate to more than this in total is skipped as a zip bomb ...
MAX_BANK_BYTES = 2**30
#: ... as is an entry that inflates more than this many times its compressed size.
MAX_RATIO = 200

PRESET_SUFFIX = ".vital"
BANK_SUFFIX = ".vitalbank"
TABLE_SUFFIX = ".vitaltable"


@dataclass(frozen=True)
class SourceFile:
    """One preset (or wavetable) file's bytes.

    Attributes:
        origin: where it came from, for messages and the dataset (``dir/x.vital`` or
            ``bank.vitalbank:Presets/x.vital``).
        stem: the file name without its suffix (the preset name when the JSON has none).
        data: the file's bytes (at most :data:`MAX_PRESET_BYTES`).
        licence: the licence its folder declares (:func:`folder_licence`), or ``""``.
    """

    origin: str
    stem: str
    data: bytes
    licence: str = ""


@dataclass
class Scan:
    """Files found, and the ones skipped with their reasons."""

    files: list[SourceFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def reasons(self) -> Counter[str]:
        """Skipped files counted by reason."""
        return Counter(reason for _, reason in self.skipped)

    def skip(self, origin: str, reason: str) -> None:
        """Record a skipped file."""
        self.skipped.append((origin, reason))


def vital_folders(kind: str, home: Path | None = None, system: str | None = None) -> list[Path]:
    """Where Vital keeps presets on this machine (those that exist), each scanned
    recursively (Vital puts them in ``Presets/`` below these, by pack).

    Vital's data folder is ``~/Music/Vital`` on macOS (and where many Linux users put it,
    copying a Mac layout), ``~/.local/share/vital`` or ``~/Vital`` on Linux, and
    ``Documents/Vital`` on Windows; system-wide installs add ``/Library/Application
    Support/Vital``, ``/usr/share/vital`` or ``ProgramData/Vital``. Presets sit in its
    ``Factory`` and ``User`` folders.

    Args:
        kind: ``user`` or ``factory``.
        home: the home folder (default: the user's).
        system: ``Darwin``, ``Linux`` or ``Windows`` (default: this machine's).
    """
    home = home or Path.home()
    system = system or platform.system()
    if system == "Darwin":
        roots = [home / "Music" / "Vital", Path("/Library/Application Support/Vital")]
    elif system == "Windows":
        docs = Path(os.environ.get("USERPROFILE", str(home))) / "Documents"
        roots = [docs / "Vital", Path(os.environ.get("PROGRAMDATA", "C:/ProgramData")) / "Vital"]
    else:
        roots = [
            home / ".local" / "share" / "vital",
            home / "Vital",
            home / "Music" / "Vital",
            Path("/usr/share/vital"),
        ]
    sub = "Factory" if kind == "factory" else "User"
    return [r / sub for r in roots if (r / sub).is_dir()]


def check_dirs(dirs: Iterable[str | Path]) -> None:
    """Every preset folder given exists and is a folder.

    Raises:
        SourceError: one is missing or is a file.
    """
    for d in dirs:
        if Path(d).exists() and not Path(d).is_dir():
            raise SourceError(
                f"{d} is a file, not a folder of presets (give the folder that holds it)"
            )
        if not Path(d).is_dir():
            raise SourceError(f"preset folder {d} does not exist")


def scan(dirs: Iterable[Path], suffixes: tuple[str, ...] = (PRESET_SUFFIX, BANK_SUFFIX)) -> Scan:
    """Every preset in ``dirs`` (recursive, sorted by path): ``.vital`` files and the
    ``.vital`` entries of ``.vitalbank`` banks.

    Raises:
        SourceError: a folder does not exist.
    """
    out = Scan()
    dirs = list(dirs)
    check_dirs(dirs)
    for d in dirs:
        licences: dict[Path, str] = {}
        for path in _walk(Path(d)):
            origin = _display(path)
            start = len(out.files)
            try:
                path.name.encode("utf-8")
            except UnicodeEncodeError:
                out.skip(origin, "bad_name")
                continue
            suffix = path.suffix.lower()
            if suffix not in suffixes:
                continue
            if suffix == BANK_SUFFIX:
                _read_bank(path, origin, out)
            else:
                _read_file(path, origin, out)
            if len(out.files) > start:
                licence = folder_licence(path.parent, Path(d), licences)
                out.files[start:] = [replace(f, licence=licence) for f in out.files[start:]]
    return out


#: Licence names found in a folder's LICENSE / ATTRIBUTION / README text (most specific
#: first: "Attribution-ShareAlike" before "Attribution").
_LICENCES = (
    (r"attribution[- ]?non[- ]?commercial[- ]?share[- ]?alike|by-nc-sa", "CC BY-NC-SA"),
    (r"attribution[- ]?non[- ]?commercial|by-nc", "CC BY-NC"),
    (r"attribution[- ]?share[- ]?alike[ -]*4\.0|by-sa/4\.0|cc[- ]by[- ]sa[- ]4\.0", "CC BY-SA 4.0"),
    (r"attribution[ -]*4\.0|licenses/by/4\.0|cc[- ]by[- ]4\.0", "CC BY 4.0"),
    (r"attribution[ -]*3\.0|licenses/by/3\.0|cc[- ]by[- ]3\.0", "CC BY 3.0"),
    (r"\bcc0\b|publicdomain/zero", "CC0 1.0"),
    (r"\bmit license\b", "MIT"),
)
_LICENCE_FILES = re.compile(r"^(licen[cs]e|attribution|copying|readme)(\.\w+)?$", re.I)


def folder_licence(folder: Path, root: Path, cache: dict[Path, str]) -> str:
    """The licence a preset's folder declares: the first licence name found in a LICENSE,
    ATTRIBUTION, COPYING or README file of ``folder`` or a folder above it, up to ``root``
    (the folder the user gave); ``""`` when none says. What the dataset card credits."""
    if folder in cache:
        return cache[folder]
    found = ""
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f.is_file() and _LICENCE_FILES.match(f.name) and f.stat().st_size < 1 << 20:
            text = " ".join(f.read_text(errors="replace").lower().split())
            found = next((name for rx, name in _LICENCES if re.search(rx, text)), "")
            if found:
                break
    if not found and folder != root and root in folder.parents:
        found = folder_licence(folder.parent, root, cache)
    cache[folder] = found
    return found


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _display(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _read_file(path: Path, origin: str, out: Scan) -> None:
    try:
        if path.stat().st_size > MAX_PRESET_BYTES:
            out.skip(origin, "too_large")
            return
        data = path.read_bytes()
    except OSError:
        out.skip(origin, "unreadable")
        return
    out.files.append(SourceFile(origin, path.stem, data))


def _read_bank(path: Path, origin: str, out: Scan) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if sum(i.file_size for i in infos) > MAX_BANK_BYTES:
                out.skip(origin, "zip_bomb")
                return
            for info in infos:
                _read_entry(z, info, f"{origin}:{info.filename}", out)
    except (zipfile.BadZipFile, OSError, EOFError):
        out.skip(origin, "bad_bank")


def _read_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str, out: Scan) -> None:
    if info.is_dir():
        return
    name = PurePosixPath(info.filename.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or ":" in info.filename:
        out.skip(origin, "unsafe_path")
        return
    if name.suffix.lower() != PRESET_SUFFIX:
        return
    if info.file_size > MAX_PRESET_BYTES:
        out.skip(origin, "too_large")
        return
    if info.file_size > MAX_RATIO * max(info.compress_size, 1):
        out.skip(origin, "zip_bomb")
        return
    try:
        with z.open(info) as f:
            # The header's size can lie: never read past the limit.
            data = f.read(MAX_PRESET_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
        out.skip(origin, "bad_bank")
        return
    if len(data) > MAX_PRESET_BYTES:
        out.skip(origin, "too_large")
        return
    out.files.append(SourceFile(origin, name.stem, data))
