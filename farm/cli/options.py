"""Options and helpers every command group shares: the run-spec options and their
translation into a :class:`farm.config.RunSpec`, the data-folder and broker options, and
the progress line. Public, so each command module imports them from one place."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError

from farm.errors import UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Options that every kind of run shares, with one default each (``submit``, ``generate``,
# ``compute-weights``, ``params``).
tier_option = click.option(
    "--tier",
    type=int,
    default=2,
    show_default=True,
    help="Tier 1 (two oscillators, filter, amp envelope), 2 (the full synth) or 3 "
    "(2 plus modulation).",
)
seed_option = click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of every draw: the same spec and seed make the same rows.",
)
render_duration_option = click.option(
    "--render-duration",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds of audio per row, release tail included.",
)
sample_rate_option = click.option(
    "--sample-rate", type=int, default=44100, show_default=True, help="Hz."
)
#: Seconds a key is held unless told otherwise (RenderSettings' default).
NOTE_DURATION = "1.5"


def _notes(value: str, per_preset: int | None = None) -> Any:
    """``--notes``: a list of MIDI notes, or ``LO:HI`` with ``--notes-per-preset K``."""
    if ":" in value:
        lo, hi = _span(value, int, "--notes")
        if per_preset is None:
            raise UsageError(f"--notes {value}: a range needs --notes-per-preset K")
        from farm.config import NoteDraw

        try:
            return NoteDraw(lo=lo, hi=hi, per_preset=per_preset)
        except ValidationError as e:
            raise UsageError(f"--notes {value}: {_message(e)}") from None
    if per_preset is not None:
        raise UsageError("--notes-per-preset goes with a --notes LO:HI range")
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--notes {value!r} is not a comma-separated list of MIDI notes") from None


def _span(value: str, kind: Callable[[str], Any], option: str) -> Any:
    """``X`` (one value) or ``LO:HI`` (a range drawn per row) of an option."""
    try:
        if ":" not in value:
            return kind(value)
        lo, hi = value.split(":")
        return (kind(lo), kind(hi))
    except ValueError:
        raise UsageError(f"{option} {value!r}: give a value or LO:HI") from None


def _message(e: ValidationError) -> str:
    return str(e.errors()[0]["msg"]).removeprefix("Value error, ")


def spec_error(e: ValidationError, what: str = "invalid") -> UsageError:
    """The one-line usage error for a validation error of a spec or settings: ``invalid
    WHERE: WHY`` (the only place pydantic's errors are turned into farm's)."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    return UsageError(f"{what} {where}: {_message(e)}")


def spec_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options that build a RunSpec (shared by ``generate`` and ``submit``)."""
    options = [
        tier_option,
        click.option(
            "-n", "n", type=int, default=None, help="Accepted rows (notes) to make (required)."
        ),
        click.option(
            "--like",
            default=None,
            metavar="FILE",
            help="Make the dataset FILE was made from, again: its spec, with any option "
            "given here changed (e.g. a larger -n: the first rows are FILE's rows).",
        ),
        click.option("-o", "--output", default=None, help="Output [default: tier{T}_{n}.h5]."),
        seed_option,
        click.option(
            "--batch-size",
            type=int,
            default=None,
            help="Presets per job (it never changes the rows) [default: 16; a run's last jobs "
            "are smaller, so the workers finish together].",
        ),
        click.option(
            "--notes",
            default="48,60,72",
            show_default=True,
            help="MIDI notes every preset plays, or LO:HI to draw --notes-per-preset "
            "distinct notes per preset.",
        ),
        click.option(
            "--notes-per-preset",
            type=int,
            default=None,
            help="With --notes LO:HI: distinct notes drawn per preset (rows per preset).",
        ),
        click.option(
            "--sampler",
            type=click.Choice(["lhs", "random", "sobol"]),
            default="lhs",
            show_default=True,
            help="Continuous sampler: Latin Hypercube per block of 16 presets, i.i.d. "
            "uniform, or scrambled Sobol.",
        ),
        click.option(
            "--velocity",
            default="0.8",
            show_default=True,
            help="Note-on velocity 0..1, or LO:HI drawn per row (stored as "
            "metadata/velocity). The init patch ignores velocity; velocity_track (tier 2, 3) "
            "and velocity modulation make it heard.",
        ),
        click.option(
            "--note-duration",
            default=NOTE_DURATION,
            show_default=True,
            help="Seconds the key is held, or LO:HI drawn per row (metadata/note_duration).",
        ),
        render_duration_option,
        sample_rate_option,
        click.option(
            "--mono",
            is_flag=True,
            help="Store the mid channel (L+R)/2 instead of both (half the audio bytes).",
        ),
        click.option(
            "--features",
            type=click.Choice(["none", "logmel"]),
            default="none",
            show_default=True,
            help="Features the workers compute per row: logmel stores features/logmel "
            "(log-mel power in dB per stored channel, librosa's defaults) with per-band "
            "mean/std over the train split.",
        ),
        click.option(
            "--n-mels", type=int, default=128, show_default=True, help="Mel bands of logmel."
        ),
        click.option(
            "--n-fft",
            type=int,
            default=2048,
            show_default=True,
            help="Window of logmel in samples (2048: 46 ms at 44.1 kHz).",
        ),
        click.option(
            "--hop",
            type=int,
            default=512,
            show_default=True,
            help="Samples between logmel frames (512: 11.6 ms).",
        ),
        click.option(
            "--codec",
            type=click.Choice(["none", "gzip", "lzf", "blosc2-zstd", "bitshuffle-lz4"]),
            default="none",
            show_default=True,
            help="Audio compression.",
        ),
        click.option("--level", type=int, default=1, show_default=True, help="gzip level."),
        click.option("--no-shuffle", is_flag=True, help="No byte-shuffle before compression."),
        click.option("--float16", is_flag=True, help="Store audio as float16."),
        click.option("--no-rules", is_flag=True, help="Switch off the conditional rules."),
        click.option(
            "--splits",
            default="0.8,0.1,0.1",
            show_default=True,
            help="Train,validation,test fractions of presets (stored as metadata/split).",
        ),
        click.option(
            "--key-tracking",
            is_flag=True,
            help="Keep oscillator key tracking on (no preset sounds the same at every note; "
            "the data then lacks fixed-pitch sounds).",
        ),
        click.option("--force", is_flag=True, help="Replace an existing output file."),
        click.option(
            "--community-dir",
            "community_dirs",
            multiple=True,
            help="Folder of .vital/.vitalbank presets (recursive, repeatable); they go first.",
        ),
        click.option("--factory", is_flag=True, help="Also render Vital's factory presets."),
        click.option(
            "--stream-presets",
            is_flag=True,
            help="Start rendering at once: the workers read each real preset as they render "
            "it (a bad file keeps its index and is counted as FILE_* rejections).",
        ),
        click.option(
            "--wavetable-catalog",
            default=None,
            help="Catalog from discover-wt: synthetic oscillators draw wavetables from it.",
        ),
        data_dir_option,
        click.option(
            "--inject-crash",
            type=float,
            default=0.0,
            hidden=True,
            help="Fault injection: fraction of presets made to segfault vita.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


data_dir_option = click.option(
    "--data-dir",
    envvar="FARM_DATA_DIR",
    default="data",
    show_default=True,
    help="Folder every output stays in (env FARM_DATA_DIR).",
)
broker_option = click.option(
    "--broker",
    envvar="FARM_BROKER_URL",
    default=None,
    help="redis://[:password@]host:port/db (env FARM_BROKER_URL); unset: embedded Redis.",
)


def with_sources(spec: Any, kw: dict[str, Any], data_dir: str) -> Any:
    """The spec with the run's real presets and catalog read into its library (prints what
    was read and skipped)."""
    from farm.cli.session import cpu_count
    from farm.presets.ingest import prepare_sources

    def show(line: str) -> None:
        click.echo(line, err=True)

    given = kw["community_dirs"] or kw["factory"] or kw["wavetable_catalog"]
    if not given and spec.sources.library is not None:
        # --like: the liked file's library, which must be in this data folder's store.
        from farm.store import Store

        if not Store(data_dir).path(spec.sources.library).is_file():
            raise UsageError(
                "--like: the file's real presets are not in this data folder's store; give "
                "the same --community-dir / --factory / --wavetable-catalog again"
            )
        return spec
    prepared = prepare_sources(
        data_dir,
        kw["community_dirs"],
        kw["factory"],
        kw["wavetable_catalog"],
        on_progress=show,
        workers=cpu_count(),
        stream=kw["stream_presets"],
    )
    for line in prepared.lines():
        show(line)
    return spec.model_copy(update={"sources": prepared.sources})


def build_spec(kw: dict[str, Any]) -> Any:
    """A RunSpec from the spec options (one-line errors for bad values)."""
    from farm.cli.like import like_with, liked_spec
    from farm.config import (
        DEFAULT_BATCH,
        CompressionSettings,
        RenderSettings,
        RunSpec,
        SamplingSettings,
        check_tier,
    )

    like = liked_spec(kw["like"]) if kw.get("like") else None
    n = kw["n"] if kw["n"] is not None else (like.n if like is not None else None)
    tier = kw["tier"]
    if n is None:
        raise UsageError("give -n, the number of rows to make (or --like FILE)")
    if n <= 0:
        raise UsageError(f"-n must be a positive number of rows, got {n}")
    try:
        check_tier(tier)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 0.0 <= kw["inject_crash"] <= 1.0:
        raise UsageError("--inject-crash must be a fraction in [0, 1]")
    try:
        spec = RunSpec(
            tier=tier,
            n=n,
            seed=kw["seed"],
            batch_size=kw["batch_size"] or DEFAULT_BATCH,
            render=RenderSettings(
                notes=_notes(kw["notes"], kw["notes_per_preset"]),
                velocity=_span(kw["velocity"], float, "--velocity"),
                note_duration=_span(kw["note_duration"], float, "--note-duration"),
                render_duration=kw["render_duration"],
                sample_rate=kw["sample_rate"],
                mono=kw["mono"],
            ),
            features=_features(kw),
            sampling=SamplingSettings(
                sampler=kw["sampler"],
                constraints=_constraints(kw),
            ),
            splits=_splits(kw["splits"]),
            compression=CompressionSettings(
                codec=kw["codec"],
                level=kw["level"],
                shuffle=not kw["no_shuffle"],
                audio_dtype="float16" if kw["float16"] else "float32",
            ),
        )
        return spec if like is None else like_with(like, spec, kw)
    except ValidationError as e:
        raise spec_error(e) from None


def _features(kw: dict[str, Any]) -> Any:
    from farm.cli.like import given_here
    from farm.config import FeatureSettings

    given = [o for o in ("n_mels", "n_fft", "hop") if given_here(o)]
    if kw["features"] == "none":
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UsageError(f"{flag} sets the logmel features: add --features logmel")
        return None
    return FeatureSettings(
        kind=kw["features"], n_mels=kw["n_mels"], n_fft=kw["n_fft"], hop=kw["hop"]
    )


def _splits(value: str) -> Any:
    from farm.config import SplitSettings

    try:
        train, validation, test = (float(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--splits {value!r}: give three fractions, e.g. 0.8,0.1,0.1") from None
    return SplitSettings(train=train, validation=validation, test=test)


def _constraints(kw: dict[str, Any]) -> Any:
    from farm.config import Constraints

    rules: tuple[str, ...] = () if kw["no_rules"] else Constraints().rules
    if kw["key_tracking"]:
        rules = (*rules, "key_tracking")
    return Constraints(rules=rules)


class Progress:
    """One refreshed line on a terminal; in a log, a line every 10 s and the last one."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = -1e9
        self.shown = False

    def __call__(self, line: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.tty and not final and now - self.last < 10.0:
            return
        self.last = now
        self.shown = True
        click.echo(("\r" + line + "\x1b[K") if self.tty else line, err=True, nl=not self.tty)

    def end(self) -> None:
        if self.tty and self.shown:
            click.echo("", err=True)


def farm_settings(data_dir: str, broker: str | None, **given: Any) -> Any:
    """The farm settings from ``FARM_*``, overridden by the options given (one-line
    errors for bad values)."""
    from pydantic import ValidationError

    from farm.settings import settings_from_env

    try:
        return settings_from_env(os.environ, data_dir=data_dir, broker_url=broker, **given)
    except ValidationError as e:
        raise spec_error(e, "invalid setting") from None
