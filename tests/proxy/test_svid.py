"""Peer certificates against the real proxy: the inbound listener accepts only X.509-SVIDs
(one URI SAN holding a well-formed workload SPIFFE id, a leaf that cannot sign) and the
outbound side also checks secure naming (the destination's expected identity).

Every certificate here is signed with the project's CA (meshsim.proxy.ca) by ``forge``,
which can break one rule at a time. A refusal is checked exactly: the metrics reason the
proxy counts, or, for what OpenSSL refuses during the handshake, the TLS alert the client
receives, and in every case that no request reached the application.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshsim.errors import MeshsimError
from meshsim.proxy.ca import CertificateAuthority
from meshsim.proxy.config import ListenerConfig, ProxyConfig, listener_from_dict
from meshsim.proxy.echo import bound_port, start_echo, stop_echo
from meshsim.proxy.server import Proxy
from meshsim.proxy.tls import client_context, server_context

from .helpers import Client, arun, read_response

pytestmark = pytest.mark.integration

TD = "cluster.local"
GOOD_ID = f"spiffe://{TD}/ns/default/sa/productpage"
SERVER_ID = f"spiffe://{TD}/ns/default/sa/reviews"
_NOW = dt.datetime.now(dt.UTC)
_SIGNING_ONLY = {
    "digital_signature": True, "content_commitment": False, "key_encipherment": False,
    "data_encipherment": False, "key_agreement": False, "key_cert_sign": False,
    "crl_sign": False, "encipher_only": False, "decipher_only": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)


def forge(
    ca: CertificateAuthority,
    out: Path,
    *,
    uris: Sequence[str] | None = (GOOD_ID,),
    dns: Sequence[str] = (),
    key: Any = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    is_ca: bool = False,
    usage: dict[str, bool] | None = None,
    self_signed: bool = False,
) -> Path:
    """A TLS directory whose cert.pem breaks (at most) the rules the arguments say.

    ``uris=None`` leaves out the subjectAltName extension altogether."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    signer = key if self_signed else ca.key
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forged")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if self_signed else ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or _NOW - dt.timedelta(minutes=5))
        .not_valid_after(not_after or _NOW + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**(usage or _SIGNING_ONLY)), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris or ()]
    names += [x509.DNSName(d) for d in dns]
    if uris is not None or dns:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    cert = builder.sign(signer, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (out / "ca.pem").write_bytes(ca.ca_pem)
    return out


def lax_context(tls_dir: Path, purpose: ssl.Purpose) -> ssl.SSLContext:
    """A context that presents whatever ``tls_dir`` holds (security level 0) and checks
    nothing of its peer: the side under test must do the refusing."""
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_CLIENT if purpose is ssl.Purpose.SERVER_AUTH else ssl.PROTOCOL_TLS_SERVER
    )
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    return ctx


@dataclass
class Outcome:
    status: int
    """The HTTP status the client got; -1: the connection failed or was cut."""
    error: str = ""
    refused: dict[str, float] = field(default_factory=dict)
    handshakes: dict[str, float] = field(default_factory=dict)
    app_requests: int = 0
    """Requests that reached the application behind the proxy (inbound tests)."""
    app_bytes: bytes = b""
    """What the upstream server read (outbound tests)."""
    log: list[dict[str, Any]] = field(default_factory=list)


def _counters(proxy: Proxy) -> tuple[dict[str, float], dict[str, float]]:
    refused: dict[str, float] = {}
    handshakes: dict[str, float] = {}
    for metric in proxy.metrics.refused.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                refused[s.labels["reason"]] = s.value
    for metric in proxy.metrics.handshakes.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                handshakes[f"{s.labels['side']}/{s.labels['result']}"] = s.value
    return refused, handshakes


def _proxy(listener: ListenerConfig, tls_dir: Path, log: list[str]) -> Proxy:
    cfg = ProxyConfig(
        listeners=(listener,), tls_dir=tls_dir, access_log=None, drain_s=0.5, seed=1,
        cpu_sample_every=0,
    )  # fmt: skip
    return Proxy(cfg, access_log=log.append)


async def _get(port: int, ctx: ssl.SSLContext | None) -> tuple[int, str]:
    try:
        c = await Client.open(port, ctx)
        r = await c.get("/")
        await c.close()
        return (r.status if r.complete else -1), ""
    except (ssl.SSLError, ConnectionError) as exc:
        return -1, str(exc)


def inbound(ca: CertificateAuthority, tmp: Path, client_dir: Path) -> Outcome:
    """A client presenting ``client_dir``'s certificate to an inbound mTLS listener."""
    server_dir = ca.issue("default", "reviews").write(tmp / "server")

    async def main() -> Outcome:
        echo, state = await start_echo(seed=1)
        log: list[str] = []
        listener = ListenerConfig(
            "inbound", ("127.0.0.1", 0), (("127.0.0.1", bound_port(echo)),), tls="server"
        )
        proxy = _proxy(listener, server_dir, log)
        await proxy.start()
        try:
            status, error = await _get(
                proxy.port("inbound"), lax_context(client_dir, ssl.Purpose.SERVER_AUTH)
            )
            await asyncio.sleep(0.05)  # let the server side count its refusal
        finally:
            await proxy.stop(0)
            await stop_echo(echo, state)
        refused, handshakes = _counters(proxy)
        return Outcome(status, error, refused, handshakes, state.served,
                       log=[json.loads(line) for line in log])  # fmt: skip

    return arun(main)


# -- inbound: each SPIFFE / X509-SVID rule --------------------------------------------

# (test id, forge arguments, the metrics reason of the refusal)
SVID_RULES: list[tuple[str, dict[str, Any], str]] = [
    ("two_uri_sans", {"uris": [GOOD_ID, f"spiffe://{TD}/ns/default/sa/admin"]}, "svid_uri_count"),
    ("spiffe_and_https_uri", {"uris": [GOOD_ID, "https://example.com/x"]}, "svid_uri_count"),
    ("bare_trust_domain", {"uris": [f"spiffe://{TD}"]}, "spiffe_id.no_path"),
    ("dot_dot_segment", {"uris": [f"spiffe://{TD}/ns/../sa/admin"]}, "spiffe_id.dot_segment"),
    ("dot_segment", {"uris": [f"spiffe://{TD}/ns/default/sa/./x"]}, "spiffe_id.dot_segment"),
    ("empty_segment", {"uris": [f"spiffe://{TD}/ns//sa/x"]}, "spiffe_id.empty_segment"),
    ("trailing_slash", {"uris": [GOOD_ID + "/"]}, "spiffe_id.trailing_slash"),
    ("percent_in_path", {"uris": [f"spiffe://{TD}/ns/default/sa/%61dmin"]}, "spiffe_id.path_char"),
    ("percent_in_domain", {"uris": ["spiffe://cluster%2Elocal/ns/a/sa/b"]},
     "spiffe_id.trust_domain_char"),
    ("query", {"uris": [GOOD_ID + "?admin=1"]}, "spiffe_id.path_char"),
    ("fragment", {"uris": [GOOD_ID + "#admin"]}, "spiffe_id.path_char"),
    ("port", {"uris": [f"spiffe://{TD}:8443/ns/default/sa/x"]}, "spiffe_id.trust_domain_char"),
    ("userinfo", {"uris": [f"spiffe://admin@{TD}/ns/default/sa/x"]},
     "spiffe_id.trust_domain_char"),
    ("uppercase_trust_domain", {"uris": ["spiffe://Cluster.Local/ns/default/sa/x"]},
     "spiffe_id.trust_domain_char"),
    ("uppercase_scheme", {"uris": ["SPIFFE://cluster.local/ns/default/sa/x"]}, "spiffe_id.scheme"),
    ("not_spiffe", {"uris": ["https://cluster.local/ns/default/sa/x"]}, "spiffe_id.scheme"),
    ("empty_trust_domain", {"uris": ["spiffe:///ns/default/sa/x"]}, "spiffe_id.trust_domain_empty"),
    ("over_2048_bytes", {"uris": [f"spiffe://{TD}/" + "a" * 2100]}, "spiffe_id.length"),
    ("no_san", {"uris": None}, "no_svid"),
    ("dns_san_only", {"uris": (), "dns": ["reviews.default.svc"]}, "no_svid"),
    ("leaf_is_a_ca", {"is_ca": True}, "svid_leaf"),
    ("leaf_signs_certificates", {"usage": {**_SIGNING_ONLY, "key_cert_sign": True}},
     "svid_leaf"),
    ("leaf_signs_crls", {"usage": {**_SIGNING_ONLY, "crl_sign": True}}, "svid_leaf"),
    ("leaf_without_digital_signature",
     {"usage": {**_SIGNING_ONLY, "digital_signature": False, "key_agreement": True}},
     "svid_leaf"),
    ("foreign_trust_domain", {"uris": ["spiffe://evil.example/ns/default/sa/productpage"]},
     "trust_domain"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "reason"), [r[1:] for r in SVID_RULES], ids=[r[0] for r in SVID_RULES]
)
def test_inbound_refuses_a_certificate_that_is_not_a_workload_svid(
    ca: CertificateAuthority, tmp_path: Path, kwargs: dict[str, Any], reason: str
) -> None:
    out = inbound(ca, tmp_path, forge(ca, tmp_path / "client", **kwargs))
    assert out.status == -1
    assert out.refused == {reason: 1.0}
    assert out.handshakes == {"downstream/refused": 1.0}
    assert out.app_requests == 0
    assert out.log == []  # refused at connection time: no request was ever parsed


# (test id, forge arguments) that are valid SVIDs although unusual
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("istio_shaped", {}),
    ("upper_case_and_underscore_in_path", {"uris": [f"spiffe://{TD}/ns/default/sa/Product_Page"]}),
    ("not_istio_shaped", {"uris": [f"spiffe://{TD}/workload-1"]}),
    ("dns_sans_besides_the_uri", {"dns": ["productpage.default.svc"]}),
    ("three_dots_is_a_name", {"uris": [f"spiffe://{TD}/ns/default/sa/..."]}),
]  # fmt: skip


@pytest.mark.parametrize("kwargs", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_inbound_accepts_well_formed_svids(
    ca: CertificateAuthority, tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    out = inbound(ca, tmp_path, forge(ca, tmp_path / "client", **kwargs))
    assert out.status == 200, out.error
    assert out.refused == {}
    assert out.handshakes == {"downstream/ok": 1.0}
    assert out.app_requests == 1
    expected_peer = (kwargs.get("uris") or [GOOD_ID])[0]
    assert [entry["peer"] for entry in out.log] == [expected_peer]


# -- what the handshake itself refuses (and must keep refusing) ------------------------

_SAME_NAME_CA = CertificateAuthority.create(TD)  # the mesh CA's name, another key
_FOREIGN_CA = CertificateAuthority.create("evil.example")

# (test id, forge arguments, OpenSSL's verification message on the server side)
HANDSHAKE_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("another_ca", {"signer": _FOREIGN_CA}, "unable to get local issuer certificate"),
    ("another_ca_same_name", {"signer": _SAME_NAME_CA}, "certificate signature failure"),
    ("self_signed", {"self_signed": True}, "self-signed certificate"),
    ("expired", {"not_before": _NOW - dt.timedelta(days=2),
                 "not_after": _NOW - dt.timedelta(days=1)}, "certificate has expired"),
    ("not_yet_valid", {"not_before": _NOW + dt.timedelta(days=1),
                       "not_after": _NOW + dt.timedelta(days=2)}, "certificate is not yet valid"),
    ("rsa_1024_key", {"key": "rsa1024"}, "EE certificate key too weak"),
]  # fmt: skip


def server_verdict(server_dir: Path, client_dir: Path) -> str:
    """Run a handshake in memory between the proxy's own server context and a client
    presenting ``client_dir``: OpenSSL's verification message, or "ok"."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_context(server_dir).wrap_bio(s_in, s_out, server_side=True)
    client = lax_context(client_dir, ssl.Purpose.SERVER_AUTH).wrap_bio(
        c_in, c_out, server_hostname="reviews"
    )
    for _ in range(8):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                return str(exc.verify_message)
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return "ok"


@pytest.mark.parametrize(
    ("kwargs", "verdict"),
    [r[1:] for r in HANDSHAKE_REFUSALS],
    ids=[r[0] for r in HANDSHAKE_REFUSALS],
)
def test_inbound_handshake_refuses_untrusted_expired_and_weak_certificates(
    ca: CertificateAuthority, tmp_path: Path, kwargs: dict[str, Any], verdict: str
) -> None:
    kwargs = dict(kwargs)
    signer = kwargs.pop("signer", ca)
    if kwargs.get("key") == "rsa1024":
        kwargs["key"] = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    client_dir = forge(signer, tmp_path / "client", **kwargs)
    (client_dir / "ca.pem").write_bytes(ca.ca_pem)
    server_dir = ca.issue("default", "reviews").write(tmp_path / "verdict")
    assert server_verdict(server_dir, client_dir) == verdict
    out = inbound(ca, tmp_path, client_dir)
    # asyncio drops the connection without sending the alert: the client sees EOF.
    assert (out.status, out.error) == (-1, "")
    assert out.refused == {}  # OpenSSL refused it before the proxy saw a connection
    assert out.handshakes == {}
    assert out.app_requests == 0


def test_the_verdict_helper_accepts_a_good_svid(ca: CertificateAuthority, tmp_path: Path) -> None:
    server_dir = ca.issue("default", "reviews").write(tmp_path / "server")
    assert server_verdict(server_dir, forge(ca, tmp_path / "client")) == "ok"


def test_client_context_refuses_to_present_a_weak_key(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    # The proxy's own contexts run at OpenSSL security level 2 whatever openssl.cnf says.
    weak = forge(ca, tmp_path / "w", key=rsa.generate_private_key(65537, 1024))
    with pytest.raises(MeshsimError, match="too small"):
        client_context(weak)


# -- outbound: the upstream's certificate and secure naming ---------------------------


def outbound(
    ca: CertificateAuthority,
    tmp: Path,
    server_dir: Path,
    identities: list[str] | None,
) -> Outcome:
    """The app -> an outbound mTLS listener -> a TLS server presenting ``server_dir``.

    The server records every byte it reads and answers 200 to whatever it gets."""
    client_dir = ca.issue("default", "productpage").write(tmp / "client")
    got = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not got.endswith(b"\r\n\r\n"):
                data = await reader.read(65536)
                if not data:
                    return
                got.extend(data)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> Outcome:
        ctx = lax_context(server_dir, ssl.Purpose.CLIENT_AUTH)
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        raw: dict[str, Any] = {"listen": "127.0.0.1:0", "upstreams": [f"127.0.0.1:{port}"],
                               "tls": "client", "name": "outbound"}  # fmt: skip
        if identities is not None:
            raw["upstream_identities"] = identities
        log: list[str] = []
        proxy = _proxy(listener_from_dict(raw, 0), client_dir, log)
        await proxy.start()
        try:
            c = await Client.open(proxy.port("outbound"))
            c.writer.write(b"GET /secret HTTP/1.1\r\nHost: reviews\r\n\r\n")
            r = await read_response(c.reader)
            await c.close()
        finally:
            await proxy.stop(0)
            server.close()
            await server.wait_closed()
        refused, handshakes = _counters(proxy)
        return Outcome(r.status, r.body.decode(), refused, handshakes, app_bytes=bytes(got),
                       log=[json.loads(line) for line in log])  # fmt: skip

    return arun(main)


def test_secure_naming_refuses_a_server_holding_another_identity(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    # The issue's case: a workload of the mesh holding the 'attacker' identity answers for
    # reviews. Its certificate is a perfectly good SVID of the trust domain.
    attacker = ca.issue("default", "attacker").write(tmp_path / "attacker")
    out = outbound(ca, tmp_path, attacker, [SERVER_ID])
    assert out.status == 503
    assert "upstream connect error" in out.error
    assert out.refused == {"secure_naming": 1.0}
    assert out.handshakes == {"upstream/refused": 1.0}
    assert out.app_bytes == b""  # not one request byte reached the attacker
    assert [(e["status"], e["flags"], e["path"]) for e in out.log] == [(503, "UF", "/secret")]


def test_secure_naming_accepts_the_expected_identity(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    reviews = ca.issue("default", "reviews").write(tmp_path / "reviews")
    other = f"spiffe://{TD}/ns/default/sa/reviews-canary"
    out = outbound(ca, tmp_path, reviews, [other, SERVER_ID])  # any of the service's accounts
    assert out.status == 200
    assert out.refused == {}
    assert out.handshakes == {"upstream/ok": 1.0}
    assert out.app_bytes.startswith(b"GET /secret HTTP/1.1\r\n")
    assert [(e["status"], e["flags"]) for e in out.log] == [(200, "-")]


def test_without_expected_identities_any_workload_of_the_domain_is_accepted(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    # What a listener without upstream_identities does (the trust domain check only):
    # documented in meshsim.proxy.config; the mesh lab always sets them.
    attacker = ca.issue("default", "attacker").write(tmp_path / "attacker")
    out = outbound(ca, tmp_path, attacker, None)
    assert out.status == 200
    assert out.handshakes == {"upstream/ok": 1.0}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"uris": [SERVER_ID, f"spiffe://{TD}/ns/default/sa/attacker"]}, "svid_uri_count"),
        ({"uris": [f"spiffe://{TD}"]}, "spiffe_id.no_path"),
        ({"uris": [f"spiffe://{TD}/ns/default/sa/../reviews"]}, "spiffe_id.dot_segment"),
        ({"uris": ["spiffe://evil.example/ns/default/sa/reviews"]}, "trust_domain"),
        ({"uris": [SERVER_ID], "is_ca": True}, "svid_leaf"),
    ],
    ids=["two_uri_sans", "bare_trust_domain", "dot_dot_segment", "foreign_domain", "ca_leaf"],
)
def test_outbound_refuses_an_upstream_that_is_not_a_workload_svid(
    ca: CertificateAuthority, tmp_path: Path, kwargs: dict[str, Any], reason: str
) -> None:
    server = forge(ca, tmp_path / "server", **kwargs)
    out = outbound(ca, tmp_path, server, None)
    assert out.status == 503
    assert out.refused == {reason: 1.0}
    assert out.handshakes == {"upstream/refused": 1.0}
    assert out.app_bytes == b""


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tls": "client", "upstream_identities": ["spiffe://cluster.local"]},
         "listeners[0].upstream_identities[0]: not a SPIFFE id"),
        ({"tls": "client", "upstream_identities": ["spiffe://cluster.local/ns/../sa/x"]},
         "has a '..' segment"),
        ({"tls": "client", "upstream_identities": []}, "expected a non-empty list"),
        ({"tls": "client", "upstream_identities": [7]}, "upstream_identities[0]: expected a"),
        ({"tls": "server", "upstream_identities": [SERVER_ID]}, "only for tls: client"),
        ({"tls": "server", "allowed_principals": ["cluster.local/ns/a/sa/b"]},
         "allowed_principals[0]: not a SPIFFE id"),
    ],
)  # fmt: skip
def test_listener_identities_must_be_workload_spiffe_ids(raw: dict[str, Any], message: str) -> None:
    raw = {"listen": "127.0.0.1:0", "upstreams": ["127.0.0.1:1"], **raw}
    with pytest.raises(MeshsimError) as info:
        listener_from_dict(raw, 0, "proxy.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("proxy.yaml: listeners[0].")


def test_listener_keeps_its_expected_identities() -> None:
    raw = {"listen": "127.0.0.1:0", "upstreams": ["127.0.0.1:1"], "tls": "client",
           "upstream_identities": SERVER_ID}  # fmt: skip
    assert listener_from_dict(raw, 0).upstream_identities == frozenset({SERVER_ID})


# -- the lab's sidecar chain -----------------------------------------------------------


def test_the_lab_names_each_destination_identity_and_serves_through_it() -> None:
    from meshsim.proxy.lab import start_lab
    from meshsim.scenario import loads

    from .test_lab import SCENARIO

    async def main() -> list[tuple[str, frozenset[str] | None]]:
        lab = await start_lab(loads(SCENARIO), delay="none", mtls=True)
        try:
            front = lab.replicas[0]
            c = await Client.open(front.outbound["back"])
            assert (await c.get("/")).status == 200
            await c.close()
            return sorted(
                (lc.name, lc.upstream_identities)
                for proxy in lab.proxies
                for lc in proxy.config.listeners
                if lc.tls == "client"
            )
        finally:
            await lab.stop(1.0)

    back = frozenset({f"spiffe://{TD}/ns/default/sa/back"})
    front = frozenset({f"spiffe://{TD}/ns/default/sa/front"})
    # two front replicas call back; the edge has one listener per service
    assert arun(main) == [
        ("svc-back", back),
        ("svc-front", front),
        ("to-back", back),
        ("to-back", back),
    ]
