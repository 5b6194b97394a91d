"""A small certificate authority for workload mTLS, on the ``cryptography`` package.

Workload certificates carry exactly one SPIFFE URI SAN
(``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``) and live for an hour by default, as Istio's
and Linkerd's do (24 h there; shorter here so rotation is exercised). The CA's own
certificate names the trust domain in a URI SAN too (``spiffe://<trust-domain>``).

Keys are ECDSA P-256 by default, as Linkerd's and ztunnel's are; ``key_type="rsa-2048"``
gives RSA 2048 keys, Istio's default for sidecar workloads and for istiod's self-signed root
(docs/mesh-semantics.md, section 8.1). A handshake costs what its keys make it cost (an RSA
signature is far dearer to make than an ECDSA one, and cheaper to check), so the calibration
lab issues the key type of the mesh it stands for.

Files: a CA directory holds ``ca.pem`` and ``ca-key.pem``; a workload TLS directory holds
``cert.pem``, ``key.pem`` and ``ca.pem`` (what :mod:`meshsim.proxy.tls` loads).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshsim.errors import MeshsimError
from meshsim.files import write_atomic
from meshsim.proxy import spiffe

# Kubernetes names: a namespace is an RFC 1123 label, a service account an RFC 1123
# subdomain (dot-separated labels). Both are valid SPIFFE path segments, and neither can
# be '.' or '..', so an id built from them always parses (meshsim.proxy.spiffe).
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Issued certificates start a little in the past so that small clock skew between
# processes does not make a fresh certificate "not yet valid".
_BACKDATE = dt.timedelta(minutes=1)
# Workload certificates: at least 1 s, at most istiod's MAX_WORKLOAD_CERT_TTL of 90 days
# (docs/mesh-semantics.md, section 8.1). The CA: 1 hour to 100 years.
MIN_LIFETIME_S = 1.0
MAX_LIFETIME_S = 90 * 86400.0
MIN_CA_LIFETIME_DAYS = 1 / 24
MAX_CA_LIFETIME_DAYS = 36500.0
KEY_TYPES = ("ecdsa-p256", "rsa-2048")
"""Workload and CA key types: Linkerd's and ztunnel's, and Istio's default."""
DEFAULT_KEY_TYPE = "ecdsa-p256"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class IdentityError(MeshsimError):
    """A refused name or lifetime; ``field`` is what was wrong (the CLI names its option)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_lifetime(field: str, value: float, low: float, high: float, unit: str) -> float:
    """``value`` if it is a finite number in [low, high], else an :class:`IdentityError`."""
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise IdentityError(
            field,
            f"certificate lifetime must be a number of {unit} from {low:.4g} to {high:.10g}, "
            f"not {value!r}",
        )
    return float(value)


def check_key_type(key_type: str) -> str:
    """``key_type`` if it is one of :data:`KEY_TYPES`, else an :class:`IdentityError`."""
    if key_type not in KEY_TYPES:
        raise IdentityError(
            "key_type",
            f"unknown key type {key_type!r}: expected one of {', '.join(KEY_TYPES)} "
            "(ecdsa-p256 as Linkerd and ztunnel, rsa-2048 as Istio's default)",
        )
    return key_type


def generate_key(key_type: str) -> PrivateKey:
    """A fresh private key of ``key_type`` (checked)."""
    if check_key_type(key_type) == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_type_of(key: object) -> str | None:
    """The :data:`KEY_TYPES` name of a private or public key, or None for any other key."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ecdsa-p256" if isinstance(key.curve, ec.SECP256R1) else None
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa-2048" if key.key_size == 2048 else None
    return None


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio's workload id ``spiffe://<td>/ns/<namespace>/sa/<service account>``."""
    try:
        spiffe.check_trust_domain(trust_domain)
    except spiffe.SpiffeIdError as exc:
        raise IdentityError(
            "trust_domain",
            f"bad trust domain {trust_domain!r}: expected e.g. cluster.local ({exc})",
        ) from None
    if not _LABEL.match(namespace):
        raise IdentityError(
            "namespace",
            f"bad namespace {namespace!r}: a Kubernetes namespace name (RFC 1123 label: "
            "1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit)",
        )
    if len(service_account) > 253 or not _SUBDOMAIN.match(service_account):
        raise IdentityError(
            "service_account",
            f"bad service account {service_account!r}: a Kubernetes name (RFC 1123 subdomain: "
            "up to 253 of a-z, 0-9, '-' and '.', no empty, '.' or '..' part)",
        )
    ident = f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
    spiffe.parse_workload(ident)  # cannot fail after the checks above; kept as the contract
    return ident


def trust_domain_of(text: str) -> str | None:
    """The trust domain of a SPIFFE id, or None when ``text`` is not a valid one."""
    try:
        return spiffe.parse(text).trust_domain
    except spiffe.SpiffeIdError:
        return None


@dataclass(frozen=True)
class WorkloadCert:
    spiffe_id: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    not_after: dt.datetime
    key_type: str = DEFAULT_KEY_TYPE

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write cert.pem, key.pem and ca.pem; the key file is private (0600).

        Each file is replaced atomically, so a proxy reloading at the same moment reads
        either the old or the new file, never half of one.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "key.pem", self.key_pem, mode=0o600)
        write_atomic(out / "cert.pem", self.cert_pem)
        write_atomic(out / "ca.pem", self.ca_pem)
        return out


class CertificateAuthority:
    """A self-signed root that signs workload certificates for one trust domain."""

    def __init__(self, key: PrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.key_type = key_type_of(key) or DEFAULT_KEY_TYPE
        self.cert = cert
        uris = _uris(cert)
        domain = trust_domain_of(uris[0]) if uris else None
        if domain is None:
            raise MeshsimError("the CA certificate names no trust domain (spiffe:// URI SAN)")
        self.trust_domain = domain

    @classmethod
    def create(
        cls,
        trust_domain: str,
        lifetime_days: float = 365.0,
        *,
        key_type: str = DEFAULT_KEY_TYPE,
    ) -> CertificateAuthority:
        """A new root; ``key_type`` is its own key's and the default of what it issues."""
        spiffe_id(trust_domain, "x", "x")  # validates the trust domain
        check_lifetime(
            "lifetime_days", lifetime_days, MIN_CA_LIFETIME_DAYS, MAX_CA_LIFETIME_DAYS, "days"
        )
        key = generate_key(key_type)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshsim"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"meshsim root CA {trust_domain}"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=lifetime_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> CertificateAuthority:
        base = Path(directory)
        try:
            cert = x509.load_pem_x509_certificate((base / "ca.pem").read_bytes())
            key = serialization.load_pem_private_key((base / "ca-key.pem").read_bytes(), None)
        except FileNotFoundError as exc:
            raise MeshsimError(
                f"no CA in {base}: missing {Path(exc.filename).name} (run `meshsim ca init` first)"
            ) from None
        except ValueError as exc:
            raise MeshsimError(f"bad CA files in {base}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise MeshsimError(f"bad CA key in {base}: expected an ECDSA or RSA key")
        return cls(key, cert)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(out / "ca-key.pem", key_pem, mode=0o600)
        write_atomic(out / "ca.pem", self.ca_pem)
        return out

    @property
    def ca_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        namespace: str,
        service_account: str,
        lifetime_s: float = 3600.0,
        *,
        trust_domain: str | None = None,
        key_type: str | None = None,
    ) -> WorkloadCert:
        """A fresh key and certificate for ``ns/sa``; ``trust_domain`` overrides (for tests
        of refusal: a certificate signed by this CA but naming a foreign domain);
        ``key_type`` is the CA's own unless given."""
        check_lifetime("lifetime_s", lifetime_s, MIN_LIFETIME_S, MAX_LIFETIME_S, "seconds")
        ident = spiffe_id(trust_domain or self.trust_domain, namespace, service_account)
        key_type = self.key_type if key_type is None else key_type
        key = generate_key(key_type)
        now = dt.datetime.now(dt.UTC)
        not_after = now + dt.timedelta(seconds=lifetime_s)
        cert = (
            x509.CertificateBuilder()
            # SPIFFE X.509-SVIDs carry the identity in the URI SAN; the subject is informative.
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshsim")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ident)]),
                critical=True,  # SPIFFE: critical when the subject is empty of identity
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return WorkloadCert(
            spiffe_id=ident,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            ca_pem=self.ca_pem,
            not_after=not_after,
            key_type=key_type,
        )


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
