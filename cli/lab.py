"""``meshsim lab up``: a scenario's services as echo upstreams behind sidecars, on loopback."""

from __future__ import annotations

import click

from meshsim.errors import MeshsimError

from .common import EXIT_BAD_INPUT, scenario_argument


class UserError(click.ClickException):
    """A bad input: printed without a traceback, exit status 2."""

    exit_code = EXIT_BAD_INPUT


@click.group("lab")
def lab() -> None:
    """Run a scenario's services for real: echo upstreams behind meshsim sidecars."""


@lab.command("up")
@scenario_argument
@click.option(
    "--delay",
    type=click.Choice(["exp", "fixed", "none"]),
    default="exp",
    show_default=True,
    help="Echo delay per request, with the service's mean cpu_ms: exponential, fixed, none.",
)
@click.option("--mtls", is_flag=True, help="Sidecar-to-sidecar mutual TLS (a throw-away CA).")
@click.option("--seed", type=int, default=None, help="Seed for delays (default: the scenario's).")
@click.option(
    "--access-log",
    default="off",
    show_default=True,
    help="'-' for standard output, a file, or 'off'.",
)
@click.option(
    "--drain-s",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="On SIGINT/SIGTERM, let in-flight requests finish for up to this long.",
)
def up(
    scenario_path: str, delay: str, mtls: bool, seed: int | None, access_log: str, drain_s: float
) -> None:
    """Start SCENARIO.yaml's services on loopback ports until interrupted.

    Every replica is an echo server (delay from the service's cpu_ms mean, body of
    response_bytes) behind its own sidecar; each sidecar has an outbound listener per
    service it calls, wired to the callee replicas' sidecars with the scenario's traffic
    rule. Echo servers make no calls themselves: the lab serves each service standalone and
    provides the call edges as wiring (send to a to-<callee> port to drive one hop). Clients
    outside the mesh use the service addresses (an edge proxy). Ctrl-C drains and stops.
    """
    from rich.console import Console
    from rich.table import Table

    from meshsim.proxy import runner
    from meshsim.proxy.lab import start_lab
    from meshsim.scenario import load_scenario

    try:
        scenario = load_scenario(scenario_path)
    except MeshsimError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot read {scenario_path}: {exc.strerror or exc}") from None
    console = Console(stderr=False, soft_wrap=True)

    async def main() -> None:
        running = await start_lab(
            scenario,
            delay=delay,
            mtls=mtls,
            seed=seed,
            access_log=None if access_log == "off" else access_log,
        )
        table = Table(title=f"meshsim lab: {scenario.name}" + (" (mTLS)" if mtls else ""))
        for col in ("what", "name", "address", "detail"):
            table.add_column(col)
        for row in running.rows():
            table.add_row(*row)
        console.print(table)
        for note in running.notes:
            console.print(f"[yellow]note:[/] {note}")
        console.print("echo servers make no downstream calls; Ctrl-C drains and stops.")
        console.file.flush()
        try:
            await runner.wait_for_stop_signal()
        finally:
            console.print("draining...")
            await running.stop(drain_s)

    try:
        runner.run(main)
    except MeshsimError as exc:
        raise UserError(str(exc)) from None
