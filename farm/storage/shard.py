"""The appendable HDF5 writer: one per worker process (a shard) or per local run.

Rows are appended in any number and :meth:`ShardWriter.flush` makes them durable: a writer
killed after a flush leaves a readable file up to that flush. With ``atomic=True`` the file
is written under ``NAME.<pid>-<token>.tmp`` (unique: two collectors of one run never write
one file) and renamed to ``NAME`` only by :meth:`ShardWriter.close`,
so a finished name always holds a complete file.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from farm.config import NoteDraw, RenderSettings, RunSpec
from farm.disk import is_disk_full
from farm.errors import OutputPathError, ShardBusyError
from farm.params.active import active_mask
from farm.params.label import Label
from farm.params.modulation import CHANNEL_MAX, CHANNEL_MIN, CHANNELS, to_matrix
from farm.params.registry import modulation_names
from farm.params.tiers import TierParams
from farm.paths import temp_name
from farm.storage import schema
from farm.storage.compression import audio_dtype, dataset_options
from farm.storage.features import band_moments, create_features, write_feature_stats
from farm.storage.integrity import checksums
from farm.storage.splits import side_of
from farm.storage.tables import write_library_tables

if TYPE_CHECKING:
    from farm.presets.library import Library

_META_CHUNK = 4096


@dataclass(frozen=True)
class Row:
    """One accepted row: a rendered note and the label that produced it.

    Attributes:
        job: the preset's sampling block (the row key, with ``preset``).
        preset: the preset's index in its block.
        note: MIDI note.
        label: the preset's label.
        audio: float32 (channels, T), as stored.
        rms: RMS over both channels.
        peak: absolute peak.
        loudness: BS.1770 integrated loudness (LUFS).
        dc: mean sample value.
        audio_hash: the audio as stored, hashed (duplicate rows have equal hashes).
        velocity: the note-on velocity played.
        note_duration: seconds the key was held.
        features: the spec's features (channels, bands, frames), or None.
    """

    job: int
    preset: int
    note: int
    label: Label
    audio: np.ndarray
    rms: float
    peak: float
    loudness: float = float("nan")
    dc: float = 0.0
    audio_hash: str = ""
    velocity: float = 0.8
    note_duration: float = 1.5
    features: np.ndarray | None = None

    @property
    def key(self) -> tuple[int, int, int]:
        """(job, preset, note): unique within a run; canonical order sorts by it."""
        return (self.job, self.preset, self.note)


def is_lock_error(e: BaseException) -> bool:
    """True for HDF5's "unable to lock file" (another process has the file open). Matched
    exactly: a truncated file's message mentions "sblock", which also contains "lock"."""
    return "unable to lock file" in str(e).lower()


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes a dataset's bytes."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "hdf5": h5py.version.hdf5_version}
    for pkg in ("farm", "vita", "numpy", "h5py"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            out[pkg] = "unknown"
    return out


def _candidate_notes(r: RenderSettings) -> list[int]:
    if isinstance(r.notes, NoteDraw):
        return list(range(r.notes.lo, r.notes.hi + 1))
    return list(r.notes)


class ShardWriter:
    """Writes rows of one run into one HDF5 file with the dataset schema.

    Args:
        path: the file to produce.
        spec: the run spec (stored as attributes).
        tp: the run's tier parameters (column names and ranges).
        registry_fingerprint: fingerprint of the registry the labels index.
        atomic: write under a unique ``path.*.tmp`` and rename on :meth:`close`.
        append: reopen an existing shard and append to it (shards only).
        library: the run's library; a final (atomic) file gets its tables on close.

    Raises:
        OutputPathError: the file cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: RunSpec,
        tp: TierParams,
        registry_fingerprint: str,
        *,
        atomic: bool = True,
        append: bool = False,
        library: Library | None = None,
    ) -> None:
        self.final_path = Path(path)
        self.library = library
        #: A streamed library's files the rows' presets could not use ([origin, reason]),
        #: listed with the library's skipped files (set before :meth:`close`).
        self.unreadable: list[list[str]] = []
        self.path = temp_name(self.final_path) if atomic else (self.final_path)
        self.spec = spec
        self.tp = tp
        self.rows = 0
        if append and atomic:
            raise ValueError("append is for shards (atomic=False)")
        if append and self.path.exists():
            # Another open of this shard (a collector reading it) holds HDF5's file lock:
            # the caller retries on ShardBusyError.
            try:
                self._f = h5py.File(self.path, "a")
            except OSError as e:
                if is_lock_error(e):
                    raise ShardBusyError(f"{self.path} is open elsewhere") from e
                raise OutputPathError(f"cannot open shard {self.path}: {e}") from e
            if self._f.attrs.get("run_spec") != spec.data_json():
                self._f.close()
                raise OutputPathError(f"{self.path} belongs to another run spec")
            self.rows = int(self._f[schema.AUDIO].shape[0])
            return
        try:
            self._f = h5py.File(self.path, "w")
        except OSError as e:
            if is_disk_full(e):
                raise
            raise OutputPathError(f"cannot create {self.path}: {e}") from e
        try:
            self._create(registry_fingerprint)
        except BaseException:
            self.abort()  # a full disk (or a missing codec) leaves no half-made file
            raise

    @property
    def file(self) -> Any:
        """The open ``h5py.File`` (for the merger's raw chunk copy)."""
        return self._f

    def _create(self, fingerprint: str) -> None:
        f, spec, tp = self._f, self.spec, self.tp
        r = spec.render
        t = r.samples
        f.attrs.update(
            {
                "schema_version": schema.SCHEMA_VERSION,
                "tier": spec.tier,
                "sample_rate": r.sample_rate,
                # Ranges drawn per row: the candidate notes and (lo, hi); each row's own
                # values are in metadata/midi_note, velocity and note_duration.
                "notes": np.array(_candidate_notes(r), dtype=np.int32),
                "velocity": np.asarray(r.velocity, dtype=np.float64),
                "note_duration": np.asarray(r.note_duration, dtype=np.float64),
                "render_duration": r.render_duration,
                "seed": spec.seed,
                "registry_fingerprint": fingerprint,
                # The data part only: files of one spec are equal whatever the batch size.
                "run_spec": spec.data_json(),
                "rejections": "{}",
                "renders": 0,
                "versions": json.dumps(library_versions(), sort_keys=True),
                "compression": spec.compression.model_dump_json(),
            }
        )
        ch = r.channels
        f.create_dataset(
            schema.AUDIO,
            shape=(0, ch, t),
            maxshape=(None, ch, t),
            chunks=(1, ch, t),
            dtype=audio_dtype(spec.compression),
            **dataset_options(spec.compression),
        )
        c = len(tp.continuous)
        cont = f.create_dataset(
            schema.CONTINUOUS, (0, c), maxshape=(None, c), chunks=(256, max(c, 1)), dtype="f4"
        )
        cont.attrs["names"] = [s.name for s in tp.continuous]
        cont.attrs["raw_min"] = tp.raw_min
        cont.attrs["raw_max"] = tp.raw_max
        cont.attrs["raw_default"] = np.array([s.default for s in tp.continuous])
        cont.attrs["integer"] = tp.integer
        cont.attrs["scale"] = [s.scale for s in tp.continuous]
        k = len(tp.categorical)
        cat = f.create_dataset(
            schema.CATEGORICAL, (0, k), maxshape=(None, k), chunks=(256, max(k, 1)), dtype="i4"
        )
        cat.attrs["names"] = [s.name for s in tp.categorical]
        cat.attrs["options"] = json.dumps({s.name: list(s.options) for s in tp.categorical})
        cat.attrs["raw_min"] = tp.cat_min
        if tp.modulation:
            sources, destinations = modulation_names()
            shape = (len(CHANNELS), len(sources), len(destinations))
            mod = f.create_dataset(
                schema.MODULATION,
                (0, *shape),
                maxshape=(None, *shape),
                chunks=(1, *shape),
                dtype="f4",
                # Mostly zeros (<= 64 of 13,696 cells): gzip shrinks 219 KB to a few hundred
                # bytes and plain h5py reads it.
                compression="gzip",
                compression_opts=1,
                shuffle=True,
            )
            mod.attrs["sources"] = list(sources)
            mod.attrs["destinations"] = list(destinations)
            mod.attrs["channels"] = list(CHANNELS)
            mod.attrs["channel_min"] = np.array(CHANNEL_MIN)
            mod.attrs["channel_max"] = np.array(CHANNEL_MAX)
        for name, width in ((schema.ACTIVE_CONTINUOUS, c), (schema.ACTIVE_CATEGORICAL, k)):
            f.create_dataset(
                name, (0, width), maxshape=(None, width), chunks=(256, max(width, 1)), dtype=bool
            )
        f.create_dataset(
            schema.WAVETABLE, (0, 3), maxshape=(None, 3), chunks=(_META_CHUNK, 3), dtype="i4"
        )
        for name, dtype in schema.METADATA.items():
            f.create_dataset(
                schema.meta(name), (0,), maxshape=(None,), chunks=(_META_CHUNK,), dtype=dtype
            )
        if spec.features is not None:
            create_features(f, spec)
        f.create_dataset(
            schema.CHECKSUM, (0,), maxshape=(None,), chunks=(_META_CHUNK,), dtype="S32"
        )

    def append(self, rows: Sequence[Row]) -> None:
        """Append rows with their checksums (not yet durable: call :meth:`flush`)."""
        if not rows:
            return
        f = self._f
        n0, n1 = self.rows, self.rows + len(rows)
        columns = self._columns(rows)
        names = self._row_names()
        # Each column in its stored dtype, so the checksum covers the bytes on disk.
        arrays = [np.asarray(columns[name], dtype=f[name].dtype) for name in names[:-1]]
        arrays.append(checksums(arrays))
        for name, data in zip(names, arrays, strict=True):
            f[name].resize(n1, axis=0)
            f[name][n0:n1] = data
        self.rows = n1

    def _columns(self, rows: Sequence[Row]) -> dict[str, Any]:
        """Every per-row dataset's values for ``rows`` (stacked, before dtype casts)."""
        columns: dict[str, Any] = {
            schema.AUDIO: np.stack([r.audio for r in rows]),
            schema.CONTINUOUS: np.stack([r.label.continuous for r in rows]),
            schema.CATEGORICAL: np.stack([r.label.categorical for r in rows]),
            schema.WAVETABLE: np.array([r.label.wavetables for r in rows], np.int32),
        }
        if self.tp.modulation:
            sources, destinations = modulation_names()
            # Rows of one preset share a label: build its 219 KB matrix once.
            matrices: dict[int, np.ndarray] = {}
            for r in rows:
                if id(r.label) not in matrices:
                    matrices[id(r.label)] = to_matrix(r.label.modulations, sources, destinations)
            columns[schema.MODULATION] = np.stack([matrices[id(r.label)] for r in rows])
        masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for r in rows:
            if id(r.label) not in masks:
                masks[id(r.label)] = active_mask(r.label, self.tp)
        columns[schema.ACTIVE_CONTINUOUS] = np.stack([masks[id(r.label)][0] for r in rows])
        columns[schema.ACTIVE_CATEGORICAL] = np.stack([masks[id(r.label)][1] for r in rows])
        if self.spec.features is not None:
            kind = self.spec.features.kind
            feats = [r.features for r in rows]
            if any(x is None for x in feats):
                raise ValueError(f"the spec asks for {kind} features and a row has none")
            stacked = np.stack(feats)  # type: ignore[arg-type]
            columns[schema.features(kind)] = stacked
            columns[schema.moments(kind)] = np.stack([band_moments(x) for x in stacked])
        meta: dict[str, list[Any]] = {
            "midi_note": [r.note for r in rows],
            "source": [r.label.source.encode()[:10] for r in rows],
            "tier": [r.label.tier for r in rows],
            "preset_hash": [r.label.hash.encode() for r in rows],
            "preset_name": [r.label.name.encode()[:80] for r in rows],
            "job": [r.job for r in rows],
            "preset": [r.preset for r in rows],
            "rms": [r.rms for r in rows],
            "peak": [r.peak for r in rows],
            "loudness": [r.loudness for r in rows],
            "dc": [r.dc for r in rows],
            "library_preset": [r.label.state for r in rows],
            "velocity": [r.velocity for r in rows],
            "note_duration": [r.note_duration for r in rows],
        }
        meta["split"] = [
            side_of(r.label.hash, self.spec.splits, self.spec.seed).encode() for r in rows
        ]
        for name, values in meta.items():
            columns[schema.meta(name)] = np.array(values, dtype=schema.METADATA[name])
        return columns

    def _row_names(self) -> list[str]:
        kinds = (self.spec.features.kind,) if self.spec.features is not None else ()
        return schema.row_datasets(self.tp.modulation, kinds)

    def datasets(self) -> list[Any]:
        """Every per-row dataset (first axis = row), audio first, the checksum last."""
        return [self._f[n] for n in self._row_names()]

    def flush(self) -> None:
        """Make every appended row durable on disk."""
        self._f.flush()

    def set_rejections(self, rejections: Mapping[str, int], renders: int) -> None:
        """Store rejection counts by reason (JSON) and the number of notes rendered."""
        self._f.attrs["rejections"] = json.dumps(dict(sorted(rejections.items())))
        self._f.attrs["renders"] = int(renders)

    def close(self, rejections: Mapping[str, int] | None = None, renders: int = 0) -> Path:
        """Finish the file (rejection counts, flush, rename) and return its final path."""
        if rejections is not None:
            self.set_rejections(rejections, renders)
        if self.path != self.final_path:
            write_library_tables(self._f, self.library, self.unreadable)
            if self.spec.features is not None:
                write_feature_stats(self._f, self.spec.features.kind)
        self._f.close()
        if self.path != self.final_path:
            os.replace(self.path, self.final_path)
        return self.final_path

    def abort(self) -> None:
        """Close and delete an unfinished atomic file (a non-atomic shard is kept)."""
        try:
            if self._f.id.valid:
                self._f.close()
        except (OSError, RuntimeError):
            pass  # closing flushes, which fails on the full disk that brought us here
        finally:
            if self.path != self.final_path:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._f.id.valid:
            self.close()
