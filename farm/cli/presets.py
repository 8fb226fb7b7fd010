"""Commands for real presets and wavetables: ``discover-wt``, ``download-presets``,
``rerender``. Registered on the ``farm`` group by :mod:`farm.cli`."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from farm.errors import OutputPathError, SourceError
from farm.paths import write_atomic

#: Public preset repositories ``download-presets`` fetches by default. Check each one's
#: licence before publishing a dataset made from it (this one: CC BY 4.0).
DEFAULT_REPOS = ("https://github.com/instatetragrammaton/Patches",)


def register(
    cli: click.Group, data_dir_option: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the preset commands to ``cli``."""

    @cli.command("discover-wt")
    @click.option("-o", "--output", required=True, help="Catalog file (.json or .json.gz).")
    @click.option("--extra-dir", "extra_dirs", multiple=True, help="More folders (repeatable).")
    @click.option("--no-vital-folders", is_flag=True, help="Skip Vital's own preset folders.")
    @click.option("--force", is_flag=True, help="Replace an existing catalog.")
    @data_dir_option
    def discover_wt(
        output: str, extra_dirs: tuple[str, ...], no_vital_folders: bool, force: bool, data_dir: str
    ) -> None:
        """Collect every distinct wavetable of .vital/.vitalbank/.vitaltable files."""
        from farm.paths import check_output, resolve_output
        from farm.presets.files import TABLE_SUFFIX, scan, vital_folders
        from farm.store import canonical, object_hash

        Path(data_dir).mkdir(parents=True, exist_ok=True)
        out = resolve_output(data_dir, output, output, (".json", ".json.gz"), confine=False)
        check_output(out, force=force)
        dirs = [Path(d) for d in extra_dirs]
        if not no_vital_folders:
            dirs += vital_folders("user") + vital_folders("factory")
        if not dirs:
            raise SourceError("no folders to search: give --extra-dir (Vital's were not found)")
        found = scan(dirs, suffixes=(".vital", ".vitalbank", TABLE_SUFFIX))
        entries: dict[str, dict[str, Any]] = {}
        total = 0
        for f in found.files:
            tables, reason = _wavetables_of(f.data, f.origin.endswith(TABLE_SUFFIX))
            if reason:
                found.skip(f.origin, reason)
            for wt in tables:
                total += 1
                h = object_hash(wt)
                entries.setdefault(
                    h, {"name": str(wt.get("name", "")), "hash": h, "source": f.origin, "data": wt}
                )
        doc = canonical(
            {"format": "farm-wavetable-catalog-1", "wavetables": list(entries.values())}
        )
        data = gzip.compress(doc, mtime=0) if out.name.endswith(".gz") else doc
        write_atomic(out, data)
        click.echo(
            f"wrote {out}: {len(entries)} distinct wavetables ({total} found in "
            f"{len(found.files)} files of {len(dirs)} folder(s)), {len(data) / 1e6:.1f} MB"
        )
        reasons = Counter(r for _, r in found.skipped)
        if reasons:
            click.echo(
                "skipped: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())), err=True
            )

    @cli.command("download-presets")
    @click.option("-o", "--output", default="presets", show_default=True, help="Folder.")
    @click.option("--repo", "repos", multiple=True, help="Git URL (repeatable).")
    @data_dir_option
    def download_presets(output: str, repos: tuple[str, ...], data_dir: str) -> None:
        """Clone (or update) public preset repositories with git."""
        from farm.paths import resolve_folder

        Path(data_dir).mkdir(parents=True, exist_ok=True)
        root = resolve_folder(data_dir, output)
        root.mkdir(parents=True, exist_ok=True)
        for url in repos or DEFAULT_REPOS:
            dest = root / _repo_folder(url)
            if (dest / ".git").is_dir():
                _git(["git", "-C", str(dest), "pull", "--ff-only", "--quiet"], url)
                what = "updated"
            else:
                if dest.exists():
                    raise SourceError(f"{dest} exists and is not a git clone")
                tmp = dest.with_name(dest.name + ".tmp")
                if tmp.exists():
                    import shutil

                    shutil.rmtree(tmp)
                _git(["git", "clone", "--depth", "1", "--quiet", url, str(tmp)], url)
                os.replace(tmp, dest)
                what = "cloned"
            count = sum(1 for p in dest.rglob("*") if p.suffix.lower() in (".vital", ".vitalbank"))
            click.echo(f"{what} {url} -> {dest} ({count} preset files)")

    @cli.command()
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("-s", "--index", type=int, required=True, help="Row index.")
    @click.option("-o", "--output", required=True, help="WAV file (inside the data folder).")
    @click.option("--force", is_flag=True, help="Replace an existing WAV.")
    @data_dir_option
    def rerender(file: str, index: int, output: str, force: bool, data_dir: str) -> None:
        """Render one row again from the dataset file alone, into a WAV."""
        from farm.errors import DatasetError
        from farm.paths import check_output, resolve_output
        from farm.tools.rerender import rerender as render_row
        from farm.tools.rerender import write_wav

        if not Path(file).is_file():
            raise DatasetError(f"no dataset file {file}")
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        out = resolve_output(data_dir, output, output, (".wav",), confine=False)
        check_output(out, force=force)
        audio, rate = render_row(Path(file), index)
        write_wav(out, audio, rate)
        rms = float(abs(audio).mean())
        click.echo(f"wrote {out}: row {index}, {audio.shape[1] / rate:.2f} s, mean |x| {rms:.4g}")


def _wavetables_of(data: bytes, is_table: bool) -> tuple[list[dict[str, Any]], str | None]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return [], "malformed_json"
    if is_table:
        return ([doc], None) if _is_wavetable(doc) else ([], "not_a_wavetable")
    settings = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(settings, dict):
        return [], "not_a_preset"
    tables = settings.get("wavetables", [])
    if not isinstance(tables, list):
        return [], "not_a_preset"
    good = [t for t in tables if _is_wavetable(t)]
    return good, None if len(good) == len(tables) else "bad_wavetable"


def _is_wavetable(t: Any) -> bool:
    return isinstance(t, dict) and isinstance(t.get("groups"), list)


def _repo_folder(url: str) -> str:
    """A safe folder name for a repository URL (``owner-name``)."""
    import re

    parts = [p for p in re.split(r"[/:]", url.rstrip("/").removesuffix(".git")) if p]
    name = "-".join(parts[-2:]) if len(parts) >= 2 else (parts[-1] if parts else "repo")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not name:
        raise OutputPathError(f"cannot name a folder after {url!r}")
    return name


def _git(argv: list[str], url: str) -> None:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    except FileNotFoundError:
        raise SourceError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"git timed out on {url}") from None
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1]
        raise SourceError(f"git could not fetch {url} (offline?): {last}")
