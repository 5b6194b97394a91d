"""``meshsim calibrate``: measure the real proxy in a loopback lab (or any proxy process with
``--proxy-cmd``, or read fortio runs) and fit a cost model; ``meshsim calibrate compare``
shows calibrated models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import err_console, user_errors

if TYPE_CHECKING:
    from rich.console import Console

# meshsim.proxy.ca's KEY_TYPES and DEFAULT_KEY_TYPE, spelt out so that the CLI starts without
# importing cryptography (tests/test_proxy_cmd.py checks they agree).
KEY_TYPES = ("ecdsa-p256", "rsa-2048")
DEFAULT_KEY_TYPE = "ecdsa-p256"


# A group invoked without a subcommand runs its own callback: `meshsim calibrate [OPTIONS]`
# runs the lab, `meshsim calibrate compare MODELS...` compares calibrated models.
@click.group("calibrate", invoke_without_command=True)
@click.pass_context
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Model file to write (default models/calibrated/lab.yaml; "
    "models/calibrated/PROGRAM.yaml with --proxy-cmd, "
    "models/calibrated/fortio.yaml with --from-fortio, "
    "NAME.yaml beside NAME.measurements.json with --from-measurements).",
)
@click.option(
    "--quick", is_flag=True, help="A small grid and short runs (a smoke test, about 1.5 min)."
)
@click.option(
    "--from-fortio",
    "fortio",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    help="fortio JSON results (files or a manifest YAML); repeatable.",
)
@click.option(
    "--from-measurements",
    "measurements",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Fit the lab's model again from a stored NAME.measurements.json (as the lab "
    "writes it beside the model) without measuring.",
)
@click.option(
    "--kind",
    type=click.Choice(["envoy-sidecar", "linkerd-proxy"]),
    default="envoy-sidecar",
    show_default=True,
    help="With --from-fortio: which proxy the runs measured.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option(
    "--proxy-cmd",
    "proxy_cmd",
    metavar="TEMPLATE",
    default=None,
    help="Calibrate this proxy process instead of meshsim's own: a command with "
    "{listen} and {upstream} (HOST:PORT), optionally {role} (outbound/inbound), "
    "{mtls} (on/off) with {cert} {key} {ca}, {keepalive} (on/off) and "
    "{workdir}. See proxies/README.md.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="With --proxy-cmd: the worker threads the proxy is configured with (default 1; "
    "with --from-measurements, the record's).",
)
@click.option(
    "--key-type",
    "key_type",
    type=click.Choice(KEY_TYPES),
    default=None,
    help="Key type of the lab CA and of the workload certificates it issues: "
    "ecdsa-p256 (Linkerd, ztunnel; the default) or rsa-2048 (Istio's default).",
)
@user_errors
def calibrate(
    ctx: click.Context,
    out: Path | None,
    quick: bool,
    fortio: tuple[Path, ...],
    measurements: Path | None,
    kind: str,
    seed: int,
    proxy_cmd: str | None,
    workers: int | None,
    key_type: str | None,
) -> None:
    """Fit a cost model: from the loopback lab (meshsim's proxy, or any proxy process with
    --proxy-cmd), with --from-fortio from your own cluster, or with --from-measurements
    again from a stored lab record."""
    if ctx.invoked_subcommand is not None:
        return
    console = err_console()
    if measurements is not None:
        clash = [
            name
            for name, given in (
                ("--from-fortio", bool(fortio)),
                ("--proxy-cmd", proxy_cmd is not None),
                ("--quick", quick),
                ("--key-type", key_type is not None),
            )
            if given
        ]
        if clash:
            raise click.UsageError(
                f"--from-measurements refits a stored record (its proxy, grid and key type "
                f"are the record's): not with {', '.join(clash)}"
            )
        from meshsim.calibrate.calibration import refit_from_measurements

        target = out or measurements.with_name(
            measurements.name.removesuffix(".measurements.json") + ".yaml"
        )
        doc = refit_from_measurements(
            measurements,
            target,
            log=lambda s: console.print(s, highlight=False, markup=False),
            seed=seed,
            workers=workers,
        )
        if "proxy_command" in doc["fit"]:
            _wrote_command(console, target, doc)
        else:
            _wrote_lab(console, target, doc)
        return
    if fortio and key_type is not None:
        raise click.UsageError("--key-type applies to the lab, not to --from-fortio runs")
    keys = key_type or DEFAULT_KEY_TYPE
    if proxy_cmd is not None:
        from meshsim.calibrate.proxycmd import ProxyCommand
        from meshsim.errors import MeshsimError

        if fortio:
            raise MeshsimError("--proxy-cmd and --from-fortio: choose one source")
        cmd = ProxyCommand.parse(proxy_cmd)
        from meshsim.calibrate.blackbox import calibrate_command

        target = out or Path("models/calibrated") / f"{Path(cmd.program).name}.yaml"
        doc = calibrate_command(
            cmd,
            target,
            quick=quick,
            seed=seed,
            workers=workers or 1,
            key_type=keys,
            log=lambda s: console.print(s, highlight=False, markup=False),
        )
        _wrote_command(console, target, doc)
        return
    if fortio:
        from meshsim.calibrate.fortio_import import calibrate_from_fortio

        target = out or Path("models/calibrated/fortio.yaml")
        doc = calibrate_from_fortio(list(fortio), target, kind=kind, seed=seed)
        est = doc["fit"]["estimates"]
        console.print(
            f"wrote {target}: per-hop CPU {est['service_us']['value']:.1f} us, "
            f"hop latency {est['hop_latency_us']['value']:.1f} us "
            f"({len(doc['fit']['pairs'])} load levels)",
            highlight=False,
        )
        return
    from meshsim.calibrate.calibration import calibrate_lab

    target = out or Path("models/calibrated/lab.yaml")
    doc = calibrate_lab(
        target,
        quick=quick,
        log=lambda s: console.print(s, highlight=False, markup=False),
        seed=seed,
        key_type=keys,
    )
    _wrote_lab(console, target, doc)


def _wrote_command(console: Console, target: Path, doc: dict[str, Any]) -> None:
    par = doc["parameters"]
    console.print(
        f"wrote {target} (fit record beside it): fixed CPU per request "
        f"{par['socket_io_us']['value']:.1f} us, per wake-up "
        f"{par.get('wakeup_cpu_us', {}).get('value', 0.0):.1f} us, per KiB "
        f"{par['payload_cpu_us_per_kib']['value']:.2f} us; "
        f"{doc['fit']['held_out_count']} held-out points",
        highlight=False,
    )


def _wrote_lab(console: Console, target: Path, doc: dict[str, Any]) -> None:
    st = doc["fit"]["service_time"]
    console.print(
        f"wrote {target} (fit record beside it): service time {st['dist']}, mean "
        f"{st['mean']['value']:.1f} us (95% CI {st['mean']['ci95'][0]:.1f}-"
        f"{st['mean']['ci95'][1]:.1f}), cv {st['cv']['value']:.2f}; "
        f"{doc['fit']['held_out_count']} held-out points",
        highlight=False,
    )


@calibrate.command("compare")
@click.argument(
    "models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--markdown", is_flag=True, help="Print a Markdown table instead.")
@user_errors
def compare(models: tuple[Path, ...], markdown: bool) -> None:
    """Calibrated MODELS side by side (e.g. models/calibrated/*.yaml): CPU per request, per
    wake-up, per KiB, TLS handshake and record costs, memory per connection."""
    from meshsim.calibrate.stacks import compare_rows, markdown_table, rich_table

    rows = compare_rows(list(models))
    if markdown:
        click.echo(markdown_table(rows))
    else:
        from rich.console import Console

        console = Console(soft_wrap=True)
        console.width = max(console.width, 26 + 16 * len(rows))  # one column per model
        console.print(rich_table(rows))


@calibrate.command("churn")
@click.argument("models", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key-type",
    "key_types",
    type=click.Choice(KEY_TYPES),
    multiple=True,
    help="Key types to measure handshakes with (repeatable; default both).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Rounds over every stack and key type (their spread is the noise).",
)
@click.option(
    "--requests",
    type=click.IntRange(min=10),
    default=150,
    show_default=True,
    help="Sequential requests per connection mode and round.",
)
@click.option(
    "--passes",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Passes over the keep-alive-off points.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write everything measured and predicted to this JSON file.",
)
@click.option(
    "--from",
    "stored",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Measure nothing: print the tables of this stored record "
    "(--out of an earlier run), the simulator's check redone.",
)
@user_errors
def churn(
    models: tuple[Path, ...],
    key_types: tuple[str, ...],
    rounds: int,
    requests: int,
    passes: int,
    out: Path | None,
    stored: Path | None,
) -> None:
    """Connection churn of calibrated MODELS' proxies, side by side in one lab run: full and
    resumed handshakes and a new connection's CPU with each key type, and the simulator's
    prediction of keep-alive-off points against the lab's."""
    from meshsim.calibrate.churn import (
        check_keepalive_off,
        costs_table,
        keepalive_off_table,
        read_record,
        run_churn,
    )

    console = err_console()
    if stored is not None:
        data = read_record(stored)
        data["keepalive_off_check"] = check_keepalive_off(data)
        if out is not None:
            out.write_text(json.dumps(data))
        click.echo(costs_table(data))
        click.echo()
        click.echo(keepalive_off_table(data["keepalive_off_check"]))
        return
    if not models:
        raise click.UsageError("give the calibrated models to compare (or --from RECORD)")
    data = run_churn(
        list(models),
        list(key_types or KEY_TYPES),
        out,
        rounds=rounds,
        requests=requests,
        passes=passes,
        log=lambda s: console.print(s, highlight=False, markup=False),
    )
    click.echo(costs_table(data))
    click.echo()
    click.echo(keepalive_off_table(data["keepalive_off_check"]))
