"""TLS 1.3 contexts for proxy-to-proxy mTLS, peer identity checks, and certificate rotation.

OpenSSL verifies the chain to the mesh CA, the validity period and key strength during the
handshake; :func:`verify_peer` then checks, before any request byte is read or sent, that
the peer certificate is an X.509-SVID of the trust domain and, on outbound connections,
that it names the destination (secure naming; docs/mesh-semantics.md, section 8.4).

Rotation reloads the certificate chain *into the existing* ``SSLContext``: OpenSSL copies
the context's certificate into each new connection at handshake time, so new handshakes
use the new certificate while established connections carry on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from meshsim.errors import MeshsimError
from meshsim.proxy import spiffe
from meshsim.proxy.ca import CertificateAuthority, trust_domain_of

FILES = ("cert.pem", "key.pem", "ca.pem")


def _check_dir(tls_dir: Path) -> None:
    missing = [name for name in FILES if not (tls_dir / name).is_file()]
    if missing:
        raise MeshsimError(
            f"TLS directory {tls_dir} lacks {', '.join(missing)} "
            "(create them with `meshsim ca issue --out DIR`)"
        )


def _context(purpose: ssl.Purpose, tls_dir: Path) -> ssl.SSLContext:
    _check_dir(tls_dir)
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if ctx.security_level < 2:
        # Refuse weak peer keys and signatures (RSA under 2048 bits, SHA-1) whatever the
        # system's openssl.cnf says.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=2")
    ctx.verify_mode = ssl.CERT_REQUIRED  # both ways: the server requires client certificates
    # Peers are named by SPIFFE id, not DNS name; the id is checked after the handshake.
    ctx.check_hostname = False
    try:
        ctx.load_verify_locations(cafile=str(tls_dir / "ca.pem"))
        ctx.load_cert_chain(str(tls_dir / "cert.pem"), str(tls_dir / "key.pem"))
    except (ssl.SSLError, OSError) as exc:
        raise MeshsimError(f"cannot load TLS files from {tls_dir}: {exc}") from None
    return ctx


def server_context(tls_dir: str | Path) -> ssl.SSLContext:
    return _context(ssl.Purpose.CLIENT_AUTH, Path(tls_dir))


def client_context(tls_dir: str | Path) -> ssl.SSLContext:
    return _context(ssl.Purpose.SERVER_AUTH, Path(tls_dir))


class PeerIdentityError(ConnectionError):
    """A verified peer certificate that is not an acceptable SVID for this connection.

    ``reason`` is the metrics label (``meshsim_proxy_refused{reason=...}``): ``no_svid``,
    ``svid_uri_count``, ``spiffe_id.<rule>`` (the rule of meshsim.proxy.spiffe the id
    breaks, e.g. ``spiffe_id.dot_segment``), ``svid_leaf``, ``trust_domain`` or
    ``secure_naming``; the message says what the certificate held.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# keyUsage bits a CA certificate uses: a leaf SVID has neither (docs/mesh-semantics.md 8.4).
_SIGNING_USAGES = ("key_cert_sign", "crl_sign")


# Parsing costs about 50 us; a peer presents the same certificate on every new connection
# until it rotates, so accepted certificates are remembered (the verdict depends on the
# DER bytes alone; refusals raise and are not cached).
@functools.lru_cache(maxsize=1024)
def svid_id(der: bytes) -> spiffe.SpiffeId:
    """The workload SPIFFE id of an X.509-SVID leaf certificate (DER), checked.

    Checks what the TLS handshake does not: exactly one URI SAN (other SAN types may be
    present) holding a workload SPIFFE id (meshsim.proxy.spiffe), and a leaf that cannot
    sign (cA false, digitalSignature set, no keyCertSign or cRLSign). The chain, the
    validity period and key strength are the handshake's job (OpenSSL, security level 2).
    Raises :class:`PeerIdentityError`.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise PeerIdentityError("no_svid", "the certificate has no subjectAltName") from None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        try:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = basic.ca
        except x509.ExtensionNotFound:
            is_ca = False
        try:
            usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(
                x509.KeyUsage
            ).value
        except x509.ExtensionNotFound:
            usage = None
    except ValueError as exc:  # a malformed extension (e.g. a non-ASCII URI)
        raise PeerIdentityError("no_svid", f"unreadable certificate extensions: {exc}") from None
    if not uris:
        raise PeerIdentityError("no_svid", "the certificate has no URI SAN (no SPIFFE id)")
    if len(uris) != 1:
        raise PeerIdentityError(
            "svid_uri_count",
            f"an SVID has exactly one URI SAN; this certificate has {len(uris)}: {uris!r}",
        )
    try:
        ident = spiffe.parse_workload(uris[0])
    except spiffe.SpiffeIdError as exc:
        raise PeerIdentityError(f"spiffe_id.{exc.rule}", str(exc)) from None
    if is_ca:
        raise PeerIdentityError("svid_leaf", f"{ident}: a leaf SVID must not be a CA")
    if usage is None or not usage.digital_signature:
        raise PeerIdentityError("svid_leaf", f"{ident}: a leaf SVID needs digitalSignature")
    signing = [name for name in _SIGNING_USAGES if getattr(usage, name)]
    if signing:
        raise PeerIdentityError("svid_leaf", f"{ident}: a leaf SVID must not have {signing}")
    return ident


def verify_peer(
    ssl_object: Any, trust_domain: str | None, expected: frozenset[str] | None = None
) -> str:
    """The peer's SPIFFE id, once its certificate passed every identity check.

    ``expected`` is secure naming on outbound connections: the ids the destination's
    workloads may hold (Istio: the service accounts istiod pushes with the cluster;
    Linkerd: the endpoint's identity from the destination controller); None: any workload
    of ``trust_domain``. Raises :class:`PeerIdentityError`.
    """
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerIdentityError("no_svid", "the peer presented no certificate")
    ident = svid_id(der)
    if trust_domain is None or ident.trust_domain != trust_domain:
        raise PeerIdentityError(
            "trust_domain", f"{ident} is outside the trust domain {trust_domain!r}"
        )
    text = str(ident)
    if expected is not None and text not in expected:
        raise PeerIdentityError(
            "secure_naming",
            f"the server presented {text}, not the destination's identity "
            f"({', '.join(sorted(expected))})",
        )
    return text


def peer_spiffe_id(ssl_object: Any) -> str | None:
    """The peer certificate's SPIFFE id when it is a well-formed SVID, else None."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    try:
        return str(svid_id(der))
    except PeerIdentityError:
        return None


def peer_allowed(spiffe_text: str | None, trust_domain: str) -> bool:
    return spiffe_text is not None and trust_domain_of(spiffe_text) == trust_domain


def cert_not_after(tls_dir: str | Path) -> dt.datetime:
    cert = x509.load_pem_x509_certificate((Path(tls_dir) / "cert.pem").read_bytes())
    return cert.not_valid_after_utc


def trust_domain_from_dir(tls_dir: str | Path) -> str:
    """The trust domain named by the CA certificate in ``tls_dir``."""
    ca_cert = x509.load_pem_x509_certificate((Path(tls_dir) / "ca.pem").read_bytes())
    try:
        san = ca_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    domain = trust_domain_of(str(uris[0])) if uris else None
    if domain is None:
        raise MeshsimError(f"{tls_dir}/ca.pem names no trust domain (spiffe:// URI SAN)")
    return domain


class Rotator:
    """Keeps the contexts' certificate fresh.

    With a CA at hand (the lab), it issues a new certificate when two thirds of the
    current one's life has passed; without one it reloads the files when they change
    (another process, e.g. ``meshsim ca issue`` from cron, renews them).
    """

    def __init__(
        self,
        tls_dir: str | Path,
        contexts: list[ssl.SSLContext],
        *,
        ca: CertificateAuthority | None = None,
        identity: tuple[str, str] | None = None,
        lifetime_s: float = 3600.0,
    ) -> None:
        self.tls_dir = Path(tls_dir)
        self.contexts = contexts
        self.ca = ca
        self.identity = identity
        self.lifetime_s = lifetime_s
        self.rotations = 0
        self._mtime = self._stamp()
        self._task: asyncio.Task[None] | None = None

    def _stamp(self) -> float:
        return max((self.tls_dir / name).stat().st_mtime_ns for name in FILES) / 1e9

    def reload(self) -> None:
        """Load the current files into every context (new handshakes only)."""
        for ctx in self.contexts:
            ctx.load_cert_chain(str(self.tls_dir / "cert.pem"), str(self.tls_dir / "key.pem"))
        self._mtime = self._stamp()
        self.rotations += 1

    def rotate_now(self) -> None:
        if self.ca is None or self.identity is None:
            raise MeshsimError("rotation needs a CA and an identity (ns, sa)")
        self.ca.issue(*self.identity, self.lifetime_s).write(self.tls_dir)
        self.reload()

    def due_in_s(self) -> float:
        left = (cert_not_after(self.tls_dir) - dt.datetime.now(dt.UTC)).total_seconds()
        return max(0.0, left - self.lifetime_s / 3.0)

    async def _loop(self, poll_s: float) -> None:
        while True:
            await asyncio.sleep(poll_s)
            try:
                if self.ca is not None and self.identity is not None and self.due_in_s() <= 0:
                    self.rotate_now()
                elif self._stamp() != self._mtime:
                    self.reload()
            except (OSError, ssl.SSLError, ValueError):
                # A half-written renewal from another process: try again next poll.
                continue

    def start(self, poll_s: float = 1.0) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(poll_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
