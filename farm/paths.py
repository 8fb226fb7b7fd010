"""Output paths. What a user names on the command line goes where they say; a path that
arrives through the broker or the ledger stays inside the data folder (or an output root
the process was given by whoever started it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from farm.errors import OutputExistsError, OutputPathError
from farm.settings import FarmSettings


def resolve_output(
    data_dir: str | os.PathLike[str],
    given: str | None,
    default: str,
    suffixes: tuple[str, ...] = (".h5",),
    *,
    confine: bool = True,
) -> Path:
    """The absolute output path for a user's ``-o`` value.

    A relative path that already lies in ``data_dir`` (``data/x.h5`` from the project root)
    is taken as it is; any other relative path is taken relative to ``data_dir``. An
    absolute path goes where it says.

    Args:
        confine: keep the output inside ``data_dir``: for outputs that reach another
            process through the broker or the ledger (a farm run's file). A command that
            writes in this process (``generate``, ``inspect --png``, ``rerender -o``)
            writes wherever its user says.

    Raises:
        OutputPathError: a confined path escapes ``data_dir`` (``..``, another absolute
            folder); a bad file name.
    """
    root = Path(data_dir).resolve()
    name = given if given else default
    p = Path(name)
    if p.is_absolute():
        candidate = p.resolve()
    else:
        here = (Path.cwd() / p).resolve()
        candidate = here if here.is_relative_to(root) else (root / p).resolve()
    if candidate == root or (confine and not candidate.is_relative_to(root)):
        raise OutputPathError(
            f"output {name!r} is outside the data folder {root} "
            "(set --data-dir or FARM_DATA_DIR to write elsewhere)"
        )
    check_name(candidate.name, suffixes)
    return candidate


def check_name(name: str, suffixes: tuple[str, ...] = (".h5",)) -> None:
    """A file name farm will write: a non-empty stem, one of ``suffixes``, no control
    characters (a newline or tab in a name breaks every listing and log line).

    Raises:
        OutputPathError: the name is not one of those.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise OutputPathError(f"output name {name!r} contains control characters")
    suffix = next((s for s in suffixes if name.endswith(s)), None)
    if suffix is None:
        raise OutputPathError(f"output {name!r} must end in {' or '.join(suffixes)}")
    if not name[: -len(suffix)].strip(" ."):
        raise OutputPathError(f"output {name!r} needs a name before {suffix}")


def check_output(path: Path, *, force: bool, root: str | os.PathLike[str] | None = None) -> None:
    """Refuse an existing output unless ``force``, and a folder that cannot be written.

    Args:
        path: the output.
        force: replace an existing file.
        root: the data folder, which the caller creates when it is missing (so its
            absence is no error here, and nothing is created to check).

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
        if root is None or parent != Path(root).resolve():
            raise OutputPathError(f"output folder {parent} does not exist")
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"output folder {parent} is not writable")


def stored_output(
    data_dir: str | os.PathLike[str],
    stored: str,
    suffix: str = ".h5",
    roots: tuple[str, ...] = (),
) -> Path:
    """The absolute path of an output stored in a run's ledger: relative to the data
    folder, or absolute inside one of the output roots this process was given.

    Args:
        roots: folders outside the data folder this process may write to
            (:attr:`farm.settings.FarmSettings.output_roots`).

    Raises:
        OutputPathError: the stored path escapes the data folder and the roots (a message
            from the queue never decides where a worker writes); a bad file name.
    """
    root = Path(data_dir).resolve()
    p = Path(stored)
    if p.is_absolute():
        candidate = p.resolve()
        if not any(candidate.is_relative_to(Path(r).resolve()) for r in roots):
            raise OutputPathError(
                f"stored output {stored!r} is outside the data folder {root} and the "
                "output roots this process was given (FARM_OUTPUT_ROOTS)"
            )
    else:
        candidate = (root / p).resolve()
        if not candidate.is_relative_to(root) or candidate == root:
            raise OutputPathError(f"stored output {stored!r} escapes the data folder {root}")
    if candidate.suffix != suffix:
        raise OutputPathError(f"stored output {stored!r} must end in {suffix}")
    check_name(candidate.name, (suffix,))
    return candidate


def run_output(settings: FarmSettings, out: Path, *, embedded: bool) -> tuple[FarmSettings, str]:
    """Where a run writes ``out`` (a path its user gave), as the ledger stores it, and the
    settings its workers need for it.

    Inside the data folder: the path relative to it. Elsewhere: the absolute path, which
    an embedded run's own workers are granted (its folder joins ``output_roots``); a
    broker's workers must have been granted it already.

    Raises:
        OutputPathError: ``out`` is outside the data folder and the roots of a broker run.
    """
    root = Path(settings.data_dir).resolve()
    if out.is_relative_to(root):
        return settings, str(out.relative_to(root))
    if any(out.is_relative_to(Path(r).resolve()) for r in settings.output_roots):
        return settings, str(out)
    if embedded:
        roots = (*settings.output_roots, str(out.parent))
        return settings.model_copy(update={"output_roots": roots}), str(out)
    raise OutputPathError(
        f"output {out} is outside the data folder {root}, where the farm's workers write; "
        "give a path in it, or add its folder to FARM_OUTPUT_ROOTS here and on the workers"
    )


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


class OutputClaim:
    """The claim of one run on one output, made atomically across submitters that share
    the data folder (``O_EXCL`` on ``DATA/.claims/<hash>``): a second run for the same
    output is refused unless ``--force`` takes it over, and a collector writes only the
    output its run still holds.

    Args:
        data_dir: the data folder.
        output: the output, relative to the data folder.
    """

    def __init__(self, data_dir: str | os.PathLike[str], output: str) -> None:
        import hashlib

        self.output = output
        digest = hashlib.sha256(output.encode()).hexdigest()[:32]
        self.path = Path(data_dir).resolve() / ".claims" / digest

    def holder(self) -> str | None:
        """The run holding the output, None when nobody does."""
        try:
            return self.path.read_text().split("\n", 1)[0].strip() or None
        except OSError:
            return None

    def take(self, run_id: str, *, force: bool) -> None:
        """Claim the output for ``run_id``.

        Raises:
            OutputExistsError: another run holds it and ``force`` is False.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = f"{run_id}\n{self.output}\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = self.holder()
            if not force:
                raise OutputExistsError(
                    f"output {self.output} is being made by run {holder} (wait for it, "
                    "or use --force to take the output over)"
                ) from None
            write_atomic(self.path, text.encode())
            return
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def held_by(self, run_id: str) -> bool:
        """True when ``run_id`` holds the output, or nobody does (an older run)."""
        holder = self.holder()
        return holder is None or holder == run_id

    def release(self, run_id: str) -> None:
        """Give the output up (only when ``run_id`` holds it)."""
        if self.holder() == run_id:
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # no empty .claims/ left behind


def this_host() -> str:
    """This machine's name as temporary names carry it (letters and digits)."""
    import socket

    return "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


def temp_name(path: Path) -> Path:
    """A unique temporary name beside ``path`` (``NAME.HOST-PID-TOKEN.tmp``): two writers
    of one output never share a file, and a leftover says which process made it."""
    import secrets

    return path.with_name(f"{path.name}.{this_host()}-{os.getpid()}-{secrets.token_hex(3)}.tmp")


def temp_writer(tmp: Path) -> tuple[str, int] | None:
    """(host, pid) of the process that made a :func:`temp_name` file, None for others."""
    if not tmp.name.endswith(".tmp"):
        return None
    parts = tmp.name[: -len(".tmp")].rsplit(".", 1)[-1].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` of this host exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def writer_gone(tmp: Path) -> bool:
    """True when ``tmp`` was made by a process of this host that no longer exists."""
    who = temp_writer(tmp)
    return who is not None and who[0] == this_host() and not pid_alive(who[1])


def remove_dead_temps(path: Path) -> list[Path]:
    """Remove temporary files of ``path`` left by processes of this host that are gone
    (killed while writing); returns them. Others' (live, or on other hosts) are kept."""
    removed = []
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        if writer_gone(tmp):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary name to write ``path`` through: renamed to ``path`` when the
    block ends, removed when it raises. Readers see the old file or the new one, never a
    part, and two writers never share a temporary file. The one tmp-and-rename of farm."""
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def shard_dir(data_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The folder of a run's shards, inside the data folder (run ids are checked)."""
    return Path(data_dir).resolve() / ".shards" / run_id
