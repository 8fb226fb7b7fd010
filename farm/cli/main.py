"""The ``farm`` command line. Thin commands: parse, call a library function, print.

Exit codes: 0 success; 1 a run failed (:class:`FarmError`); 2 bad input (usage errors,
an existing or unwritable output, an unreadable dataset); 130 interrupted. Every error is
one line on stderr, never a traceback. The environment (``FARM_*``) is read here only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import numpy as np

from farm.cli.options import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Progress,
    build_spec,
    data_dir_option,
    spec_options,
    tier_option,
    with_sources,
)
from farm.errors import FarmError, UsageError


def _range(v: float | list[float], unit: str = "") -> str:
    """A fixed value, or LO:HI for a value drawn per row."""
    return f"{v[0]:g}:{v[1]:g}{unit} per row" if isinstance(v, list) else f"{v:g}{unit}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="farm")
def cli() -> None:
    """farm: render Vital (vita) presets into machine-learning datasets."""


@cli.command()
@tier_option
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


@cli.command()
@spec_options
def generate(**kw: Any) -> None:
    """Render a dataset in this process (single worker, no queue)."""
    from farm.disk import check_disk
    from farm.jobs.local import generate as run_local
    from farm.paths import check_output, resolve_output
    from farm.presets.files import check_dirs
    from farm.storage.compression import dataset_options

    spec = build_spec(kw)
    # As submit: everything that can be refused is refused before anything is created.
    dataset_options(spec.compression)
    check_dirs(kw["community_dirs"])
    # This process writes the file: it goes wherever the user says.
    out = resolve_output(
        kw["data_dir"], kw["output"], f"tier{spec.tier}_{spec.n}.h5", confine=False
    )
    check_output(out, force=kw["force"], root=kw["data_dir"])
    check_disk(spec, kw["data_dir"])
    Path(kw["data_dir"]).mkdir(parents=True, exist_ok=True)
    spec = with_sources(spec, kw, kw["data_dir"])
    crash = None
    if kw["inject_crash"] > 0:
        from farm.jobs.render import injected_crashes

        def crash(job: int, preset: int) -> bool:
            pick = injected_crashes(spec, job, kw["inject_crash"])
            return pick is not None and pick(preset)

    bar = Progress()

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
        + (
            f"; no dataset card ({progress.card_error}): `farm card {out}`"
            if progress.card_error
            else ""
        )
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
@data_dir_option
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
                + "".join(f"; features/{k} {shape}" for k, shape in info["features"].items())
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
    from farm.errors import DatasetError, IntegrityError
    from farm.storage.integrity import verify_file

    bar = Progress()
    try:
        found = verify_file(file, lambda done, n: bar(f"verified {done}/{n} rows"))
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
@click.option(
    "-o", "--output", default=None, help="Where to write it [default: FILE with .md, beside it]."
)
@click.option("--force", is_flag=True, help="Replace an existing card.")
def card(file: str, output: str | None, force: bool) -> None:
    """Write a dataset's card (NAME.md): what it is, how it was made, counts, splits, how to
    load it, and credit for every real preset used."""
    from farm.paths import check_output
    from farm.storage.card import card_path, write_card

    out = Path(output) if output else card_path(file)
    if out.suffix != ".md":
        raise UsageError(f"{out}: a card is Markdown; name it .md")
    check_output(out, force=force)
    click.echo(f"wrote {write_card(file, out)}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["wav", "hf", "webdataset"]),
    default="wav",
    show_default=True,
    help="wav: one 32-bit float WAV per row and labels.jsonl (parameters by name, raw and "
    "normalized, metadata); hf: a Hugging Face datasets DatasetDict of the stored splits "
    "(datasets.load_from_disk); webdataset: SPLIT-NNNNNN.tar shards (KEY.audio.npy, "
    "KEY.json). hf and webdataset need pip install 'farm[export]'.",
)
@click.option("-o", "--output", required=True, help="The folder to make.")
@click.option("--force", is_flag=True, help="Replace an existing folder.")
def export(file: str, fmt: str, output: str, force: bool) -> None:
    """Export a dataset for tools that do not read farm's HDF5 (streamed; nothing is left
    under the name if it is interrupted)."""
    from farm.tools.export import export_wav
    from farm.tools.hf import export_hf
    from farm.tools.wds import export_webdataset

    exporters = {"wav": export_wav, "hf": export_hf, "webdataset": export_webdataset}
    out = Path(output).resolve()
    bar = Progress()
    try:
        done = exporters[fmt](
            file, out, force=force, on_progress=lambda k, n: bar(f"exported {k}/{n} rows")
        )
    finally:
        bar.end()
    if isinstance(done, dict):
        what = ", ".join(f"{side} {rows}" for side, rows in done.items()) + " rows"
    else:
        what = f"{done} WAV files and labels.jsonl"
    click.echo(f"wrote {out} ({fmt}): {what}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@data_dir_option
def preview(file: str, data_dir: str) -> None:
    """Browse a dataset in the terminal: filter rows, see parameters and sketches, play
    (or export) a row's audio. Keys are shown at the bottom."""
    from farm.tools.preview import make_app

    make_app(file, data_dir).run()


def _write_pictures(
    r: Any, index: int | None, wav: str | None, png: str | None, force: bool, data_dir: str
) -> None:
    """``farm inspect --wav/--png``: every output checked before anything is written."""
    from farm.paths import check_output, resolve_output
    from farm.tools.pictures import overview_picture, row_picture
    from farm.tools.rerender import write_wav

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    wav_out = resolve_output(data_dir, wav, wav, (".wav",), confine=False) if wav else None
    png_out = resolve_output(data_dir, png, png, (".png",), confine=False) if png else None
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


def _register_command_groups() -> None:
    # Each group's heavy imports (Redis, Celery, vita) are deferred to when it runs.
    from farm.cli import cluster, presets, run, weights

    run.register(cli)
    weights.register(cli)
    cluster.register(cli)
    presets.register(cli, data_dir_option)


_register_command_groups()


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
