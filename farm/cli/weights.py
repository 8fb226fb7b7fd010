"""``farm compute-weights``: a parameter-importance run on the farm. Thin: parse, start
the run (:func:`farm.cli.run.start_run`), print."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from farm.cli.options import farm_settings, spec_error
from farm.cli.run import start_run, wait_option, workers_option
from farm.errors import UsageError


def register(cli: click.Group) -> None:
    """Add ``compute-weights`` to the CLI."""
    from farm.cli.options import (
        NOTE_DURATION,
        broker_option,
        data_dir_option,
        render_duration_option,
        sample_rate_option,
        seed_option,
        tier_option,
    )

    @cli.command("compute-weights")
    @tier_option
    @click.option("--n-base", type=int, default=500, show_default=True, help="Base presets.")
    @seed_option
    @click.option(
        "--delta",
        type=float,
        default=0.1,
        show_default=True,
        help="Normalized step of a continuous parameter.",
    )
    @click.option(
        "--set",
        "fixed",
        multiple=True,
        metavar="NAME=VALUE",
        help="Raw value or option every base preset gets (repeatable).",
    )
    @click.option(
        "--note",
        type=int,
        default=60,
        show_default=True,
        help="MIDI note every variant plays (one note: the weights measure the parameters, "
        "not the pitch).",
    )
    @click.option(
        "--note-duration",
        type=float,
        default=float(NOTE_DURATION),
        show_default=True,
        help="Seconds the key is held.",
    )
    @render_duration_option
    @sample_rate_option
    @click.option(
        "-o",
        "--output",
        "dataset",
        default=None,
        help="A dataset of this tier to store the weights in (params/importance_*).",
    )
    @click.option(
        "--json",
        "json_out",
        default=None,
        help="JSON file of the weights [default: weights_t{tier}_{n}.json].",
    )
    @click.option("--force", is_flag=True, help="Replace an existing JSON file.")
    @broker_option
    @data_dir_option
    @workers_option
    @wait_option
    def compute_weights(**kw: Any) -> None:  # fmt: skip
        """Weigh each parameter by how much it changes the sound around base presets."""
        from pydantic import ValidationError

        from farm.config import RenderSettings, RunSpec, WeightsSettings
        from farm.paths import check_output, resolve_output, run_output

        started = time.monotonic()
        settings = farm_settings(kw["data_dir"], kw["broker"])
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        fixed = {}
        for item in kw["fixed"]:
            name, sep, value = item.partition("=")
            if not (sep and name and value):
                raise UsageError(f"--set {item!r}: write NAME=VALUE")
            fixed[name] = value
        embedded = not settings.broker_url
        target, target_rel = None, None
        if kw["dataset"]:
            target = resolve_output(settings.data_dir, kw["dataset"], kw["dataset"], confine=False)
            _check_weights_target(target, kw["tier"])
            settings, target_rel = run_output(settings, target, embedded=embedded)
        try:
            spec = RunSpec(
                tier=kw["tier"],
                n=kw["n_base"],
                seed=kw["seed"],
                batch_size=1,
                render=RenderSettings(
                    notes=(kw["note"],),
                    note_duration=kw["note_duration"],
                    render_duration=kw["render_duration"],
                    sample_rate=kw["sample_rate"],
                ),
                weights=WeightsSettings(
                    delta=kw["delta"],
                    fixed=fixed,
                    target=target_rel,
                ),
            )
        except ValidationError as e:
            raise spec_error(e, "invalid option") from None
        _check_fixed(spec)
        default = f"weights_t{spec.tier}_{spec.n}.json"
        out = resolve_output(settings.data_dir, kw["json_out"], default, (".json",), confine=False)
        settings, rel = run_output(settings, out, embedded=embedded)
        check_output(out, force=kw["force"])
        what = f"weights of tier {spec.tier} from {spec.n} base presets"
        start_run(settings, spec, output=rel, kw=kw, started=started, what=what, prefix="w")


def _check_weights_target(path: Path, tier: int) -> None:
    from farm.errors import DatasetError
    from farm.storage.reader import FarmReader

    if not path.is_file():
        raise DatasetError(f"no dataset {path} to store the weights in")
    with FarmReader(path) as r:
        found = int(r.file.attrs["tier"])
    if found != tier:
        raise UsageError(f"{path} is tier {found}, not tier {tier}")


def _check_fixed(spec: Any) -> None:
    """Apply ``--set`` to a dummy label now, so a bad name or value is an error before
    anything starts."""
    from farm.jobs.plan import sample_job
    from farm.jobs.weights import fix_label
    from farm.params.registry import get_registry
    from farm.params.tiers import tier_params

    tp = tier_params(get_registry(), spec.tier)
    fix_label(sample_job(spec, tp, 0)[0], tp, spec.weights.fixed)
