"""The ``farm`` command line. Thin commands: parse, call a library function, print.

Exit codes: 0 success; 1 a run failed (:class:`FarmError`); 2 bad input (usage errors,
an existing or unwritable output, an unreadable dataset); 130 interrupted. Every error is
one line on stderr, never a traceback. The environment (``FARM_*``) is read here only.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import numpy as np
from pydantic import ValidationError

from farm.errors import FarmError, UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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


def _range(v: float | list[float], unit: str = "") -> str:
    """A fixed value, or LO:HI for a value drawn per row."""
    return f"{v[0]:g}:{v[1]:g}{unit} per row" if isinstance(v, list) else f"{v:g}{unit}"


def _message(e: ValidationError) -> str:
    return str(e.errors()[0]["msg"]).removeprefix("Value error, ")


def _spec_error(e: ValidationError) -> UsageError:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    return UsageError(f"invalid {where}: {_message(e)}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="farm")
def cli() -> None:
    """farm: render Vital (vita) presets into machine-learning datasets."""


@cli.command()
@click.option("--tier", type=int, default=2, show_default=True, help="Tier 1, 2 or 3.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of parameter objects.")
def params(tier: int, as_json: bool) -> None:
    """Print the labelled parameters of a tier."""
    from farm.params.registry import get_registry
    from farm.params.tiers import tier_params

    registry = get_registry()
    tp = tier_params(registry, tier)
    specs = [*tp.continuous, *tp.categorical]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in specs], indent=1))
        return
    click.echo(
        f"tier {tier}: {len(tp.continuous)} continuous + {len(tp.categorical)} "
        f"categorical{' + modulation matrix' if tp.modulation else ''}; "
        f"registry {registry.fingerprint[:12]}"
    )
    click.echo(f"{'name':34} {'kind':11} {'module':16} {'min':>10} {'max':>10} {'default':>10}")
    for s in specs:
        extra = (
            f"  [{len(s.options)} options]" if s.options else ("  (integer)" if s.integer else "")
        )
        click.echo(
            f"{s.name:34} {s.kind:11} {s.module:16} {s.min:10.4g} {s.max:10.4g} "
            f"{s.default:10.4g}{extra}"
        )


def _spec_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options that build a RunSpec (shared by ``generate`` and ``submit``)."""
    options = [
        click.option("--tier", type=int, default=1, show_default=True, help="Tier 1, 2 or 3."),
        click.option("-n", "n", type=int, required=True, help="Accepted rows (notes) to make."),
        click.option("-o", "--output", default=None, help="Output [default: tier{T}_{n}.h5]."),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of every draw: the same spec and seed make the same rows.",
        ),
        click.option(
            "--batch-size", type=int, default=16, show_default=True, help="Presets per job."
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
            default="1.5",
            show_default=True,
            help="Seconds the key is held, or LO:HI drawn per row (metadata/note_duration).",
        ),
        click.option(
            "--render-duration",
            type=float,
            default=2.0,
            show_default=True,
            help="Seconds of audio per row, release tail included.",
        ),
        click.option("--sample-rate", type=int, default=44100, show_default=True, help="Hz."),
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
            "--wavetable-catalog",
            default=None,
            help="Catalog from discover-wt: synthetic oscillators draw wavetables from it.",
        ),
        _data_dir_option,
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


_data_dir_option = click.option(
    "--data-dir",
    envvar="FARM_DATA_DIR",
    default="data",
    show_default=True,
    help="Folder every output stays in (env FARM_DATA_DIR).",
)
_broker_option = click.option(
    "--broker",
    envvar="FARM_BROKER_URL",
    default=None,
    help="redis://[:password@]host:port/db (env FARM_BROKER_URL); unset: embedded Redis.",
)


def _with_sources(spec: Any, kw: dict[str, Any], data_dir: str) -> Any:
    """The spec with the run's real presets and catalog read into its library (prints what
    was read and skipped)."""
    from farm.ingest import prepare_sources

    def show(line: str) -> None:
        click.echo(line, err=True)

    prepared = prepare_sources(
        data_dir,
        kw["community_dirs"],
        kw["factory"],
        kw["wavetable_catalog"],
        on_progress=show,
    )
    for line in prepared.lines():
        show(line)
    return spec.model_copy(update={"sources": prepared.sources})


def _build_spec(kw: dict[str, Any]) -> Any:
    """A RunSpec from the spec options (one-line errors for bad values)."""
    from farm.config import (
        CompressionSettings,
        RenderSettings,
        RunSpec,
        SamplingSettings,
    )

    n, tier = kw["n"], kw["tier"]
    if n <= 0:
        raise UsageError(f"-n must be a positive number of rows, got {n}")
    if tier not in (1, 2, 3):
        raise UsageError(f"unknown tier {tier}: choose 1, 2 or 3")
    if not 0.0 <= kw["inject_crash"] <= 1.0:
        raise UsageError("--inject-crash must be a fraction in [0, 1]")
    try:
        return RunSpec(
            tier=tier,
            n=n,
            seed=kw["seed"],
            batch_size=kw["batch_size"],
            render=RenderSettings(
                notes=_notes(kw["notes"], kw["notes_per_preset"]),
                velocity=_span(kw["velocity"], float, "--velocity"),
                note_duration=_span(kw["note_duration"], float, "--note-duration"),
                render_duration=kw["render_duration"],
                sample_rate=kw["sample_rate"],
            ),
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
    except ValidationError as e:
        raise _spec_error(e) from None


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


class _Progress:
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


@cli.command()
@_spec_options
def generate(**kw: Any) -> None:
    """Render a dataset in this process (single worker, no queue)."""
    from farm.disk import check_disk
    from farm.local import generate as run_local
    from farm.paths import check_output, resolve_output
    from farm.sources import check_dirs
    from farm.storage.compression import dataset_options

    spec = _build_spec(kw)
    # As submit: everything that can be refused is refused before anything is created.
    dataset_options(spec.compression)
    check_dirs(kw["community_dirs"])
    out = resolve_output(kw["data_dir"], kw["output"], f"tier{spec.tier}_{spec.n}.h5")
    check_output(out, force=kw["force"], root=kw["data_dir"])
    check_disk(spec, kw["data_dir"])
    Path(kw["data_dir"]).mkdir(parents=True, exist_ok=True)
    spec = _with_sources(spec, kw, kw["data_dir"])
    crash = None
    if kw["inject_crash"] > 0:
        from farm.jobs import injected_crashes

        def crash(job: int, preset: int) -> bool:
            pick = injected_crashes(spec, job, kw["inject_crash"])
            return pick is not None and pick(preset)

    bar = _Progress()

    def show(p: Any) -> None:
        rate = p.accepted / p.elapsed if p.elapsed > 0 else 0.0
        eta = (p.target - p.accepted) / rate if rate > 0 else float("inf")
        rej = " ".join(f"{k}={v}" for k, v in sorted(p.rejections.items()))
        bar(
            f"{p.accepted}/{p.target} rows  {rate:.2f} rows/s  ETA {eta:.0f}s  "
            f"accepted {p.acceptance:.0%} of {p.renders} renders  {rej}",
            final=p.accepted >= p.target,
        )

    progress = run_local(spec, out, on_progress=show, crash=crash, data_dir=Path(kw["data_dir"]))
    bar.end()
    click.echo(
        f"wrote {out}: {progress.accepted} rows from {progress.renders} renders "
        f"({progress.acceptance:.1%} accepted) in {progress.elapsed:.1f}s; "
        f"rejections {json.dumps(dict(sorted(progress.rejections.items())))}"
    )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-s", "--sample", "index", type=int, default=None, help="Show one row.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--wav", default=None, help="Write the row's audio here (needs -s; in the data folder)."
)
@click.option(
    "--png",
    default=None,
    help="Write a picture: the row's spectrogram and parameters with -s, else an overview.",
)
@click.option("--force", is_flag=True, help="Replace existing pictures or WAVs.")
@_data_dir_option
def inspect(
    file: str,
    index: int | None,
    as_json: bool,
    wav: str | None,
    png: str | None,
    force: bool,
    data_dir: str,
) -> None:
    """Summarize a dataset, or show one row's parameters and audio statistics; --wav and
    --png write its audio and pictures."""
    from farm.storage.reader import FarmReader

    if wav and index is None:
        raise UsageError("--wav needs a row: -s IDX")
    with FarmReader(file) as r:
        if wav or png:
            _write_pictures(r, index, wav, png, force, data_dir)
            return
        info = r.info()
        if index is None:
            if as_json:
                click.echo(json.dumps(info, indent=1))
                return
            rej = info["rejections"]
            renders = info["renders"] or info["rows"] + sum(rej.values())
            click.echo(f"{info['path']}  (schema {info['schema_version']})")
            click.echo(
                f"  rows {info['rows']} from {info['presets']} presets, tier "
                f"{info['tier']}: {info['continuous']} continuous + "
                f"{info['categorical']} categorical"
                f"{' + modulation' if info['modulation'] else ''}"
            )
            click.echo(
                f"  audio {info['audio_shape']} {info['audio_dtype']} at "
                f"{info['sample_rate']} Hz, compression {info['compression']}"
            )
            render = info["run_spec"].get("render", {})
            drawn = render.get("notes")
            notes = (
                f"{drawn['per_preset']} drawn per preset from {drawn['lo']}..{drawn['hi']}"
                if isinstance(drawn, dict)
                else str(info["notes"])
            )
            click.echo(
                f"  notes {notes}, rows/note {info['rows_per_note']}, velocity "
                f"{_range(info['velocity'])}, note {_range(info['note_duration'], ' s')}, render "
                f"{info['render_duration']} s, seed {info['seed']}"
            )
            click.echo(f"  sources {info['sources']}")
            acc = (renders - sum(rej.values())) / renders if renders else 0.0
            click.echo(f"  rejections {rej} (accepted {acc:.1%} of {renders} renders)")
            click.echo(f"  versions {info['versions']}")
            return
        row = r.get_sample(index)
        raw = r.raw_values(row["index"])
        audio = row["audio"]
        stats = {
            "rms": float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))),
            "peak": float(np.abs(audio).max()),
            "dc": float(audio.mean()),
            "seconds": audio.shape[1] / info["sample_rate"],
        }
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "index": row["index"],
                        "midi_note": row["midi_note"],
                        "preset_name": row["preset_name"],
                        "preset_hash": row["preset_hash"],
                        "source": row["source"],
                        "audio": stats,
                        "params": raw,
                    },
                    indent=1,
                )
            )
            return
        click.echo(
            f"row {row['index']}: {row['preset_name']} ({row['source']}) note "
            f"{row['midi_note']} job {row['job']} preset {row['preset']}"
        )
        click.echo(f"  hash {row['preset_hash']}")
        click.echo("  audio " + "  ".join(f"{k} {v:.4g}" for k, v in stats.items()))
        for j, name in enumerate(r.continuous_names):
            click.echo(f"  {name:34} {row['continuous'][j]:8.4f}  raw {raw[name]:.6g}")
        for j, name in enumerate(r.categorical_names):
            click.echo(f"  {name:34} {row['categorical'][j]:8d}  {raw[name]}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
def verify(file: str) -> None:
    """Re-check every row of a dataset against the checksum made where it was rendered;
    exit 1 and list the damaged rows when any differ."""
    import h5py

    from farm.errors import DatasetError, IntegrityError
    from farm.storage.integrity import verify_rows

    if not Path(file).is_file():
        raise DatasetError(f"no such dataset: {file}")
    bar = _Progress()
    try:
        with h5py.File(file, "r") as f:
            n = int(f["audio/waveforms"].shape[0]) if "audio/waveforms" in f else 0
            found = verify_rows(f, on_block=lambda done: bar(f"verified {done}/{n} rows"))
    except (OSError, KeyError) as e:
        raise DatasetError(f"{file} is not a readable farm dataset: {e}") from e
    finally:
        bar.end()
    if found.unchecked:
        raise DatasetError(f"{file} has no row checksums (schema before 2.4.0): nothing to verify")
    if found.bad:
        shown = ", ".join(str(i) for i in found.bad[:50])
        more = f" and {len(found.bad) - 50} more" if len(found.bad) > 50 else ""
        raise IntegrityError(
            f"{file}: {len(found.bad)} of {found.rows} rows fail their checksum: rows {shown}{more}"
        )
    click.echo(f"{file}: all {found.rows} rows match their checksums")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_data_dir_option
def preview(file: str, data_dir: str) -> None:
    """Browse a dataset in the terminal: filter rows, see parameters and sketches, play
    (or export) a row's audio. Keys are shown at the bottom."""
    from farm.preview import make_app

    make_app(file, data_dir).run()


def _write_pictures(
    r: Any, index: int | None, wav: str | None, png: str | None, force: bool, data_dir: str
) -> None:
    """``farm inspect --wav/--png``: every output checked before anything is written."""
    from farm.paths import check_output, resolve_output
    from farm.pictures import overview_picture, row_picture
    from farm.rerender import write_wav

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    wav_out = resolve_output(data_dir, wav, wav, suffixes=(".wav",)) if wav else None
    png_out = resolve_output(data_dir, png, png, suffixes=(".png",)) if png else None
    for out in (wav_out, png_out):
        if out is not None:
            check_output(out, force=force)
    row = r.get_sample(index) if index is not None else None
    if wav_out is not None and row is not None:
        write_wav(wav_out, row["audio"], int(r.file.attrs["sample_rate"]))
        click.echo(f"wrote {wav_out}: row {row['index']}")
    if png_out is not None:
        if row is not None:
            row_picture(r, row["index"], png_out)
            click.echo(f"wrote {png_out}: row {row['index']} spectrogram and parameters")
        else:
            overview_picture(r, png_out)
            click.echo(f"wrote {png_out}: overview of {len(r)} rows")


def _register_run_commands() -> None:
    # The farm's run commands live with the coordinator (they talk to Redis and Celery,
    # which the core never imports); their own imports are deferred to when they run.
    from coordinator.commands import register
    from farm.cli_presets import register as register_presets

    register(cli)
    register_presets(cli, _data_dir_option)


_register_run_commands()


def main() -> NoReturn:
    """Console entry point: run the CLI, turning errors into one line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("farm: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        click.echo(f"farm: error: {e.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except FarmError as e:
        click.echo(f"farm: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("farm: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
