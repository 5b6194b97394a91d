"""``meshsim load``: open-loop load with latency measured from the intended send time."""

from __future__ import annotations

import json
from pathlib import Path

import click

from meshsim.errors import MeshsimError


class UserError(click.ClickException):
    """A bad input or unreachable target: no traceback, exit status 2."""

    exit_code = 2


@click.command("load")
@click.argument("url")
@click.option(
    "--rps",
    type=click.FloatRange(min=0),
    required=True,
    help="Total target rate over all connections; 0 = as fast as possible.",
)
@click.option("--connections", "-c", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--duration-s", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True
)
@click.option("--poisson", is_flag=True, help="Poisson arrivals instead of a constant rate.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write fortio-compatible JSON here ('-' for standard output).",
)
@click.option("--seed", type=int, default=None, help="Seed for Poisson inter-arrival times.")
@click.option("--labels", default="", help="Free text stored in the JSON's Labels.")
def load(
    url: str,
    rps: float,
    connections: int,
    duration_s: float,
    poisson: bool,
    json_path: str | None,
    seed: int | None,
    labels: str,
) -> None:
    """Drive URL at a constant (or Poisson) rate and report corrected latencies."""
    from rich.console import Console

    from meshsim.proxy.fortio import to_fortio
    from meshsim.proxy.loadgen import LoadSpec, parse_url, run_load
    from meshsim.proxy.report import load_table

    try:
        parse_url(url)
        result = run_load(LoadSpec(url, rps, connections, duration_s, poisson, seed))
    except MeshsimError as exc:
        raise UserError(str(exc)) from None
    console = Console(stderr=json_path == "-")
    console.print(load_table(result))
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if json_path:
        text = json.dumps(to_fortio(result, labels), indent=2)
        if json_path == "-":
            click.echo(text)
        else:
            Path(json_path).write_text(text + "\n")
