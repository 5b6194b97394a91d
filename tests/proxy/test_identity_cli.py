"""``meshsim ca`` refuses ids that are not workload SPIFFE ids and absurd lifetimes, and
``meshsim proxy --upstream-identity`` ids that are not workload SPIFFE ids: exit 2, one
line naming the option, no traceback, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from meshsim.cli.main import cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ca") / "ca"
    result = CliRunner().invoke(cli, ["ca", "init", "--dir", str(out)])
    assert result.exit_code == 0, result.output
    return out


def refused(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"Error: {message}" in result.output, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ns", "..", "--sa", "x"], "--ns: bad namespace '..'"),
        (["--ns", ".", "--sa", "x"], "--ns: bad namespace '.'"),
        (["--ns", "a/../b", "--sa", "x"], "--ns: bad namespace 'a/../b'"),
        (["--ns", "Shop", "--sa", "x"], "--ns: bad namespace 'Shop'"),
        (["--ns", "", "--sa", "x"], "--ns: bad namespace ''"),
        (["--sa", ".."], "--sa: bad service account '..'"),
        (["--sa", "."], "--sa: bad service account '.'"),
        (["--sa", "a..b"], "--sa: bad service account 'a..b'"),
        (["--sa", "x/y"], "--sa: bad service account 'x/y'"),
        (["--sa", "x%2F.."], "--sa: bad service account 'x%2F..'"),
        (["--sa", "x?admin"], "--sa: bad service account 'x?admin'"),
        (["--sa", "x#y"], "--sa: bad service account 'x#y'"),
        (["--sa", ""], "--sa: bad service account ''"),
        (["--ns", "..", "--sa", ".."], "--ns: bad namespace '..'"),
    ],
)
def test_issue_refuses_ids_that_are_not_workload_ids(
    ca_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "w"
    result = CliRunner().invoke(
        cli, ["ca", "issue", "--ca-dir", str(ca_dir), "--out", str(out), *args]
    )
    refused(result, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("nan", "nan"),
        ("inf", "inf"),
        ("-inf", "-inf"),
        ("1e300", "1e+300"),
        ("7776001", "7776001.0"),  # a second over istiod's 90-day maximum
        ("0", "0.0"),
        ("0.5", "0.5"),
        ("-1", "-1.0"),
    ],
)
def test_issue_refuses_absurd_lifetimes(
    ca_dir: Path, tmp_path: Path, value: str, shown: str
) -> None:
    out = tmp_path / "w"
    result = CliRunner().invoke(
        cli,
        ["ca", "issue", "--ca-dir", str(ca_dir), "--sa", "x", "--out", str(out),
         "--lifetime-s", value],
    )  # fmt: skip
    refused(
        result,
        f"--lifetime-s: certificate lifetime must be a number of seconds from 1 to 7776000, "
        f"not {shown}",
    )
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "36501", "0", "0.04"])
def test_init_refuses_absurd_lifetimes(tmp_path: Path, value: str) -> None:
    out = tmp_path / "ca"
    result = CliRunner().invoke(cli, ["ca", "init", "--dir", str(out), "--lifetime-days", value])
    refused(result, "--lifetime-days: certificate lifetime must be a number of days from 0.04167")
    assert not out.exists()


@pytest.mark.parametrize(
    "domain", ["Cluster.local", "cluster.local:443", "a@cluster.local", "", "td/x", "c%2elocal"]
)
def test_init_refuses_bad_trust_domains(tmp_path: Path, domain: str) -> None:
    out = tmp_path / "ca"
    result = CliRunner().invoke(cli, ["ca", "init", "--dir", str(out), "--trust-domain", domain])
    refused(result, f"--trust-domain: bad trust domain {domain!r}")
    assert not out.exists()


@pytest.mark.parametrize(("lifetime", "days"), [("1", None), ("7776000", 90)])
def test_issue_accepts_the_bounds(ca_dir: Path, tmp_path: Path, lifetime: str, days: int) -> None:
    out = tmp_path / "w"
    result = CliRunner().invoke(
        cli,
        ["ca", "issue", "--ca-dir", str(ca_dir), "--ns", "shop", "--sa", "cart.v2",
         "--out", str(out), "--lifetime-s", lifetime],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("spiffe://cluster.local/ns/shop/sa/cart.v2 valid until")
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    # issued certificates are backdated by one minute against clock skew
    assert life.total_seconds() == pytest.approx(float(lifetime) + 60, abs=1)
    if days is not None:
        assert life.days == days


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--upstream-identity", "spiffe://cluster.local/ns/../sa/x"], "has a '..' segment"),
        (["--upstream-identity", "spiffe://cluster.local"], "names the whole trust domain"),
        (["--upstream-identity", "cluster.local/ns/a/sa/b"], "the scheme must be 'spiffe://'"),
        (["--upstream-identity", "spiffe://cluster.local/ns/a/sa/b", "--mode", "inbound"],
         "only with --listen, --tls-dir and --mode outbound"),
    ],
)  # fmt: skip
def test_proxy_refuses_bad_upstream_identities(
    ca_dir: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    tls_dir = tmp_path / "tls"
    issued = CliRunner().invoke(
        cli, ["ca", "issue", "--ca-dir", str(ca_dir), "--sa", "x", "--out", str(tls_dir)]
    )
    assert issued.exit_code == 0, issued.output
    result = CliRunner().invoke(
        cli,
        ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--tls-dir",
         str(tls_dir), *extra],
    )  # fmt: skip
    refused(result, "Invalid value for --upstream-identity: ")
    assert message in result.output


@pytest.mark.parametrize(("sa", "status"), [("reviews", 503), ("attacker", 200)])
def test_proxy_upstream_identity_is_secure_naming(
    ca_dir: Path, tmp_path: Path, sa: str, status: int
) -> None:
    import asyncio

    from meshsim.proxy.ca import CertificateAuthority
    from meshsim.proxy.tls import server_context

    from .helpers import ServerThread
    from .test_cli import free_port, run_until_answered

    ca = CertificateAuthority.load(ca_dir)
    server_dir = ca.issue("default", "attacker").write(tmp_path / "server")
    client_dir = ca.issue("default", "productpage").write(tmp_path / "client")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def start() -> tuple[int, list[object]]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context(server_dir))
        return server.sockets[0].getsockname()[1], [server]

    port = free_port()
    with ServerThread(start) as upstream:
        result, got, _ = run_until_answered(
            ["proxy", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream.port}",
             "--tls-dir", str(client_dir), "--access-log", "off", "--drain-s", "0",
             "--upstream-identity", f"spiffe://cluster.local/ns/default/sa/{sa}"],
            port,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert got == status
