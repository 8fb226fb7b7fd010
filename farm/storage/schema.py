"""The dataset layout (schema 2.8.0: the 2.1.0 layout of the single-machine generator plus
row keys, the preset library, row checksums, loudness and DC, stored splits, per-row
velocity and note length, the active-parameter mask, features and mono audio; nothing of
2.1.0 changed) and its check.

```
audio/waveforms       (N, C, T)        float32 (float16 optional), one row per chunk; C = 2,
                                       or 1 (the mid channel) with render.mono (2.8.0)
params/continuous     (N, C)           float32 [0,1], linear: (raw-min)/(max-min)
params/categorical    (N, K)           int32   option index
params/modulation_t3  (N, 4, 32, 428)  float32 tier 3 only
metadata/midi_note    (N,)             int32
metadata/source       (N,)             S10     synthetic | community | factory
metadata/tier         (N,)             int32
metadata/preset_hash  (N,)             S64     sha256 of the canonical label
metadata/preset_name  (N,)             S80
metadata/job          (N,)             int64   row key: the preset's sampling block (2.2.0)
metadata/preset       (N,)             int32   row key: index in the block (2.2.0);
                                               global preset g = job * block + preset
metadata/rms          (N,)             float32 RMS over both channels (added in 2.2.0)
metadata/peak         (N,)             float32 absolute peak          (added in 2.2.0)
metadata/library_preset (N,)           int32   row of presets/*, -1: synthetic (2.3.0)
params/wavetable      (N, 3)           int32   oscillators' rows of wavetables/*, -1: the
                                               init preset's wavetable          (2.3.0)
wavetables/data       (W,)             str     Vital wavetable JSON, once each  (2.3.0)
wavetables/name, wavetables/hash (W,)  str     name, sha256 of the canonical JSON
presets/state         (P,)             str     JSON of a real preset's non-scalar state
                                               (LFO shapes, sample), once each  (2.3.0)
presets/name, author, origin, source, hash (P,) str; presets/dropped_modulations (P,) int32
presets/licence       (P,)             str     the licence its folder declares, or "" (2.7.0)
metadata/loudness     (N,)             float32 BS.1770 integrated loudness, LUFS (2.5.0)
metadata/dc           (N,)             float32 mean sample value (DC offset)     (2.5.0)
metadata/split        (N,)             S10     train | validation | test, by preset (2.6.0)
metadata/velocity     (N,)             float32 note-on velocity played, 0..1          (2.7.0)
metadata/note_duration (N,)            float32 seconds the key was held               (2.7.0)
params/active_continuous  (N, C)       bool    False: the parameter cannot change this
params/active_categorical (N, K)       bool      row's sound (farm.params.active)     (2.7.0)
features/logmel       (N, C, M, F)     float32 optional (--features logmel; 2.8.0): log-mel
                                       power in dB per stored channel (farm.render.features);
                                       attrs n_mels, n_fft, hop, sample_rate, and mean, std
                                       (M,): per band over the train split's rows
features/logmel_moments (N, 2, M)      float64 per row and band: sum and sum of squares over
                                       channels and frames (mean/std of any subset of rows)
metadata/checksum     (N,)             S32     blake2b-128 of the row's bytes in every other
                                               per-row dataset, made where it was rendered
                                               (2.4.0; `farm verify` re-checks it)
params/importance_continuous  (C,)     float32 optional, added by `farm compute-weights -o`
params/importance_categorical (K,)     float32   (attrs names: column order), mean 1
```

A row re-renders from the file alone (``farm rerender``): its label, plus the wavetables
and state its references name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5s

from farm.errors import DatasetError

SCHEMA_VERSION = "2.8.0"

AUDIO = "audio/waveforms"
CONTINUOUS = "params/continuous"
CATEGORICAL = "params/categorical"
MODULATION = "params/modulation_t3"
WAVETABLE = "params/wavetable"
ACTIVE_CONTINUOUS = "params/active_continuous"
ACTIVE_CATEGORICAL = "params/active_categorical"
#: The first schema whose rows carry the active-parameter mask.
ACTIVE_SINCE = (2, 7, 0)

#: metadata dataset -> (dtype, h5py fill type)
METADATA: dict[str, str] = {
    "midi_note": "int32",
    "source": "S10",
    "tier": "int32",
    "preset_hash": "S64",
    "preset_name": "S80",
    "job": "int64",
    "preset": "int32",
    "rms": "float32",
    "peak": "float32",
    "library_preset": "int32",
    "loudness": "float32",
    "dc": "float32",
    "split": "S10",
    "velocity": "float32",
    "note_duration": "float32",
}

#: Metadata added after 2.3.0: a file of an older schema lacks it (and is still valid).
METADATA_SINCE: dict[str, tuple[int, ...]] = {
    "loudness": (2, 5, 0),
    "dc": (2, 5, 0),
    "split": (2, 6, 0),
    "velocity": (2, 7, 0),
    "note_duration": (2, 7, 0),
}

#: A features kind's datasets: the features and their per-row band moments.
FEATURE_KINDS = ("logmel",)


def features(kind: str) -> str:
    """The dataset path of features ``kind`` (``features/<kind>``)."""
    return f"features/{kind}"


def moments(kind: str) -> str:
    """The dataset path of the per-row band moments of features ``kind``."""
    return f"features/{kind}_moments"


def features_in(f: Any) -> tuple[str, ...]:
    """The feature kinds an open file holds."""
    return tuple(k for k in FEATURE_KINDS if features(k) in f)


IMPORTANCE_CONTINUOUS = "params/importance_continuous"
IMPORTANCE_CATEGORICAL = "params/importance_categorical"


def meta(name: str) -> str:
    """The dataset path of metadata ``name`` (``metadata/<name>``)."""
    return f"metadata/{name}"


CHECKSUM = "metadata/checksum"
#: The first schema whose rows carry checksums.
CHECKSUM_SINCE = (2, 4, 0)


def row_datasets(modulation: bool, kinds: tuple[str, ...] = ()) -> list[str]:
    """Every per-row dataset in the fixed order rows are checksummed in (audio first,
    the checksum itself last), with the features of ``kinds``."""
    names = [AUDIO, CONTINUOUS, CATEGORICAL, WAVETABLE]
    if modulation:
        names.append(MODULATION)
    metadata = [f"metadata/{m}" for m in METADATA]
    feats = [name for k in kinds for name in (features(k), moments(k))]
    return [*names, *metadata, ACTIVE_CONTINUOUS, ACTIVE_CATEGORICAL, *feats, CHECKSUM]


def metadata_of(f: Any) -> list[str]:
    """The metadata names a file of its schema version has."""
    v = version_of(f)
    return [m for m in METADATA if v >= METADATA_SINCE.get(m, (0,))]


def version_of(f: Any) -> tuple[int, ...]:
    """The file's schema version as a tuple ((0,) when unreadable)."""
    try:
        return tuple(int(x) for x in str(f.attrs["schema_version"]).split("."))
    except (KeyError, ValueError):
        return (0,)


FILE_ATTRS = (
    "schema_version",
    "tier",
    "sample_rate",
    "notes",
    "velocity",
    "note_duration",
    "render_duration",
    "seed",
    "registry_fingerprint",
    "run_spec",
    "rejections",
    "versions",
)


def stored_here(f: Any, name: str) -> Any:
    """Dataset ``name`` of open file ``f``, made a dataset of ``f``'s own first if it is
    virtual (a parted dataset's columns read through to its parts).

    What the collector changes in a parted file (renumbered references, their checksums)
    must not be written through to the parts: they are the run's shards, checked against
    the workers' checksums each time the run is collected, and a collector that stopped
    after changing them would renumber its own output again the next time, into a file of
    wrong labels that still verifies.
    """
    ds = f[name]
    if not ds.is_virtual:
        return ds
    values, attrs, tid = ds[...], dict(ds.attrs), ds.id.get_type()
    del f[name]
    made = h5py.Dataset(h5d.create(f.id, name.encode(), tid, h5s.create_simple(values.shape)))
    made[...] = values
    made.attrs.update(attrs)
    return made


def missing_parts(f: Any) -> list[str]:
    """The part files a parted dataset (:mod:`farm.storage.parts`) reads its rows from
    that are not where its virtual datasets say (relative to the file's folder); empty for
    a single file. HDF5 itself would read a missing part's rows as zeros."""
    if AUDIO not in f or not f[AUDIO].is_virtual:
        return []
    here = Path(f.filename).resolve().parent
    # The mappings' file names only: h5py's virtual_sources() also builds a selection
    # object for every mapping (tens of thousands in a large run).
    dcpl = f[AUDIO].id.get_create_plist()
    names = sorted({dcpl.get_virtual_filename(i) for i in range(dcpl.get_virtual_count())})
    return [n for n in names if not (here / n).is_file()]


def check_file(f: Any) -> list[str]:
    """Problems of an open ``h5py.File`` against the schema; empty when it is valid."""
    gone = missing_parts(f)
    if gone:
        more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
        return [
            f"its part {gone[0]}{more} is missing (a parted dataset reads its rows from the "
            "NAME.parts/ folder beside it: keep or move the two together)"
        ]
    problems: list[str] = []
    for a in FILE_ATTRS:
        if a not in f.attrs:
            problems.append(f"missing file attribute {a}")
    per_row = [CONTINUOUS, CATEGORICAL, WAVETABLE, *(f"metadata/{m}" for m in metadata_of(f))]
    if version_of(f) >= ACTIVE_SINCE:
        per_row += [ACTIVE_CONTINUOUS, ACTIVE_CATEGORICAL]
    per_row += [name for k in features_in(f) for name in (features(k), moments(k))]
    if version_of(f) >= CHECKSUM_SINCE:
        per_row.append(CHECKSUM)
    for name in (AUDIO, *per_row):
        if name not in f:
            problems.append(f"missing dataset {name}")
    if problems:
        return problems
    n = f[AUDIO].shape[0]
    tier = int(f.attrs["tier"])
    for name in per_row:
        if f[name].shape[0] != n:
            problems.append(f"{name} has {f[name].shape[0]} rows, audio has {n}")
    t = round(float(f.attrs["render_duration"]) * int(f.attrs["sample_rate"]))
    spec = _spec_of(f)
    c = 1 if spec.get("render", {}).get("mono") else 2
    if f[AUDIO].shape[1:] != (c, t):
        problems.append(f"audio rows are {f[AUDIO].shape[1:]}, expected ({c}, {t})")
    if spec.get("features"):
        problems += _check_features(f, spec["features"], c, t)
    cont, cat = f[CONTINUOUS], f[CATEGORICAL]
    for ds, attrs in ((cont, ("names", "raw_min", "raw_max")), (cat, ("names", "options"))):
        for a in attrs:
            if a not in ds.attrs:
                problems.append(f"missing attribute {ds.name}.{a}")
    if problems:
        return problems
    if len(cont.attrs["names"]) != cont.shape[1] or len(cat.attrs["names"]) != cat.shape[1]:
        problems.append("parameter name lists do not match the label columns")
    for mask, labels in ((ACTIVE_CONTINUOUS, cont), (ACTIVE_CATEGORICAL, cat)):
        if mask in f and f[mask].shape != labels.shape:
            problems.append(f"{mask} is {f[mask].shape}, its labels {labels.shape}")
    if n:
        c = cont[...]
        if c.dtype != np.float32 or np.any(~np.isfinite(c)) or c.min() < 0 or c.max() > 1:
            problems.append("continuous labels are not float32 in [0, 1]")
        k = cat[...]
        options = json.loads(cat.attrs["options"])
        n_opt = np.array([len(options[str(nm)]) for nm in cat.attrs["names"]])
        if k.dtype != np.int32 or np.any(k < 0) or np.any(k >= n_opt):
            problems.append("categorical labels are not valid option indices")
        hashes = f["metadata/preset_hash"][...]
        if any(len(h) != 64 for h in hashes):
            problems.append("preset_hash values are not 64 hex characters")
        if np.any(f["metadata/tier"][...] != tier):
            problems.append("metadata/tier disagrees with the file's tier")
        problems += _check_refs(f[WAVETABLE][...], f, "wavetables/hash")
        problems += _check_refs(f["metadata/library_preset"][...], f, "presets/hash")
    if tier == 3:
        if MODULATION not in f:
            problems.append(f"tier 3 file without {MODULATION}")
        elif f[MODULATION].shape[0] != n:
            problems.append(f"{MODULATION} row count differs from audio")
        else:
            for a in ("sources", "destinations", "channels"):
                if a not in f[MODULATION].attrs:
                    problems.append(f"missing attribute {MODULATION}.{a}")
    return problems


def _spec_of(f: Any) -> dict[str, Any]:
    try:
        spec = json.loads(f.attrs["run_spec"])
    except (KeyError, ValueError, TypeError):
        return {}
    return spec if isinstance(spec, dict) else {}


def _check_features(f: Any, settings: dict[str, Any], channels: int, t: int) -> list[str]:
    """The features a file's spec asks for: present, one per row, of the spec's shape."""
    kind = settings.get("kind", "")
    name, mom = features(kind), moments(kind)
    if name not in f or mom not in f:
        return [f"the spec asks for {kind} features but {name} is missing"]
    n = f[AUDIO].shape[0]
    m = int(settings["n_mels"])
    frames = 1 + t // int(settings["hop"])
    problems = []
    if f[name].shape != (n, channels, m, frames):
        problems.append(f"{name} is {f[name].shape}, expected {(n, channels, m, frames)}")
    if f[mom].shape != (n, 2, m):
        problems.append(f"{mom} is {f[mom].shape}, expected {(n, 2, m)}")
    return problems


def _check_refs(refs: np.ndarray, f: Any, table: str) -> list[str]:
    """References must be -1 or a row of their table."""
    size = f[table].shape[0] if table in f else 0
    if refs.size and (refs.min() < -1 or refs.max() >= size):
        return [f"references past the {size} rows of {table}"]
    return []


def require_valid(f: Any) -> None:
    """Raise :class:`DatasetError` listing every schema problem of an open file."""
    problems = check_file(f)
    if problems:
        raise DatasetError(f"{f.filename}: " + "; ".join(problems))
