"""What commands print about runs, shared by the command groups."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from farm.cli.session import Farm


def echo_flower(settings: Any) -> None:
    """Where the Flower dashboard of this broker is, when the settings say."""
    if settings.flower_url:
        from coordinator.broker import redact

        click.echo(f"dashboard: {redact(settings.flower_url)} (Flower)")


def echo_weights(farm: Farm, st: Any, started: float) -> None:
    """The end of an importance run: its file and the five heaviest parameters."""
    from farm.paths import stored_output

    out = stored_output(farm.settings.data_dir, st.output, ".json", farm.settings.output_roots)
    w = json.loads(out.read_text())
    top = sorted(w["continuous"].items(), key=lambda kv: -kv[1])[:5]
    click.echo(
        f"wrote {out}: weights from {w['bases']} base presets (noise floor "
        f"{w['noise_floor']:.3g}) in {time.monotonic() - started:.1f}s; run {st.run_id}"
    )
    click.echo("  most important: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
