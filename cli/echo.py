"""``meshsim echo``: serve the fortio-like echo upstream."""

from __future__ import annotations

import click

from meshsim.errors import MeshsimError


class UserError(click.ClickException):
    """A bad input: printed without a traceback, exit status 2 (as meshsim.errors says)."""

    exit_code = 2


@click.command("echo")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Serve at most N requests at once; queue the rest (FIFO).",
)
@click.option("--seed", type=int, default=None, help="Seed for the random delays and statuses.")
def echo(listen: str, concurrency: int | None, seed: int | None) -> None:
    """Serve an HTTP/1.1 echo upstream with fortio-like query knobs.

    \b
    ?delay=10ms:50,100ms:5   wait 10 ms for 50 % of requests, 100 ms for 5 %
    ?delay=exp:10ms          exponential delays with a 10 ms mean
    ?status=503:5            answer 503 to 5 % of requests
    ?size=1024               send 1024 bytes (default: echo the request body)
    ?grpc-status=14:5        answer 5 % of the 200s as a gRPC error: grpc-status 14
                             (UNAVAILABLE) in the head, no body (a Trailers-Only response)
    """
    from meshsim.proxy import runner
    from meshsim.proxy.echo import bound_port, start_echo
    from meshsim.proxy.httpcore import parse_hostport

    async def main() -> None:
        host, port = parse_hostport(listen, what="--listen")
        server, _ = await start_echo(host, port, concurrency=concurrency, seed=seed)
        click.echo(f"echo listening on {host}:{bound_port(server)}", err=True)
        try:
            await runner.wait_for_stop_signal()
        finally:
            server.close()

    try:
        runner.run(main)
    except MeshsimError as exc:
        raise UserError(str(exc)) from None
