"""``meshsim proxy``: run the real sidecar proxy."""

from __future__ import annotations

import click

from meshsim.errors import MeshsimError


class UserError(click.ClickException):
    exit_code = 2


@click.command("proxy")
@click.option("--listen", metavar="HOST:PORT", help="Listener address (with --upstream).")
@click.option(
    "--upstream",
    "upstreams",
    metavar="HOST:PORT",
    multiple=True,
    help="Upstream host; repeat for several.",
)
@click.option("--admin", metavar="HOST:PORT", help="Admin port: /metrics, /ready, /live.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file with listeners, limits and traffic policies.",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False),
    help="cert.pem, key.pem, ca.pem from `meshsim ca issue`.",
)
@click.option(
    "--mode",
    type=click.Choice(["inbound", "outbound"]),
    default="outbound",
    show_default=True,
    help="With --tls-dir: inbound accepts mTLS, outbound originates it.",
)
@click.option(
    "--upstream-identity",
    "upstream_identities",
    metavar="SPIFFE_ID",
    multiple=True,
    help="With --mode outbound and --tls-dir: the identity the upstream must present "
    "(secure naming); repeat for several. Default: any workload of the trust domain.",
)
@click.option(
    "--access-log",
    default="-",
    show_default=True,
    help="'-' for standard output, a file, or 'off'.",
)
@click.option(
    "--drain-s",
    type=click.FloatRange(min=0),
    default=None,
    help="Graceful-shutdown drain time (default 10).",
)
def proxy(
    listen: str | None,
    upstreams: tuple[str, ...],
    admin: str | None,
    config_path: str | None,
    tls_dir: str | None,
    mode: str,
    upstream_identities: tuple[str, ...],
    access_log: str,
    drain_s: float | None,
) -> None:
    """Forward HTTP/1.1 from --listen to --upstream (or the listeners of --config)."""
    import dataclasses
    from pathlib import Path

    from meshsim.proxy import runner
    from meshsim.proxy.config import ProxyConfig, listener_from_dict, load_config
    from meshsim.proxy.httpcore import parse_hostport
    from meshsim.proxy.server import Proxy

    if (listen is None) != (not upstreams):
        raise click.BadParameter("give --listen and --upstream together", param_hint="--listen")
    if listen is None and config_path is None:
        raise click.UsageError("give --listen HOST:PORT --upstream HOST:PORT, or --config FILE")
    if upstream_identities and (listen is None or tls_dir is None or mode != "outbound"):
        raise click.BadParameter(
            "only with --listen, --tls-dir and --mode outbound", param_hint="--upstream-identity"
        )
    from meshsim.proxy.spiffe import SpiffeIdError, parse_workload

    for ident in upstream_identities:
        try:
            parse_workload(ident)
        except SpiffeIdError as exc:
            raise click.BadParameter(str(exc), param_hint="--upstream-identity") from None

    async def main() -> None:
        cfg = load_config(config_path) if config_path else ProxyConfig(listeners=())
        extra = []
        if listen is not None:
            tls = "none" if tls_dir is None else ("server" if mode == "inbound" else "client")
            raw = {"name": mode, "listen": listen, "upstreams": list(upstreams), "tls": tls}
            if upstream_identities:
                raw["upstream_identities"] = list(upstream_identities)
            extra.append(listener_from_dict(raw, len(cfg.listeners), "--listen"))
        cfg = dataclasses.replace(
            cfg,
            listeners=cfg.listeners + tuple(extra),
            admin=parse_hostport(admin, what="--admin") if admin else cfg.admin,
            tls_dir=Path(tls_dir) if tls_dir else cfg.tls_dir,
            access_log=None if access_log == "off" else access_log,
            drain_s=cfg.drain_s if drain_s is None else drain_s,
        )
        server = Proxy(cfg)
        await server.start()
        for name in server.servers:
            click.echo(f"proxy listener {name} on port {server.port(name)}", err=True)
        if server.admin_port is not None:
            click.echo(f"admin on port {server.admin_port}", err=True)
        try:
            await runner.wait_for_stop_signal()
        finally:
            click.echo("draining...", err=True)
            await server.stop()

    try:
        runner.run(main)
    except MeshsimError as exc:
        raise UserError(str(exc)) from None
