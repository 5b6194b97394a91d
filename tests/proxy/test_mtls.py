"""mTLS between proxies: accepted, refused without a certificate or from another trust
domain, authorization denied, and certificate rotation without dropping connections."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshsim.proxy.ca import CertificateAuthority
from meshsim.proxy.echo import bound_port, start_echo, stop_echo
from meshsim.proxy.tls import client_context, peer_spiffe_id

from .helpers import Client, arun
from .lab import proxy_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create("cluster.local")
    other = CertificateAuthority.create("evil.example")
    dirs = {
        "server": ca.issue("default", "reviews").write(base / "server"),
        "client": ca.issue("default", "productpage").write(base / "client"),
        "foreign_domain": ca.issue("default", "x", trust_domain="evil.example").write(base / "fd"),
        "other_ca": other.issue("default", "productpage").write(base / "oc"),
    }
    ca.save(base / "ca")
    dirs["ca"] = base / "ca"
    return dirs


def _mtls(pki: dict[str, Path], client: str, **kw: Any) -> int:
    async def main() -> int:
        server, state = await start_echo(seed=1)
        try:
            async with proxy_for(
                [bound_port(server)], tls="server", tls_dir=pki["server"], **kw
            ) as proxy:
                ctx = client_context(pki[client]) if client else _no_cert_context(pki)
                try:
                    c = await Client.open(proxy.port("test"), ctx)
                    peer = peer_spiffe_id(c.writer.get_extra_info("ssl_object"))
                    assert peer == "spiffe://cluster.local/ns/default/sa/reviews"
                    r = await c.get("/")
                    await c.close()
                    return r.status
                except (ssl.SSLError, ConnectionError):
                    return -1
        finally:
            await stop_echo(server, state)

    return arun(main)


def _no_cert_context(pki: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki["server"] / "ca.pem")
    return ctx


def test_mtls_accepted(pki: dict[str, Path]) -> None:
    assert _mtls(pki, "client") == 200


@pytest.mark.parametrize("client", ["", "foreign_domain", "other_ca"])
def test_mtls_refused(pki: dict[str, Path], client: str) -> None:
    # No certificate, a certificate naming another trust domain, or one from another CA.
    assert _mtls(pki, client) in (-1, 0)


def test_authorization_denied(pki: dict[str, Path]) -> None:
    allowed = frozenset({"spiffe://cluster.local/ns/default/sa/someone-else"})
    assert _mtls(pki, "client", allowed=allowed) == 403


def test_rotation_keeps_connections_and_new_handshakes_get_the_new_cert(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    ca = CertificateAuthority.load(pki["ca"])
    tls_dir = ca.issue("default", "reviews", 600).write(tmp_path / "tls")

    async def main() -> None:
        server, state = await start_echo(seed=1)
        async with proxy_for([bound_port(server)], tls="server", tls_dir=tls_dir) as proxy:
            port = proxy.port("test")
            ctx = client_context(pki["client"])
            old = await Client.open(port, ctx)
            serial_before = old.writer.get_extra_info("ssl_object").getpeercert()["serialNumber"]
            assert (await old.get("/")).status == 200
            assert proxy.rotator is not None
            ca.issue("default", "reviews", 600).write(tls_dir)
            proxy.rotator.reload()
            assert (await old.get("/")).status == 200  # the old connection lives on
            new = await Client.open(port, ctx)
            serial_after = new.writer.get_extra_info("ssl_object").getpeercert()["serialNumber"]
            assert serial_after != serial_before
            assert (await new.get("/")).status == 200
            await old.close()
            await new.close()
        await stop_echo(server, state)

    arun(main)


def test_ca_cli(tmp_path: Path) -> None:
    try:
        from meshsim.cli.ca import ca
    except ModuleNotFoundError:
        from cli.ca import ca
    runner = CliRunner()
    result = runner.invoke(
        ca, ["init", "--dir", str(tmp_path / "ca"), "--trust-domain", "lab.local"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        ca,
        [
            "issue",
            "--ca-dir",
            str(tmp_path / "ca"),
            "--ns",
            "shop",
            "--sa",
            "cart",
            "--out",
            str(tmp_path / "w"),
            "--lifetime-s",
            "300",
        ],
    )
    assert result.exit_code == 0
    assert "spiffe://lab.local/ns/shop/sa/cart" in result.output
    assert (tmp_path / "w" / "key.pem").stat().st_mode & 0o077 == 0
    result = runner.invoke(
        ca,
        ["issue", "--ca-dir", str(tmp_path / "nowhere"), "--sa", "x", "--out", str(tmp_path / "z")],
    )
    assert result.exit_code == 2
    assert "no CA" in result.output
    result = runner.invoke(
        ca, ["init", "--dir", str(tmp_path / "ca2"), "--trust-domain", "BAD DOMAIN"]
    )
    assert result.exit_code == 2
    assert "trust domain" in result.output


def _handshakes(proxy: Any, side: str) -> float:
    total = 0.0
    for metric in proxy.metrics.handshakes.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels.get("side") == side:
                total += s.value
    return total


@pytest.mark.parametrize("body", [b"", b"x" * 256, b"x" * 100_000])
def test_keep_alive_between_mtls_sidecars_reuses_the_upstream_connection(
    pki: dict[str, Path], body: bytes
) -> None:
    # client -> client sidecar -(mTLS)-> server sidecar -> echo: N requests on one downstream
    # keep-alive connection must share one upstream TLS connection, not handshake N times.
    # (Requests with a body, buffered or streamed, once closed their upstream connection.)
    n = 40
    method = b"POST" if body else b"GET"

    async def main() -> tuple[float, float]:
        server, state = await start_echo(seed=1)
        try:
            async with (
                proxy_for([bound_port(server)], tls="server", tls_dir=pki["server"]) as inbound,
                proxy_for([inbound.port("test")], tls="client", tls_dir=pki["client"]) as outbound,
            ):
                c = await Client.open(outbound.port("test"))
                for _ in range(n):
                    r = await c.raw(
                        method
                        + b" /echo HTTP/1.1\r\nHost: t\r\n"
                        + b"Content-Length: %d\r\n\r\n" % len(body)
                        + body
                    )
                    assert r.status == 200
                    assert r.keep_alive
                await c.close()
                return _handshakes(outbound, "upstream"), _handshakes(inbound, "downstream")
        finally:
            await stop_echo(server, state)

    upstream, downstream = arun(main)
    assert 1 <= upstream <= 2, upstream
    assert 1 <= downstream <= 2, downstream
