"""Any row rendered again from the dataset file alone.

A row's label (continuous, categorical, the tier-3 matrix) plus the wavetables and
non-scalar state its references name are everything its render used; the label rebuilt
here hashes to the row's ``preset_hash``, which proves nothing was lost on the way.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from farm.config import RunSpec
from farm.errors import DatasetError
from farm.params.label import Label, Modulation
from farm.params.modulation import from_matrix
from farm.params.registry import get_registry, modulation_names
from farm.params.tiers import TierParams, tier_params
from farm.paths import write_atomic
from farm.render.features import stored_channels
from farm.render.performance import Played, performances
from farm.storage import schema
from farm.storage.reader import FarmReader


@dataclass(frozen=True)
class StoredRow:
    """What one row needs to render again."""

    label: Label
    played: Played
    spec: RunSpec
    tp: TierParams

    @property
    def note(self) -> int:
        """The row's MIDI note."""
        return self.played.note


def read_row(f: Any, index: int) -> StoredRow:
    """Rebuild row ``index`` of an open dataset.

    Raises:
        DatasetError: the index is out of range, the file was made with another parameter
            registry, or the rebuilt label does not hash to the stored one.
    """
    n = f[schema.AUDIO].shape[0]
    if not 0 <= index < n:
        raise DatasetError(f"row {index} is out of range: the file has {n} rows")
    registry = get_registry()
    if f.attrs["registry_fingerprint"] != registry.fingerprint:
        raise DatasetError("the file was made with another vita parameter registry")
    spec = RunSpec.from_json(f.attrs["run_spec"])
    tp = tier_params(registry, spec.tier)
    mods: tuple[Modulation, ...] = ()
    if tp.modulation:
        sources, destinations = modulation_names()
        mods = from_matrix(f[schema.MODULATION][index], sources, destinations)
    wts = tuple(int(w) for w in f[schema.WAVETABLE][index])
    state = int(f[schema.meta("library_preset")][index])
    nonscalar: dict[str, Any] = {}
    if state >= 0:
        nonscalar.update(json.loads(f["presets/state"][state]))
    if min(wts) >= 0:
        nonscalar["wavetables"] = [json.loads(f["wavetables/data"][w]) for w in wts]
    label = Label(
        tier=spec.tier,
        continuous=f[schema.CONTINUOUS][index],
        categorical=f[schema.CATEGORICAL][index],
        modulations=mods,
        name=f[schema.meta("preset_name")][index].decode(),
        source=f[schema.meta("source")][index].decode(),
        extra={"nonscalar": nonscalar} if nonscalar else {},
    )
    stored = f[schema.meta("preset_hash")][index].decode()
    if label.hash != stored:
        raise DatasetError(
            f"row {index}: the label rebuilt from the file does not hash to its preset_hash"
        )
    note = int(f[schema.meta("midi_note")][index])
    if spec.render.varied:
        # Drawn per row and stored as float32, exactly the value rendered.
        played = Played(
            note,
            float(f[schema.meta("velocity")][index]),
            float(f[schema.meta("note_duration")][index]),
        )
    else:
        played = performances(spec.render, spec.seed, 0)[0]
        played = Played(note, played.velocity, played.note_duration)
    return StoredRow(label, played, spec, tp)


def rerender(path: Path, index: int) -> tuple[np.ndarray, int]:
    """Render row ``index`` of dataset ``path`` again; (audio (channels, T) float32 as the
    file stores it, sample rate).

    Raises:
        DatasetError: unreadable file, bad index, or the render failed (crash, ...).
    """
    from farm.render.engine import RenderEngine

    with FarmReader(path) as reader:
        row = read_row(reader.file, index)
    engine = RenderEngine(row.tp, row.spec.render)
    try:
        (r,) = engine.render(row.label, (row.played,))
    finally:
        engine.close()
    if r.audio is None:
        raise DatasetError(f"row {index} did not render again: {r.outcome.name} {r.detail}")
    return stored_channels(r.audio, row.spec.render), row.spec.render.sample_rate


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write (channels, T) float audio as a 32-bit float WAV (temporary name, renamed)."""
    data = np.ascontiguousarray(np.asarray(audio, dtype="<f4").T).tobytes()
    channels = int(audio.shape[0])
    header = b"RIFF" + struct.pack("<I", 4 + 26 + 12 + 8 + len(data)) + b"WAVE"
    # fmt chunk of WAVE_FORMAT_IEEE_FLOAT (3), with cbSize 0, and the fact chunk it needs.
    header += b"fmt " + struct.pack(
        "<IHHIIHHH", 18, 3, channels, sample_rate, sample_rate * 4 * channels, 4 * channels, 32, 0
    )
    header += b"fact" + struct.pack("<II", 4, audio.shape[1])
    header += b"data" + struct.pack("<I", len(data))
    write_atomic(path, header + data)
