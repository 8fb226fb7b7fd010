"""The farm's run commands (``submit``, ``status``, ``resume``, ``cancel``, ``collect``),
added to the ``farm`` CLI. Thin: parse, call the coordinator, print.

The environment is read here (``FARM_*``, via click's ``envvar`` and
:func:`farm.config.settings_from_env`) and nowhere deeper.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from farm.cli.options import farm_settings
from farm.cli.report import echo_flower, echo_weights
from farm.cli.session import Farm, cpu_count, local_workers, open_farm
from farm.disk import PARTED_BYTES, PARTED_ROWS, default_part_rows
from farm.errors import InterruptedRun, UsageError

workers_option = click.option(
    "--workers",
    type=int,
    default=None,
    help="Local worker processes for the embedded default [default: CPU count].",
)
wait_option = click.option(
    "--wait/--detach",
    default=None,
    help="Follow the run to its end, or print its id and return [default: wait on a terminal].",
)


@contextmanager
def _interruptible(run_id: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM: stop what we started (the contexts around this unwind), then one
    line with the resume command."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        raise InterruptedRun(
            f"interrupted; run {run_id} stopped; continue it with: farm resume {run_id}"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _follow(farm: Farm, ledger: Any, started: float) -> Any:
    from coordinator.run import describe, follow
    from farm.cli.options import Progress
    from farm.jobs.kinds import WEIGHTS, kind_of

    bar = Progress()

    def note(line: str) -> None:
        bar.end()
        click.echo(f"farm: {line}", err=True)

    try:
        st = follow(
            ledger,
            farm.sender,
            farm.settings,
            on_status=lambda s: bar(describe(s), final=s.state in ("done", "failed")),
            alive=farm.workers.check if farm.workers else None,
            on_note=note,
            node=f"follower-{os.getpid()}",
        )
    finally:
        bar.end()
    if st.state == "done" and kind_of(ledger.spec()) is WEIGHTS:
        echo_weights(farm, st, started)
    elif st.state == "done":
        from farm.paths import stored_output
        from farm.storage.reader import FarmReader

        out = stored_output(farm.settings.data_dir, st.output, roots=farm.settings.output_roots)
        with FarmReader(out) as r:
            info = r.totals()  # not info(): it reads per-row columns of the whole dataset
        rej = info["rejections"]
        renders = info["renders"]
        rejected = sum(rej.values()) / renders if renders else 0.0
        from farm.storage.parts import parts_dir

        parts = parts_dir(out)
        beside = f" (its parts: {parts}/, keep them beside it)" if parts.is_dir() else ""
        click.echo(
            f"wrote {out}{beside}: {info['rows']} rows from {renders} renders ({rejected:.1%} "
            f"rejected) in {time.monotonic() - started:.1f}s; rejections {json.dumps(rej)}; "
            f"run {st.run_id}"
        )
    else:
        click.echo(f"run {st.run_id} is {st.state}")
    return st


def start_run(
    settings: Any,
    spec: Any,
    *,
    output: str,
    kw: dict[str, Any],
    started: float,
    what: str,
    prefix: str = "",
    faults: Any = None,
) -> None:
    """Start a run (embedded or on the broker), then follow it or print its id.

    Args:
        output: the output's path relative to the data folder.
        kw: the command's ``workers`` and ``wait`` options.
        what: how the first line names the run's product.
        prefix: before the run id (``w`` for importance runs).
    """
    from coordinator.ledger import Ledger
    from coordinator.nodes import live_processes
    from coordinator.run import new_run_id, window_for
    from coordinator.run import submit as submit_run
    from farm.params.registry import get_registry
    from farm.paths import OutputClaim

    workers = None if settings.broker_url else local_workers(kw["workers"])
    wait = kw["wait"] if kw["wait"] is not None else sys.stdout.isatty()
    if workers is not None and kw["wait"] is False:
        raise UsageError("--detach needs a broker: the embedded workers stop with farm")
    run_id = prefix + new_run_id(spec)
    claim = OutputClaim(settings.data_dir, output)
    claim.take(run_id, force=kw.get("force", False))
    created = False
    try:
        with open_farm(settings, run_workers=workers) as farm:
            ledger = Ledger(farm.client, run_id)
            submit_run(
                ledger,
                farm.sender,
                spec,
                output=output,
                window=window_for(farm.settings, workers),
                keep_shards=settings.keep_shards,
                faults=faults,
                fingerprint=get_registry().fingerprint,
                lost_after_s=farm.settings.lost_after_s,
                # On a broker: the pool processes of the workers serving it now.
                workers=workers or live_processes(farm.client, 3 * farm.settings.supervise_s),
            )
            created = True
            _announce_and_follow(farm, ledger, started, what, workers, wait)
    finally:
        if not created:
            claim.release(run_id)


def _announce_and_follow(
    farm: Farm, ledger: Any, started: float, what: str, workers: int | None, wait: bool
) -> None:
    run_id = ledger.run_id
    where = f"{workers} local workers" if workers else "the broker"
    click.echo(f"run {run_id}: {what} on {where}", err=True)
    if not (wait or farm.embedded):
        click.echo(run_id)
        return
    with _interruptible(run_id):
        _follow(farm, ledger, started)


def register(cli: click.Group) -> None:
    """Add the run commands to the ``farm`` group."""
    from farm.cli.options import (
        broker_option,
        build_spec,
        data_dir_option,
        spec_options,
        with_sources,
    )

    @cli.command()
    @spec_options
    @broker_option
    @workers_option
    @wait_option
    @click.option("--window", type=int, default=None, help="Most jobs outstanding at once.")
    @click.option("--keep-shards", is_flag=True, help="Keep the shards after collecting.")
    @click.option(
        "--part-rows",
        type=int,
        default=None,
        help="Write the dataset as part files of about K rows in NAME.parts/, joined by "
        "NAME.h5 (an HDF5 virtual dataset): the collector copies nothing. Default: one file "
        f"for datasets of at most {PARTED_ROWS:,} rows and {PARTED_BYTES / 1e9:g} GB, else "
        f"parts of about {PARTED_BYTES / 1e9:g} GB and at most {PARTED_ROWS:,} rows; 0: "
        "always one file.",
    )
    @click.option(
        "--inject-kill-job", "kill_jobs", type=int, multiple=True, hidden=True,
        help="Fault injection: the worker process rendering this job SIGKILLs itself.",
    )  # fmt: skip
    @click.option(
        "--inject-collect-delay", "collect_delay", type=float, default=0.0, hidden=True,
        help="Fault injection: the collector waits this many seconds before merging.",
    )  # fmt: skip
    def submit(**kw: Any) -> None:
        """Render a dataset on the farm (embedded Redis and local workers by default)."""
        from coordinator.run import window_for
        from farm.config import Faults
        from farm.disk import check_disk
        from farm.paths import check_output, resolve_output, run_output
        from farm.presets.files import check_dirs
        from farm.storage.compression import dataset_options

        started = time.monotonic()
        spec = _parted(build_spec(kw), kw["part_rows"])
        settings = farm_settings(
            kw["data_dir"], kw["broker"], window=kw["window"], keep_shards=kw["keep_shards"]
        )
        # Everything that can be refused is refused before anything is created.
        local = None if settings.broker_url else local_workers(kw["workers"])
        if local is not None and kw["wait"] is False:
            raise UsageError("--detach needs a broker: the embedded workers stop with farm")
        dataset_options(spec.compression)  # a plugin codec this machine lacks
        check_dirs(kw["community_dirs"])
        default = f"tier{spec.tier}_{spec.n}.h5"
        out = resolve_output(settings.data_dir, kw["output"], default, confine=False)
        settings, rel = run_output(settings, out, embedded=local is not None)
        check_output(out, force=kw["force"], root=settings.data_dir)
        check_disk(spec, settings.data_dir, extra_jobs=window_for(settings, local))
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        spec = with_sources(spec, kw, settings.data_dir)
        faults = Faults(
            crash_fraction=kw["inject_crash"],
            kill_jobs=kw["kill_jobs"],
            collect_delay_s=kw["collect_delay"],
        )
        what = f"{spec.n} rows of tier {spec.tier} in jobs of up to {spec.batch_size} presets"
        start_run(settings, spec, output=rel, kw=kw, started=started, what=what, faults=faults)

    @cli.command()
    @click.argument("run_id", required=False)
    @broker_option
    @data_dir_option
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def status(run_id: str | None, broker: str | None, data_dir: str, as_json: bool) -> None:
        """Every run, or one run in detail (state, rows, jobs, rejections, workers, ETA)."""
        from coordinator.embedded import EmbeddedBroker
        from coordinator.ledger import Ledger, check_run_id, list_runs
        from coordinator.run import describe

        if run_id is not None:
            check_run_id(run_id)
        settings = farm_settings(data_dir, broker)
        if not settings.broker_url and not EmbeddedBroker(data_dir).exists:
            if run_id is not None:
                raise UsageError(f"no run {run_id!r}: no runs in {data_dir}")
            click.echo("[]" if as_json else f"no runs in {data_dir}")
            return
        with open_farm(settings, run_workers=None) as farm:
            if run_id is not None:
                st = Ledger(farm.client, run_id).status()
                if as_json:
                    click.echo(json.dumps(st.to_dict(), indent=1))
                    return
                click.echo(f"run {st.run_id}: {st.state}  tier {st.tier}  output {st.output}")
                click.echo("  " + describe(st))
                click.echo(f"  workers seen {len(st.workers)}: {' '.join(st.workers)}")
                if st.error:
                    click.echo(f"  error: {st.error}")
                echo_flower(settings)
                return
            runs = [Ledger(farm.client, r).status() for r in list_runs(farm.client)]
            if as_json:
                click.echo(json.dumps([s.to_dict() for s in runs], indent=1))
                return
            if not runs:
                click.echo("no runs")
            for st in runs:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.created))
                click.echo(
                    f"{st.run_id:28} {st.state:10} {st.accepted:>8}/{st.n:<8} {when}  {st.output}"
                )
            echo_flower(settings)

    @cli.command()
    @click.argument("run_id")
    @broker_option
    @data_dir_option
    @workers_option
    @wait_option
    def resume(
        run_id: str, broker: str | None, data_dir: str, workers: int | None, wait: bool | None
    ) -> None:
        """Finish an interrupted or cancelled run without re-rendering what is done."""
        from coordinator.ledger import Ledger, check_run_id
        from coordinator.run import resume as resume_run

        check_run_id(run_id)
        started = time.monotonic()
        settings = farm_settings(data_dir, broker)
        local = None if settings.broker_url else (workers or cpu_count())
        if not settings.broker_url:
            settings = _embedded_run_settings(settings, run_id)
        with open_farm(settings, run_workers=local) as farm:
            ledger = Ledger(farm.client, run_id)
            resume_run(ledger, farm.sender)
            click.echo(f"run {run_id} resumed", err=True)
            follow_it = wait if wait is not None else sys.stdout.isatty()
            if not (follow_it or farm.embedded):
                return
            with _interruptible(run_id):
                _follow(farm, ledger, started)

    @cli.command()
    @click.argument("run_id")
    @broker_option
    @data_dir_option
    def cancel(run_id: str, broker: str | None, data_dir: str) -> None:
        """Stop handing out a run's jobs (it can be resumed later)."""
        from coordinator.ledger import Ledger, check_run_id
        from coordinator.run import cancel as cancel_run

        check_run_id(run_id)
        settings = farm_settings(data_dir, broker)
        if not settings.broker_url:
            _require_embedded_run(data_dir, run_id)
        with open_farm(settings, run_workers=None) as farm:
            cancel_run(Ledger(farm.client, run_id))
        click.echo(f"run {run_id} cancelled; `farm resume {run_id}` continues it")

    @cli.command()
    @click.argument("run_id")
    @broker_option
    @data_dir_option
    @click.option("--keep-shards", is_flag=True, help="Keep the shards after collecting.")
    def collect(run_id: str, broker: str | None, data_dir: str, keep_shards: bool) -> None:
        """Run a complete run's collector here (idempotent)."""
        from coordinator.collect import collect_run
        from coordinator.ledger import Ledger, check_run_id

        check_run_id(run_id)
        settings = farm_settings(data_dir, broker, keep_shards=keep_shards or None)
        if not settings.broker_url:
            settings = _embedded_run_settings(settings, run_id)
        with open_farm(settings, run_workers=None) as farm:
            done = collect_run(Ledger(farm.client, run_id), farm.settings, farm.sender)
        click.echo(done.summary())


#: Rows per part of a parted dataset when ``--part-rows`` is not given, and the run size
#: from which a dataset is parted by default (README, "Parted output": the merge's copy
#: grows with n and the number of workers; joining parts costs milliseconds).


def _parted(spec: Any, part_rows: int | None) -> Any:
    if part_rows is not None and part_rows < 0:
        raise UsageError(f"--part-rows must be 0 (one file) or a number of rows, got {part_rows}")
    if part_rows is None:
        part_rows = default_part_rows(spec)
    return spec.model_copy(update={"part_rows": part_rows or None})


def _require_embedded_run(data_dir: str, run_id: str) -> None:
    from coordinator.embedded import EmbeddedBroker

    if not EmbeddedBroker(data_dir).exists:
        raise UsageError(f"no run {run_id!r}: no runs in {data_dir}")


def _embedded_run_settings(settings: Any, run_id: str) -> Any:
    """The settings that finish an embedded run: an output its submitter wrote outside the
    data folder is granted again (the embedded broker is this data folder's own, behind
    its password, so its ledger says what this folder's user asked for)."""
    from coordinator.ledger import Ledger
    from farm.paths import run_output

    _require_embedded_run(settings.data_dir, run_id)
    with open_farm(settings, run_workers=None) as farm:
        meta = Ledger(farm.client, run_id).meta()
    granted = settings
    for stored in (meta.get("output"), _weights_target(meta)):
        if stored and Path(stored).is_absolute():
            granted, _ = run_output(granted, Path(stored).resolve(), embedded=True)
    return granted


def _weights_target(meta: dict[str, str]) -> str | None:
    from farm.config import RunSpec

    if not meta.get("spec"):
        return None
    weights = RunSpec.from_json(meta["spec"]).weights
    return weights.target if weights else None
