"""``farm flower`` (the dashboard of a broker's workers) and ``farm health`` (the
containers' health check)."""

from __future__ import annotations

import os

import click

from farm.cli.options import farm_settings
from farm.errors import UsageError


def register(cli: click.Group) -> None:
    """Add ``flower`` and ``health`` to the CLI."""
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
