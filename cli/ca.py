"""``meshsim ca``: a small certificate authority for workload mTLS."""

from __future__ import annotations

from pathlib import Path

import click

from meshsim.errors import MeshsimError


class UserError(click.ClickException):
    exit_code = 2


# The option each refused field came from (meshsim.proxy.ca.IdentityError.field).
_OPTION = {
    "trust_domain": "--trust-domain",
    "namespace": "--ns",
    "service_account": "--sa",
    "lifetime_s": "--lifetime-s",
    "lifetime_days": "--lifetime-days",
}


def _refusal(exc: MeshsimError | OSError) -> UserError:
    field = getattr(exc, "field", None)
    option = _OPTION.get(field) if isinstance(field, str) else None
    return UserError(f"{option}: {exc}" if option else str(exc))


@click.group("ca")
def ca() -> None:
    """Create a CA and issue SPIFFE workload certificates (ECDSA P-256)."""


@ca.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    required=True,
    help="Where to write ca.pem and ca-key.pem.",
)
@click.option("--trust-domain", default="cluster.local", show_default=True)
@click.option(
    "--lifetime-days",
    type=float,
    default=365.0,
    show_default=True,
    help="From 1 hour (0.0417) to 36500 days.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing CA.")
def init(directory: str, trust_domain: str, lifetime_days: float, force: bool) -> None:
    """Create a root CA for TRUST-DOMAIN."""
    from meshsim.proxy.ca import CertificateAuthority

    if (Path(directory) / "ca-key.pem").exists() and not force:
        raise UserError(f"{directory} already holds a CA (use --force to replace it)")
    try:
        authority = CertificateAuthority.create(trust_domain, lifetime_days)
        authority.save(directory)
    except (MeshsimError, OSError) as exc:
        raise _refusal(exc) from None
    click.echo(f"CA for spiffe://{trust_domain} written to {directory}")


@ca.command("issue")
@click.option("--ca-dir", type=click.Path(file_okay=False), required=True)
@click.option("--ns", "namespace", default="default", show_default=True)
@click.option("--sa", "service_account", required=True, help="Service account name.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="TLS directory to write cert.pem, key.pem and ca.pem into.",
)
@click.option(
    "--lifetime-s",
    type=float,
    default=3600.0,
    show_default=True,
    help="From 1 s to 7776000 s (90 days, istiod's maximum workload certificate TTL).",
)
def issue(ca_dir: str, namespace: str, service_account: str, out: str, lifetime_s: float) -> None:
    """Issue a workload certificate for spiffe://<trust-domain>/ns/NS/sa/SA."""
    from meshsim.proxy.ca import (
        MAX_LIFETIME_S,
        MIN_LIFETIME_S,
        CertificateAuthority,
        check_lifetime,
        spiffe_id,
    )

    try:
        # The names and the lifetime first: a bad option is reported as such even when
        # the CA directory is wrong too.
        spiffe_id("cluster.local", namespace, service_account)
        check_lifetime("lifetime_s", lifetime_s, MIN_LIFETIME_S, MAX_LIFETIME_S, "seconds")
        cert = CertificateAuthority.load(ca_dir).issue(namespace, service_account, lifetime_s)
        cert.write(out)
    except (MeshsimError, OSError) as exc:
        raise _refusal(exc) from None
    click.echo(f"{cert.spiffe_id} valid until {cert.not_after:%Y-%m-%dT%H:%M:%SZ}, in {out}")
