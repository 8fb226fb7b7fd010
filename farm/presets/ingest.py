"""A run's real presets and wavetables, from folders and a catalog into its library.

Called by ``farm submit`` and ``farm generate`` before the run starts: it reads every
preset (skipping bad files with a counted reason), stores the presets and wavetables once
in the data folder's store, and returns the :class:`SourceSettings` the run spec carries.
A streamed library (``--stream-presets``) stores the files unread instead; the workers read
them as they render (:mod:`farm.presets.library`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from farm.config import SourceSettings
from farm.errors import SourceError
from farm.presets.cache import PresetCache
from farm.presets.convert import Converted, convert, vita_version
from farm.presets.files import Scan, SourceFile, scan, vital_folders
from farm.presets.library import build_library, build_streamed_library, read_catalog
from farm.store import Store

#: Presets read (not from the cache) from which the summary suggests ``--stream-presets``.
STREAM_HINT = 500


@dataclass
class Prepared:
    """The sources of a run and what happened reading them."""

    sources: SourceSettings = field(default_factory=SourceSettings)
    counts: dict[str, int] = field(default_factory=dict)
    scan: Scan = field(default_factory=Scan)
    cached: int = 0
    dropped_modulations: int = 0
    streamed: bool = False

    def lines(self, limit: int = 20) -> list[str]:
        """A short human summary: presets read per source, skipped files by reason."""
        if not self.sources.library:
            return []
        read = ", ".join(f"{v} {k}" for k, v in self.counts.items()) or "none"
        out = [f"presets read: {read}; catalog wavetables: {self.sources.catalog}"]
        if self.streamed:
            out = [
                f"preset files: {read}, read by the workers as they render them (a file vita "
                f"cannot use is counted as FILE_* rejections); catalog wavetables: "
                f"{self.sources.catalog}"
            ]
        if self.cached:
            out[0] += f" ({self.cached} known from an earlier read)"
        fresh = sum(self.counts.values()) - self.cached
        if not self.streamed and fresh >= STREAM_HINT:
            out.append(
                f"{fresh} presets were read before the first render: --stream-presets starts "
                "at once and the workers read them as they render"
            )
        reasons = self.scan.reasons
        if reasons:
            out.append(
                f"skipped {sum(reasons.values())} file(s): "
                + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
            )
            out += [f"  skipped {origin}: {reason}" for origin, reason in self.scan.skipped[:limit]]
            if len(self.scan.skipped) > limit:
                out.append(f"  ... and {len(self.scan.skipped) - limit} more")
        if self.dropped_modulations:
            out.append(
                f"{self.dropped_modulations} modulation connection(s) with names vita does "
                "not list were dropped"
            )
        return out


def prepare_sources(
    data_dir: str | Path,
    community_dirs: Sequence[str | Path] = (),
    factory: bool = False,
    catalog: str | Path | None = None,
    on_progress: Callable[[str], None] | None = None,
    workers: int = 1,
    stream: bool = False,
) -> Prepared:
    """Read the run's presets and catalog into a library in ``data_dir``'s store.

    Args:
        data_dir: the data folder (its ``.store`` is shared with the workers).
        community_dirs: folders searched recursively for ``.vital``/``.vitalbank`` files.
        factory: also read Vital's factory presets where Vital installs them.
        catalog: a wavetable catalog from ``farm discover-wt``.
        on_progress: receives a progress line now and then.
        workers: processes reading presets at once. A preset read before in this data
            folder (the same bytes) is taken from :class:`farm.presets.cache.PresetCache`.
        stream: store the files unread, in a streamed library (:mod:`farm.presets.library`):
            the workers read each preset when they render it. Files with the same bytes as
            an earlier one are skipped as ``duplicate``; other bad files are found then.

    Raises:
        SourceError: a folder is missing, no factory presets are installed, the catalog is
            unreadable, or the folders hold no usable preset at all.
    """
    out = Prepared()
    if not community_dirs and not factory and catalog is None:
        return out
    converted: list[Converted] = []
    groups: list[tuple[str, list[Path]]] = []
    cache = PresetCache(data_dir)
    if community_dirs:
        groups.append(("community", [Path(d) for d in community_dirs]))
    if factory:
        folders = vital_folders("factory")
        if not folders:
            raise SourceError(
                "--factory: no Vital factory presets on this machine (Vital's Factory folder "
                "was not found)"
            )
        groups.append(("factory", folders))
    if stream:
        return _streamed(out, data_dir, groups, catalog, workers)
    for source, dirs in groups:
        found = scan(dirs)
        out.scan.files += found.files
        out.scan.skipped += found.skipped

        def progress(done: int, total: int, source: str = source) -> None:
            if on_progress is not None:
                on_progress(f"reading {source} presets: {done}/{total}")

        conv = convert(
            found.files, source, out.scan, cache=cache, workers=workers, on_progress=progress
        )
        converted.append(conv)
        out.counts[source] = len(conv.records)
        out.dropped_modulations += conv.dropped_modulations
    if groups and not any(c.records for c in converted):
        raise SourceError(
            "no usable preset in the given folders"
            + (f" ({len(out.scan.skipped)} skipped)" if out.scan.skipped else "")
        )
    out.cached = cache.hits
    entries = read_catalog(Path(catalog)) if catalog is not None else []
    sha, presets, n_catalog = build_library(
        Store(data_dir), converted, entries, skipped=out.scan.skipped
    )
    out.sources = SourceSettings(library=sha, presets=presets, catalog=n_catalog)
    return out


def _streamed(
    out: Prepared,
    data_dir: str | Path,
    groups: Sequence[tuple[str, list[Path]]],
    catalog: str | Path | None,
    workers: int,
) -> Prepared:
    """A streamed library of the groups' files, unread (see :func:`prepare_sources`)."""
    entries = read_catalog(Path(catalog)) if catalog is not None else []
    files: list[tuple[str, SourceFile]] = []
    seen: set[bytes] = set()
    for source, dirs in groups:
        found = scan(dirs)
        out.scan.skipped += found.skipped
        kept = 0
        for f in found.files:
            digest = hashlib.sha256(f.data).digest()
            if digest in seen:
                out.scan.skip(f.origin, "duplicate")
                continue
            seen.add(digest)
            files.append((source, f))
            kept += 1
        out.scan.files += found.files
        out.counts[source] = kept
    if groups and not files:
        raise SourceError(
            "no preset file in the given folders"
            + (f" ({len(out.scan.skipped)} skipped)" if out.scan.skipped else "")
        )
    sha, presets, n_catalog = build_streamed_library(
        Store(data_dir), files, vita_version(), entries, out.scan.skipped, workers
    )
    out.streamed = True
    out.sources = SourceSettings(library=sha, presets=presets, catalog=n_catalog)
    return out
