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
        traffic: {retries: {attempts: 2}, circuit_breaker: {max_requests: 100}}

``traffic`` has the shape of one entry of a scenario's ``traffic`` list (docs/DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from meshsim.errors import MeshsimError
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
    principals = raw.get("allowed_principals")
    traffic = raw.get("traffic") or {}
    if not isinstance(traffic, dict):
        raise MeshsimError(f"{_where(path, key + '.traffic')}: expected a mapping")
    subsets = raw.get("subsets")
    if subsets is not None and (not isinstance(subsets, list) or len(subsets) != len(ups)):
        raise MeshsimError(
            f"{_where(path, key + '.subsets')}: expected a list with the version of each upstream"
        )
    return ListenerConfig(
        name=str(raw.get("name", f"listener{index}")),
        listen=listen,
        upstreams=tuple(
            parse_hostport(str(u), what=_what(path, key, "upstreams")) for u in ups
        ),
        tls=tls,
        allowed_principals=None if principals is None else frozenset(map(str, principals)),
        traffic=traffic,
        subsets=None if subsets is None else tuple(map(str, subsets)),
    )


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
        trust_domain=raw.get("trust_domain"),
        drain_s=float(raw.get("drain_s", 10.0)),
        access_log=raw.get("access_log", "-"),
        seed=raw.get("seed"),
        cpu_sample_every=_sample_every(raw.get("cpu_sample_every", 16), path),
    )


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
