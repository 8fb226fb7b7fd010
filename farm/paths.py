"""Output paths: every file farm writes stays inside the data folder."""

from __future__ import annotations

import os
from pathlib import Path

from farm.errors import OutputExistsError, OutputPathError


def resolve_output(
    data_dir: str | os.PathLike[str],
    given: str | None,
    default: str,
    suffixes: tuple[str, ...] = (".h5",),
) -> Path:
    """The absolute output path for a user's ``-o`` value, confined to ``data_dir``.

    A relative path that already lies in ``data_dir`` (``data/x.h5`` from the project root)
    is taken as it is; any other relative path is taken relative to ``data_dir``. An
    absolute path is accepted only inside ``data_dir``.

    Raises:
        OutputPathError: the path escapes ``data_dir`` (``..``, another absolute folder).
    """
    root = Path(data_dir).resolve()
    name = given if given else default
    p = Path(name)
    if p.is_absolute():
        candidate = p.resolve()
    else:
        here = (Path.cwd() / p).resolve()
        candidate = here if here.is_relative_to(root) else (root / p).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        raise OutputPathError(
            f"output {name!r} is outside the data folder {root} "
            "(set --data-dir or FARM_DATA_DIR to write elsewhere)"
        )
    if not candidate.name.endswith(suffixes):
        raise OutputPathError(f"output {name!r} must end in {' or '.join(suffixes)}")
    return candidate


def check_output(path: Path, *, force: bool) -> None:
    """Refuse an existing output unless ``force``, and a folder that cannot be written.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is False.
        OutputPathError: the folder is missing or not writable, or ``path`` is a folder.
    """
    if path.is_dir():
        raise OutputPathError(f"output {path} is a folder")
    if path.exists() and not force:
        raise OutputExistsError(f"output {path} exists (use --force to replace it)")
    parent = path.parent
    if not parent.is_dir():
        raise OutputPathError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"output folder {parent} is not writable")


def stored_output(data_dir: str | os.PathLike[str], relative: str, suffix: str = ".h5") -> Path:
    """The absolute path of an output stored (in a run's ledger) relative to the data folder.

    Raises:
        OutputPathError: the stored path is absolute or escapes the data folder (a message
            from the queue never decides where a worker writes).
    """
    root = Path(data_dir).resolve()
    p = Path(relative)
    candidate = (root / p).resolve()
    if p.is_absolute() or not candidate.is_relative_to(root) or candidate == root:
        raise OutputPathError(f"stored output {relative!r} escapes the data folder {root}")
    if candidate.suffix != suffix:
        raise OutputPathError(f"stored output {relative!r} must end in {suffix}")
    return candidate


def resolve_folder(data_dir: str | os.PathLike[str], given: str) -> Path:
    """A folder for the user's value, confined to ``data_dir`` like :func:`resolve_output`.

    Raises:
        OutputPathError: the folder escapes ``data_dir``.
    """
    root = Path(data_dir).resolve()
    p = Path(given)
    here = p.resolve() if p.is_absolute() else (Path.cwd() / p).resolve()
    candidate = here if here.is_relative_to(root) else (root / p).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        raise OutputPathError(
            f"folder {given!r} is outside the data folder {root} "
            "(set --data-dir or FARM_DATA_DIR to write elsewhere)"
        )
    return candidate
