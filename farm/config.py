"""What a run makes, typed and validated when built, with every default in one place.
(How the farm runs, its broker and folders, is :mod:`farm.settings`.)

One :class:`RunSpec` describes a run completely: the plan (tier, n, seed, sampler, batch
size, constraints), how rows render and validate, and how audio is stored. It is passed
down to every function that needs part of it; the environment (``FARM_*``) is read only
in the CLI.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_NOTES = (48, 60, 72)
#: Presets per job unless the user says otherwise (a run's last jobs take fewer).
DEFAULT_BATCH = 16
#: The tiers a run can label (see :mod:`farm.params.tiers`).
TIERS = (1, 2, 3)
#: Finished jobs in a row with no accepted row before a run fails (thresholds too strict).
MAX_BARREN_JOBS = 50


def check_tier(tier: int) -> int:
    """``tier`` when it is one of :data:`TIERS`.

    Raises:
        ValueError: an unknown tier (a one-line message).
    """
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: choose one of 1, 2, 3")
    return tier


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoteDraw(_Frozen):
    """``per_preset`` distinct MIDI notes drawn for each preset from ``lo..hi``."""

    lo: int = Field(..., ge=0, le=127)
    hi: int = Field(..., ge=0, le=127)
    per_preset: int = Field(..., ge=1, le=128)

    @model_validator(mode="after")
    def _fits(self) -> NoteDraw:
        if self.lo > self.hi:
            raise ValueError("the lowest note must not be above the highest")
        if self.per_preset > self.hi - self.lo + 1:
            raise ValueError(
                f"{self.per_preset} distinct notes per preset do not fit in {self.lo}..{self.hi}"
            )
        return self


def _check_span(v: float | tuple[float, float], lo: float, hi: float, what: str) -> None:
    values = v if isinstance(v, tuple) else (v,)
    if any(not lo <= x <= hi for x in values):
        raise ValueError(f"{what} must be within {lo:g}..{hi:g}")
    if isinstance(v, tuple) and v[0] > v[1]:
        raise ValueError(f"{what} range must be LO:HI with LO <= HI")


class RenderSettings(_Frozen):
    """How each row is rendered. Velocity, note length and notes are single values (every
    row the same, today's default) or ranges drawn per row from the seed and the row's
    global preset index (:mod:`farm.render.performance`), never from the schedule."""

    notes: tuple[int, ...] | NoteDraw = Field(DEFAULT_NOTES)
    """MIDI notes rendered per preset (one row per accepted note), or notes drawn per
    preset (:class:`NoteDraw`)."""
    velocity: float | tuple[float, float] = 0.8
    """Note-on velocity, 0..1, or a (lo, hi) range drawn per row. vita's default patch
    ignores velocity (``velocity_track`` 0): it changes the sound through
    ``velocity_track`` (tier 2 and 3) and modulations from the ``velocity`` source."""
    note_duration: float | tuple[float, float] = 1.5
    """Seconds the key is held, or a (lo, hi) range drawn per row."""
    render_duration: float = Field(2.0, gt=0.0, le=60.0)
    """Seconds rendered (includes the release tail after ``note_duration``)."""
    sample_rate: int = Field(44100, ge=8000, le=192000)
    """Output sample rate in Hz."""
    timeout_s: float = Field(60.0, gt=0.0)
    """Hard wall-clock limit for one note; past it the render child is killed (TIMEOUT)."""
    mono: bool = False
    """Store the mid channel (L+R)/2 instead of both (half the audio bytes). Validation,
    loudness, deduplication and features then see the mono row, as a reader does."""

    @field_validator("notes")
    @classmethod
    def _notes_are_midi(cls, v: tuple[int, ...] | NoteDraw) -> tuple[int, ...] | NoteDraw:
        if isinstance(v, NoteDraw):
            return v
        if not 1 <= len(v) <= 128:
            raise ValueError("give 1 to 128 notes")
        if any(not 0 <= n <= 127 for n in v):
            raise ValueError("notes must be MIDI note numbers 0..127")
        if len(set(v)) != len(v):
            raise ValueError("notes must not repeat")
        return v

    @field_validator("velocity")
    @classmethod
    def _velocity_in_range(cls, v: float | tuple[float, float]) -> float | tuple[float, float]:
        _check_span(v, 0.0, 1.0, "velocity")
        return v

    @field_validator("note_duration")
    @classmethod
    def _duration_in_range(cls, v: float | tuple[float, float]) -> float | tuple[float, float]:
        _check_span(v, 0.0, 60.0, "note duration")
        if min(v if isinstance(v, tuple) else (v,)) <= 0:
            raise ValueError("note duration must be above 0 seconds")
        return v

    @property
    def samples(self) -> int:
        """Samples per channel of one row."""
        return round(self.render_duration * self.sample_rate)

    @property
    def channels(self) -> int:
        """Channels of a stored row (1 with ``mono``)."""
        return 1 if self.mono else 2

    @property
    def notes_per_preset(self) -> int:
        """Rows rendered per preset (accepted or not)."""
        return self.notes.per_preset if isinstance(self.notes, NoteDraw) else len(self.notes)

    @property
    def longest_note(self) -> float:
        """The longest note duration a row can have."""
        d = self.note_duration
        return max(d) if isinstance(d, tuple) else d

    @property
    def varied(self) -> bool:
        """Whether notes, velocity or note length vary from row to row."""
        return (
            isinstance(self.notes, NoteDraw)
            or isinstance(self.velocity, tuple)
            or isinstance(self.note_duration, tuple)
        )


class ValidationSettings(_Frozen):
    """When a rendered note is rejected (reasons: SILENT, CLIPPING, NAN, SHAPE)."""

    silence_rms: float = Field(1e-3, ge=0.0)
    """A row whose RMS over both channels is below this (-60 dBFS) is SILENT."""
    silence_lufs: float = Field(-60.0, ge=-70.0, le=0.0)
    """A row whose BS.1770 integrated loudness (K-weighted: DC and sub-audio do not count)
    is below this is SILENT. -60 LUFS, chosen from measured distributions
    (``bench/loudness.py``: it keeps every tier-1 row the RMS check keeps and drops the
    quietest 2% of tier-2 rows, 29 LU and more below the median). BS.1770 gates blocks
    below -70 LUFS, so that is the lowest floor there is."""
    clip_peak: float = Field(4.0, gt=0.0)
    """A row whose absolute peak exceeds this is CLIPPING. vita does not clip its output;
    the default only rejects runaway renders (see README, yield)."""


class Constraints(_Frozen):
    """Constraints on sampled presets, applied in normalized label space.

    Names not in the run's tier are ignored, so one set of defaults serves every tier.
    """

    fixed: dict[str, int] = Field(default_factory=lambda: {"osc_1_on": 1})
    """Categorical parameters pinned to an option index."""
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "osc_1_level": (0.3, 1.0),
            "volume": (0.55, 0.85),
            "filter_1_cutoff": (0.15, 1.0),
            "voice_amplitude": (0.3, 1.0),
        }
    )
    """Continuous parameters drawn from a sub-range [lo, hi] of [0, 1] (an affine map,
    so Latin Hypercube strata stay one hit each)."""
    rules: tuple[str, ...] = ("routing", "amp_envelope")
    """Conditional constraints that remove silent corners (see farm.params.constraints)."""

    @field_validator("ranges")
    @classmethod
    def _ranges_inside_unit(
        cls, v: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"range of {name} must satisfy 0 <= lo <= hi <= 1")
        return v


class SamplingSettings(_Frozen):
    """How synthetic presets are drawn."""

    sampler: Literal["lhs", "random", "sobol"] = "lhs"
    """Continuous sampler: Latin Hypercube per block, i.i.d. uniform, or scrambled Sobol
    addressed by synthetic preset index. Categoricals are always uniform."""
    block: int = Field(16, ge=1, le=4096)
    """Synthetic presets per sampling block: Latin Hypercube strata and every random stream
    are per block of global preset indices, never per job, so the batch size does not
    change the data. 16, the default batch size: default runs keep the presets they had."""
    constraints: Constraints = Constraints()
    median_connections: int = Field(6, ge=1, le=64)
    """Tier 3: median number of modulation connections per preset."""
    max_connections: int = Field(64, ge=1, le=64)
    """Tier 3: hard cap (vita has 64 slots)."""
    slot_dependent_destinations: bool = False
    """Tier 3: allow ``modulation_N_*`` destinations, whose meaning depends on slot order."""


Codec = Literal["none", "gzip", "lzf", "blosc2-zstd", "bitshuffle-lz4"]


class CompressionSettings(_Frozen):
    """How audio is stored. ``gzip``/``lzf``/``none`` need only plain h5py; the plugin codecs
    need ``pip install farm[plugins]`` (hdf5plugin) to write and to read."""

    codec: Codec = "none"
    level: int = Field(1, ge=0, le=9)
    """gzip level (ignored by other codecs)."""
    shuffle: bool = True
    """Byte-shuffle filter before the codec (ignored for ``none``)."""
    audio_dtype: Literal["float32", "float16"] = "float32"
    """float16 halves storage (SNR ~73 dB) and quadruples compressibility."""


class SourceSettings(_Frozen):
    """Real presets and wavetables of a run (see :mod:`farm.presets.library`)."""

    library: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    """Hash of the run's library manifest in the data folder's store; None: synthetic only."""
    presets: int = Field(0, ge=0)
    """Real presets in the library; they take the first global preset indices, in order."""
    catalog: int = Field(0, ge=0)
    """Catalog wavetables synthetic presets draw their oscillators' wavetables from."""

    @model_validator(mode="after")
    def _library_when_used(self) -> SourceSettings:
        if (self.presets or self.catalog) and self.library is None:
            raise ValueError("presets or a wavetable catalog need a library")
        return self


class SplitSettings(_Frozen):
    """How a dataset's rows divide into train / validation / test: by preset (every note of
    a preset on the same side), from a keyed hash of the preset and the run's seed, so the
    split is the same on any machine and for any batch size, and stored in the file."""

    train: float = Field(0.8, ge=0.0, le=1.0)
    validation: float = Field(0.1, ge=0.0, le=1.0)
    test: float = Field(0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSettings:
        if abs(self.train + self.validation + self.test - 1.0) > 1e-6:
            raise ValueError("train, validation and test fractions must add up to 1")
        return self


class FeatureSettings(_Frozen):
    """Features the workers compute from each row's stored audio (``features/<kind>``).

    The defaults are the common front end of sound-matching models: 128 mel bands (as
    synth-permutations stores), a 2048-sample window (46 ms at 44.1 kHz: 21.5 Hz bins, so
    the lowest notes' harmonics stay apart) and a 512-sample hop (11.6 ms; 173 frames for a
    2 s row). The computation is librosa's defaults, written out in
    :mod:`farm.render.features`.
    """

    kind: Literal["logmel"] = "logmel"
    """Log-mel power spectrogram in dB, one per stored channel."""
    n_mels: int = Field(128, ge=8, le=512)
    """Mel bands."""
    n_fft: int = Field(2048, ge=64, le=16384)
    """Window (and FFT) length in samples."""
    hop: int = Field(512, ge=16, le=16384)
    """Samples between frames."""

    def frames(self, samples: int) -> int:
        """Frames of a row of ``samples`` samples (centred frames: ``1 + samples // hop``)."""
        return 1 + samples // self.hop

    @model_validator(mode="after")
    def _hop_fits(self) -> FeatureSettings:
        if self.hop > self.n_fft:
            raise ValueError("hop must not exceed n_fft (samples between windows would be lost)")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError("n_mels must not exceed the FFT's n_fft/2 + 1 bins")
        return self


class WeightsSettings(_Frozen):
    """A parameter-importance run (``farm compute-weights``): each job is one base preset,
    rendered twice (the noise floor) and once per parameter moved by ``delta``."""

    delta: float = Field(0.1, gt=0.0, le=0.5)
    """Normalized step of a continuous parameter (away from the nearer bound)."""
    fixed: dict[str, str] = {}
    """Raw values (or option labels) every base preset gets: importance given a context,
    e.g. ``filter_1_on=0``."""
    fft_sizes: tuple[int, ...] = (256, 1024, 4096)
    """Resolutions of the log-spectral distance."""
    target: str | None = None
    """A dataset (relative to the data folder) to add the weights to, besides the JSON."""


class RunSpec(_Frozen):
    """Everything that determines a run's output. Job ``j`` is a pure function of this."""

    tier: int = 2
    """Which parameters the labels hold (:mod:`farm.params.tiers`): 2, the full synth, by
    default everywhere."""
    n: int = Field(..., gt=0)
    """Accepted rows (one note of one preset) in the final file."""
    seed: int = Field(0, ge=0, lt=2**63)
    batch_size: int = Field(DEFAULT_BATCH, ge=1, le=4096)
    """Presets per job: scheduling only (the rows do not depend on it; see
    ``SamplingSettings.block``)."""
    part_rows: int | None = Field(None, ge=1)
    """Layout only: each worker process starts a new shard after this many rows, and the
    final file joins the shards as parts (:mod:`farm.storage.parts`) instead of copying
    them. None: one self-contained file."""
    render: RenderSettings = RenderSettings()
    validation: ValidationSettings = ValidationSettings()
    sampling: SamplingSettings = SamplingSettings()
    compression: CompressionSettings = CompressionSettings()
    sources: SourceSettings = SourceSettings()
    splits: SplitSettings = SplitSettings()
    """Train / validation / test fractions, by preset (``metadata/split``)."""
    weights: WeightsSettings | None = None
    """Set for a parameter-importance run (its output is JSON, not rows)."""
    features: FeatureSettings | None = None
    """Features computed per row in the workers (None: audio only)."""

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, v: int) -> int:
        return check_tier(v)

    @model_validator(mode="after")
    def _render_covers_note(self) -> RunSpec:
        if self.render.render_duration < self.render.longest_note:
            raise ValueError("render_duration must be >= note_duration")
        return self

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of the whole spec, scheduling included (the ledger's
        copy; datasets store :meth:`data_json`)."""
        data = self.model_dump(mode="json", exclude=self._unset())
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def _unset(self) -> dict[str, Any]:
        """Optional sections left out of the JSON when unset (and ``render.mono`` when
        off), so a spec of an older kind has the JSON and fingerprint it always had."""
        optional = ("weights", "features", "part_rows")
        out: dict[str, Any] = {k: True for k in optional if getattr(self, k) is None}
        if not self.render.mono:
            out["render"] = {"mono": True}
        return out

    def data_json(self) -> str:
        """The spec without its scheduling and layout fields (batch size, part rows): what
        the rows depend on, as stored in every dataset's ``run_spec``."""
        scheduling = {"batch_size": True, "part_rows": True}
        data = self.model_dump(mode="json", exclude={**self._unset(), **scheduling})
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RunSpec:
        """Parse a spec written by :meth:`to_json`."""
        return cls.model_validate_json(text)

    @property
    def fingerprint(self) -> str:
        """Short hash of the spec: equal fingerprints plan equal jobs."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


class Faults(_Frozen):
    """Fault injection for tests and drills: real faults, chosen deterministically.

    Not part of the spec (a drill does not change which rows a run should hold), stored with
    the run so every worker applies the same faults.
    """

    crash_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of presets given a modulation destination vita does not know: a real
    segfault in the render child, recorded as CRASH."""
    kill_jobs: tuple[int, ...] = ()
    """Jobs whose worker process kills itself (SIGKILL) before rendering, on every attempt:
    a poison job that only the attempt cap ends."""
    collect_delay_s: float = Field(0.0, ge=0.0, le=600.0)
    """The collector waits this long before merging: a slow collector, so a drill can fill
    the disk (or stop a worker) while it collects."""
