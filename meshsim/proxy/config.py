"""Proxy configuration: listeners, limits, TLS, and the scenario's ``traffic`` entries.

A file looks like::

    trust_domain: cluster.local        # optional; default: read from tls_dir/ca.pem
    tls_dir: /path/to/workload/tls     # cert.pem, key.pem, ca.pem
    limits: {max_header_bytes: 16384, max_headers: 100, max_body_bytes: 8388608,
             idle_timeout_s: 60, header_timeout_s: 10}
    drain_s: 10
    cpu_sample_every: 16               # time the CPU of 1 request in 16 (1: all, 0: none)
    listeners:
      - name: inbound                  # mTLS from other sidecars -> the local app
        listen: 127.0.0.1:15006
        upstreams: [127.0.0.1:8080]
        tls: server                    # none | server (require client certs) | client
        allowed_principals: [spiffe://cluster.local/ns/default/sa/frontend]
      - name: outbound                 # the local app -> another service's sidecar
        listen: 127.0.0.1:15001
        upstreams: [127.0.0.1:15106, 127.0.0.1:15107]
        subsets: [v1, v2]              # the version of each upstream, for traffic.split
        tls: client
        upstream_identities: [spiffe://cluster.local/ns/default/sa/reviews]
        traffic: {retries: {attempts: 2}, circuit_breaker: {max_requests: 100}}
        mesh: istio                    # whose defaults traffic gets (istio | linkerd)

``upstream_identities`` is secure naming: the SPIFFE ids the upstreams' certificates may
carry (Istio pushes the destination service's service accounts with its cluster; Linkerd's
destination controller names each endpoint's identity). A server holding any other id of
the trust domain is refused before a request byte is sent (503, flag ``UF``, and
``meshsim_proxy_refused{reason="secure_naming"}``). Without it, any workload of the trust
domain is accepted. ``allowed_principals`` and ``upstream_identities`` must be workload
SPIFFE ids (meshsim.proxy.spiffe).

``traffic`` has the shape of one entry of a scenario's ``traffic`` list (docs/DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from meshsim.errors import MeshsimError
from meshsim.proxy import spiffe
from meshsim.proxy.httpcore import Limits, parse_hostport

TLS_MODES = ("none", "server", "client")


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    listen: tuple[str, int]
    upstreams: tuple[tuple[str, int], ...]
    tls: str = "none"
    allowed_principals: frozenset[str] | None = None
    traffic: dict[str, Any] = field(default_factory=dict)
    subsets: tuple[str, ...] | None = None
    """The version (subset) of each upstream, in order, for ``traffic.split``."""
    upstream_identities: frozenset[str] | None = None
    """Secure naming (``tls: client``): the SPIFFE ids an upstream may present."""
    mesh: str | None = None
    """Whose defaults ``traffic`` gets (``istio``, ``linkerd``); None: Istio's when there is
    a ``traffic`` entry, else none (a plain forwarder). See meshsim.proxy.policies."""


@dataclass(frozen=True)
class ProxyConfig:
    listeners: tuple[ListenerConfig, ...]
    admin: tuple[str, int] | None = None
    limits: Limits = field(default_factory=Limits)
    tls_dir: Path | None = None
    trust_domain: str | None = None
    drain_s: float = 10.0
    access_log: str | None = "-"
    """``-`` for standard output, a path, or None for no access log."""
    seed: int | None = None
    cpu_sample_every: int = 16
    """Measure the thread CPU time of one request in N (1: every request, 0: none). Timing a
    request costs a dozen clock_gettime(CLOCK_THREAD_CPUTIME_ID) system calls; a counter-based
    sample gives the same per-request distribution for calibration at a sixteenth of that."""


def _where(path: str | None, key: str) -> str:
    return f"{path or 'config'}: {key}"


def _limits(raw: Any, path: str | None) -> Limits:
    if raw is None:
        return Limits()
    if not isinstance(raw, dict):
        raise MeshsimError(f"{_where(path, 'limits')}: expected a mapping")
    known = {f.name for f in fields(Limits)}
    unknown = set(raw) - known
    if unknown:
        raise MeshsimError(
            f"{_where(path, 'limits')}: unknown keys {sorted(unknown)}; expected {sorted(known)}"
        )
    for key, value in raw.items():
        if not isinstance(value, int | float) or value <= 0:
            raise MeshsimError(f"{_where(path, 'limits.' + key)}: expected a positive number")
    return Limits(**raw)


def _what(path: str | None, key: str, field_name: str) -> str:
    if path is not None and path.startswith("--"):  # given on the command line
        return "--upstream" if field_name == "upstreams" else path
    return f"{path}: {key}.{field_name}" if path else f"{key}.{field_name}"


def listener_from_dict(raw: Any, index: int, path: str | None = None) -> ListenerConfig:
    key = f"listeners[{index}]"
    if not isinstance(raw, dict):
        raise MeshsimError(f"{_where(path, key)}: expected a mapping")
    try:
        listen = parse_hostport(str(raw["listen"]), what=_what(path, key, "listen"))
        ups = raw["upstreams"]
    except KeyError as exc:
        raise MeshsimError(f"{_where(path, key)}: missing {exc.args[0]!r}") from None
    if isinstance(ups, str):
        ups = [ups]
    if not isinstance(ups, list) or not ups:
        raise MeshsimError(f"{_where(path, key + '.upstreams')}: expected a list of HOST:PORT")
    tls = str(raw.get("tls", "none"))
    if tls not in TLS_MODES:
        where = _where(path, key + ".tls")
        raise MeshsimError(f"{where}: expected one of {TLS_MODES}, not {tls!r}")
    principals = _identities(
        raw.get("allowed_principals"), _where(path, key + ".allowed_principals")
    )
    identities = _identities(
        raw.get("upstream_identities"), _where(path, key + ".upstream_identities")
    )
    if identities is not None and tls != "client":
        raise MeshsimError(
            f"{_where(path, key + '.upstream_identities')}: only for tls: client (the side "
            "that checks its upstream's certificate)"
        )
    traffic = raw.get("traffic") or {}
    if not isinstance(traffic, dict):
        raise MeshsimError(f"{_where(path, key + '.traffic')}: expected a mapping")
    subsets = raw.get("subsets")
    if subsets is not None and (not isinstance(subsets, list) or len(subsets) != len(ups)):
        raise MeshsimError(
            f"{_where(path, key + '.subsets')}: expected a list with the version of each upstream"
        )
    mesh = raw.get("mesh")
    if mesh is not None and mesh not in ("istio", "linkerd", "istio-ambient"):
        raise MeshsimError(
            f"{_where(path, key + '.mesh')}: expected istio, linkerd or istio-ambient, not {mesh!r}"
        )
    return ListenerConfig(
        name=str(raw.get("name", f"listener{index}")),
        listen=listen,
        upstreams=tuple(parse_hostport(str(u), what=_what(path, key, "upstreams")) for u in ups),
        tls=tls,
        allowed_principals=principals,
        upstream_identities=identities,
        traffic=traffic,
        subsets=None if subsets is None else tuple(map(str, subsets)),
        mesh=mesh,
    )


def _identities(raw: Any, where: str) -> frozenset[str] | None:
    """A list of workload SPIFFE ids (None when absent)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise MeshsimError(f"{where}: expected a non-empty list of spiffe:// ids")
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise MeshsimError(f"{where}[{i}]: expected a spiffe:// id, not {item!r}")
        try:
            spiffe.parse_workload(item)
        except spiffe.SpiffeIdError as exc:
            raise MeshsimError(f"{where}[{i}]: {exc}") from None
    return frozenset(raw)


def config_from_dict(raw: Any, path: str | None = None) -> ProxyConfig:
    if not isinstance(raw, dict):
        raise MeshsimError(f"{path or 'config'}: expected a mapping at the top level")
    listeners = raw.get("listeners") or []
    if not isinstance(listeners, list):
        raise MeshsimError(f"{_where(path, 'listeners')}: expected a list")
    admin = raw.get("admin")
    return ProxyConfig(
        listeners=tuple(listener_from_dict(item, i, path) for i, item in enumerate(listeners)),
        admin=None if admin is None else parse_hostport(str(admin), what="admin"),
        limits=_limits(raw.get("limits"), path),
        tls_dir=Path(raw["tls_dir"]) if raw.get("tls_dir") else None,
        trust_domain=_trust_domain(raw.get("trust_domain"), path),
        drain_s=float(raw.get("drain_s", 10.0)),
        access_log=raw.get("access_log", "-"),
        seed=raw.get("seed"),
        cpu_sample_every=_sample_every(raw.get("cpu_sample_every", 16), path),
    )


def _trust_domain(raw: Any, path: str | None) -> str | None:
    if raw is None:
        return None
    try:
        if not isinstance(raw, str):
            raise spiffe.SpiffeIdError("trust_domain_char", repr(raw), "not a string")
        spiffe.check_trust_domain(raw)
    except spiffe.SpiffeIdError as exc:
        raise MeshsimError(f"{_where(path, 'trust_domain')}: {exc}") from None
    return raw


def _sample_every(raw: Any, path: str | None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise MeshsimError(
            f"{_where(path, 'cpu_sample_every')}: expected a whole number >= 0 (1 = every "
            f"request, 0 = off), not {raw!r}"
        )
    return raw


def load_config(path: str | Path) -> ProxyConfig:
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise MeshsimError(f"cannot read proxy config {path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise MeshsimError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return config_from_dict(raw or {}, str(path))
