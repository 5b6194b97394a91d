"""``meshsim lab up``: a scenario's services as echo upstreams, each replica behind a sidecar.

What runs, all on loopback ephemeral ports, in one process and one event loop:

* per replica of every service version, an **echo upstream** (:mod:`meshsim.proxy.echo`)
  with the service's ``concurrency`` as its limit, answering every request after a delay
  whose mean is the version's ``cpu_ms`` mean (exponential by default, or fixed, or none)
  with ``response_bytes`` of body;
* per replica, a **sidecar** (:class:`~meshsim.proxy.server.Proxy`) with an ``inbound``
  listener in front of that echo and one ``outbound`` listener per service the replica
  calls (``to-<callee>``), whose upstreams are the callee replicas' inbound listeners and
  whose policy is the scenario's ``traffic`` rule for the callee;
* one **edge** proxy with a listener per service (``svc-<name>``), a stand-in for a
  ClusterIP: external clients (``meshsim load``) reach a service there, with its traffic
  rule applied, through the replicas' inbound sidecars.

The lab does **not** emulate call graphs: an echo server cannot call other services, so a
request to a service is answered by that service alone. The call edges exist as wiring: a
request sent to a replica's ``to-<callee>`` port goes caller sidecar -> callee sidecar ->
callee echo, as the app's call would in the mesh, so each hop of a call graph can be
driven and measured on its own. With ``mtls=True`` a throw-away CA issues every service a
SPIFFE certificate (``spiffe://cluster.local/ns/<ns>/sa/<service>``) and sidecar-to-sidecar
hops use mutual TLS 1.3.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshsim.errors import MeshsimError
from meshsim.proxy.config import ListenerConfig, ProxyConfig
from meshsim.proxy.echo import EchoState, bound_port, start_echo, stop_echo
from meshsim.proxy.policies import SUPPORTED_BALANCERS
from meshsim.proxy.server import Proxy
from meshsim.scenario import Scenario, Service, TrafficRule, Version

DELAY_MODES = ("exp", "fixed", "none")
HOST = "127.0.0.1"


@dataclass
class Replica:
    service: str
    version: str
    index: int
    echo_port: int = 0
    inbound_port: int = 0
    outbound: dict[str, int] = field(default_factory=dict)
    """Callee service -> this sidecar's outbound port for it."""
    knobs: str = ""
    calls: tuple[str, ...] = ()
    """Services this replica's version calls (its outbound listeners)."""

    @property
    def name(self) -> str:
        return f"{self.service}-{self.version}-{self.index}"


@dataclass
class Lab:
    scenario: Scenario
    replicas: list[Replica] = field(default_factory=list)
    edge: dict[str, int] = field(default_factory=dict)
    """Service -> the edge proxy's port for it."""
    proxies: list[Proxy] = field(default_factory=list)
    echoes: list[tuple[asyncio.Server, EchoState]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(what, name, address, detail) for a table."""
        out = [
            ("service", svc, f"{HOST}:{port}", "edge -> replicas' sidecars")
            for svc, port in self.edge.items()
        ]
        for r in self.replicas:
            out.append(("echo", r.name, f"{HOST}:{r.echo_port}", r.knobs or "no delay"))
            out.append(("inbound", r.name, f"{HOST}:{r.inbound_port}", f"-> echo {r.echo_port}"))
            for callee, port in r.outbound.items():
                out.append(("outbound", r.name, f"{HOST}:{port}", f"-> {callee} sidecars"))
        return out

    async def stop(self, drain_s: float = 5.0) -> None:
        """Graceful: proxies stop accepting and drain in-flight requests, then echoes close."""
        await asyncio.gather(*(p.stop(drain_s) for p in self.proxies))
        for server, state in self.echoes:
            await stop_echo(server, state)


def _knobs(mean_ms: float, size: int, delay: str) -> str:
    parts = [f"size={size}"]
    if delay == "exp" and mean_ms > 0:
        parts.insert(0, f"delay=exp:{mean_ms:g}ms")
    elif delay == "fixed" and mean_ms > 0:
        parts.insert(0, f"delay={mean_ms:g}ms")
    return "&".join(parts)


def traffic_dict(rule: TrafficRule | None) -> dict[str, Any]:
    """The proxy's ``traffic`` mapping for a scenario rule (None: no policy)."""
    if rule is None:
        return {}
    raw: dict[str, Any] = rule.model_dump(exclude_none=True, mode="json")
    raw.pop("service", None)
    return raw


def _callees(service: Service, version: Version) -> tuple[str, ...]:
    calls = version.calls if version.calls is not None else service.calls
    return tuple(sorted({c.service for c in calls}))


async def start_lab(
    scenario: Scenario,
    *,
    delay: str = "exp",
    mtls: bool = False,
    seed: int | None = None,
    access_log: str | None = None,
) -> Lab:
    """Start everything on the running loop (see the module docstring)."""
    if delay not in DELAY_MODES:
        raise MeshsimError(f"--delay: expected one of {DELAY_MODES}, not {delay!r}")
    lab = Lab(scenario)
    rules = {r.service: r for r in scenario.traffic}
    base_seed = scenario.seed if seed is None else seed
    tls_dirs: dict[str, Path] = {}
    identities: dict[str, str] = {}
    if mtls:
        tls_dirs = _issue_certs(scenario)
        # Secure naming: each outbound listener accepts only its destination's identity.
        from meshsim.proxy.ca import spiffe_id

        identities = {
            s.name: spiffe_id("cluster.local", s.namespace, s.name) for s in scenario.services
        }
    try:
        # 1. Echo upstreams and their inbound sidecars, per replica.
        by_service: dict[str, list[Replica]] = {}
        n = 0
        for svc in scenario.services:
            for version in svc.subsets():
                cpu = version.cpu_ms or svc.cpu_ms
                mean_ms = float(cpu.mean) if cpu.mean is not None else 0.0
                size = (
                    version.response_bytes
                    if version.response_bytes is not None
                    else svc.response_bytes
                )
                for i in range(version.replicas):
                    n += 1
                    rep = Replica(
                        svc.name,
                        version.name,
                        i,
                        knobs=_knobs(mean_ms, size, delay),
                        calls=_callees(svc, version),
                    )
                    server, state = await start_echo(
                        HOST,
                        0,
                        concurrency=svc.concurrency,
                        seed=base_seed * 1000 + n,
                        default_query=rep.knobs,
                    )
                    lab.echoes.append((server, state))
                    rep.echo_port = bound_port(server)
                    by_service.setdefault(svc.name, []).append(rep)
                    lab.replicas.append(rep)
        # 2. Sidecars: inbound -> echo; outbound per callee -> callee replicas' inbound.
        #    Inbound ports must exist before outbound listeners can name them, so each
        #    sidecar starts with its inbound listener and gets its outbound ones after.
        for rep in lab.replicas:
            tls_dir = tls_dirs.get(rep.service)
            inbound = ListenerConfig(
                "inbound",
                (HOST, 0),
                ((HOST, rep.echo_port),),
                tls="server" if tls_dir else "none",
            )
            proxy = Proxy(_config((inbound,), tls_dir, access_log, base_seed))
            await proxy.start()
            lab.proxies.append(proxy)
            rep.inbound_port = proxy.port("inbound")
        for rep in lab.replicas:
            callees = rep.calls
            if callees:
                tls_dir = tls_dirs.get(rep.service)
                listeners = tuple(
                    _outbound(
                        f"to-{c}",
                        by_service.get(c, []),
                        rules.get(c),
                        tls_dir,
                        lab,
                        identities.get(c),
                    )
                    for c in callees
                )
                proxy = Proxy(_config(listeners, tls_dir, access_log, base_seed))
                await proxy.start()
                lab.proxies.append(proxy)
                for c in callees:
                    rep.outbound[c] = proxy.port(f"to-{c}")
        # 3. The edge: one listener per service, for clients outside the mesh.
        edge_tls = tls_dirs.get("__edge__")
        listeners = tuple(
            _outbound(
                f"svc-{svc.name}",
                by_service.get(svc.name, []),
                rules.get(svc.name),
                edge_tls,
                lab,
                identities.get(svc.name),
            )
            for svc in scenario.services
            if by_service.get(svc.name)
        )
        if listeners:
            edge = Proxy(_config(listeners, edge_tls, access_log, base_seed))
            await edge.start()
            lab.proxies.append(edge)
            for lc in listeners:
                lab.edge[lc.name.removeprefix("svc-")] = edge.port(lc.name)
    except BaseException:
        await lab.stop(0)
        raise
    return lab


def _config(
    listeners: tuple[ListenerConfig, ...], tls_dir: Path | None, access_log: str | None, seed: int
) -> ProxyConfig:
    return ProxyConfig(
        listeners=listeners, tls_dir=tls_dir, access_log=access_log, drain_s=5.0, seed=seed
    )


def _outbound(
    name: str,
    callees: list[Replica],
    rule: TrafficRule | None,
    tls_dir: Path | None,
    lab: Lab,
    identity: str | None = None,
) -> ListenerConfig:
    if not callees:
        raise MeshsimError(f"{name}: the service has no replicas to send to")
    traffic = traffic_dict(rule)
    balancer = traffic.get("load_balancer")
    if balancer is not None and balancer not in SUPPORTED_BALANCERS:
        note = f"{name}: load_balancer {balancer} is not in the proxy; using least_request"
        if note not in lab.notes:
            lab.notes.append(note)
        traffic["load_balancer"] = "least_request"
    if "mirror" in traffic:
        traffic.pop("mirror")
        note = f"{name}: mirror is not emulated by the lab proxy"
        if note not in lab.notes:
            lab.notes.append(note)
    return ListenerConfig(
        name,
        (HOST, 0),
        tuple((HOST, r.inbound_port) for r in callees),
        tls="client" if tls_dir else "none",
        traffic=traffic,
        subsets=tuple(r.version for r in callees),
        upstream_identities=frozenset({identity}) if tls_dir and identity else None,
    )


def _issue_certs(scenario: Scenario) -> dict[str, Path]:
    from meshsim.proxy.ca import CertificateAuthority

    root = Path(tempfile.mkdtemp(prefix="meshsim-lab-"))
    authority = CertificateAuthority.create("cluster.local", 1.0)
    out: dict[str, Path] = {}
    for svc in scenario.services:
        out[svc.name] = authority.issue(svc.namespace, svc.name, 24 * 3600.0).write(root / svc.name)
    out["__edge__"] = authority.issue("default", "lab-edge", 24 * 3600.0).write(root / "edge")
    return out
