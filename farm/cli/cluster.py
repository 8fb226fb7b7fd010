"""The cluster's processes and upkeep: ``farm worker`` (a Celery worker with the farm's
settings), ``farm flower`` (the dashboard of a broker's workers), ``farm health`` (the
containers' health check) and ``farm gc`` (what no run needs any more)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from farm.cli.options import farm_settings
from farm.cli.session import open_farm
from farm.errors import UsageError


def register(cli: click.Group) -> None:
    """Add ``worker``, ``flower``, ``health`` and ``gc`` to the CLI."""
    from farm.cli.options import broker_option, data_dir_option

    @cli.command()
    @broker_option
    @data_dir_option
    @click.option(
        "--address",
        default=None,
        help="Interface to listen on [default: 127.0.0.1; 0.0.0.0 in a container; env "
        "FARM_FLOWER_ADDRESS].",
    )
    @click.option("--port", type=int, default=None, help="[default: 5555; env FARM_FLOWER_PORT]")
    @click.option(
        "--basic-auth",
        default=None,
        help="USER:PASSWORD[,USER:PASSWORD] (env FLOWER_BASIC_AUTH); required.",
    )
    def flower(
        broker: str | None,
        data_dir: str,
        address: str | None,
        port: int | None,
        basic_auth: str | None,
    ) -> None:
        """The Flower dashboard of a broker's workers and tasks, behind basic auth."""
        from coordinator.broker import connect
        from coordinator.monitor import check_basic_auth, flower_argv, protect_metrics

        settings = farm_settings(
            data_dir,
            broker,
            flower_address=address,
            flower_port=port,
            flower_basic_auth=basic_auth,
        )
        pairs = check_basic_auth(settings.flower_basic_auth)
        if not settings.broker_url:
            raise UsageError("farm flower needs a broker: --broker or FARM_BROKER_URL")
        argv = flower_argv(settings.flower_address, settings.flower_port, pairs, settings)
        try:
            protect_metrics()
        except ImportError:
            raise UsageError("Flower is not installed: pip install 'farm[flower]'") from None
        connect(settings)
        # The credentials travel as an argument; keep them out of Flower's own lookup of
        # FLOWER_* variables, so one value decides.
        os.environ.pop("FLOWER_BASIC_AUTH", None)
        from workers.app import make_app

        make_app(settings).start(argv=argv)

    @cli.command(hidden=True)
    @broker_option
    @data_dir_option
    @click.option("--worker", "is_worker", is_flag=True, help="Also ping this container's worker.")
    def health(broker: str | None, data_dir: str, is_worker: bool) -> None:
        """Exit 0 when this container can work (the image's HEALTHCHECK)."""
        from coordinator.monitor import health_problems, this_worker_node

        settings = farm_settings(data_dir, broker)
        problems = health_problems(settings, this_worker_node() if is_worker else None)
        if problems:
            raise UsageError("; ".join(problems))
        click.echo("ok")

    @cli.command()
    @broker_option
    @data_dir_option
    @click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
    def gc(broker: str | None, data_dir: str, dry_run: bool) -> None:
        """Remove what no run needs any more: shards of done or unknown runs, their
        output claims and store objects, temporary files of writers that are gone."""
        from coordinator.embedded import EmbeddedBroker
        from coordinator.gc import find_garbage
        from farm.disk import human

        settings = farm_settings(data_dir, broker)
        if not Path(settings.data_dir).is_dir():
            raise UsageError(f"no data folder {settings.data_dir}")
        if not settings.broker_url and not EmbeddedBroker(data_dir).exists:
            raise UsageError(
                f"no runs in {data_dir}: give --broker for a data folder a cluster wrote"
            )
        with open_farm(settings, run_workers=None) as farm:
            garbage = find_garbage(farm.client, settings.data_dir)
        verb = "would remove" if dry_run else "removed"
        for path, why in garbage.items:
            click.echo(f"{verb} {path}  ({why})")
        size = garbage.size
        if not dry_run:
            garbage.remove()
        click.echo(f"{verb} {len(garbage.items)} item(s), {human(size)}")

    @cli.command(context_settings={"ignore_unknown_options": True})
    @broker_option
    @data_dir_option
    @click.option("-c", "--concurrency", type=int, default=None, help="Pool processes.")
    @click.option(
        "--loglevel", default="INFO", show_default=True, help="Celery log level (DEBUG, INFO, ...)."
    )
    @click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
    def worker(
        broker: str | None,
        data_dir: str,
        concurrency: int | None,
        loglevel: str,
        celery_args: tuple[str, ...],
    ) -> None:
        """A Celery worker with the farm's settings (needs --broker / FARM_BROKER_URL)."""
        from coordinator.broker import connect

        settings = farm_settings(data_dir, broker)
        if not settings.broker_url:
            raise UsageError("farm worker needs a broker: --broker or FARM_BROKER_URL")
        connect(settings)
        from workers.app import make_app

        resolved = str(Path(settings.data_dir).resolve())
        app = make_app(settings.model_copy(update={"data_dir": resolved}))
        argv = ["worker", f"--loglevel={loglevel}", f"--queues={settings.queue}"]
        if concurrency:
            argv.append(f"--concurrency={concurrency}")
        app.worker_main([*argv, *celery_args])
