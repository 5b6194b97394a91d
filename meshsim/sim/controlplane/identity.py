"""Workload identity: the certificate authority and each pod's certificate.

istiod's CA and Linkerd's identity controller sign a workload certificate when a pod's
proxy starts (a CSR), and again when the proxy renews it: Istio at about 50% of a 24 h
lifetime, Linkerd at 70%, its wait clamped to [10 s, 24 h] (``cert_min_refresh_s``,
``cert_max_refresh_s``; docs/mesh-semantics.md §8). Signing costs CPU (``csr_sign_us``) and waits
in a FIFO on the CA's cores. While the control plane is down a CSR gets no answer and the
proxy tries again: istio-agent every ``csr_retry_s``, linkerd2-proxy after its renewal wait
(70 % of the validity left, at least 10 s; certify.rs). A pod without a valid certificate
cannot take part in mTLS: a new pod does not become ready, and a pod whose certificate expired
refuses (and cannot make) mTLS connections.

Pods that exist when the run starts hold fresh certificates (issued at time 0, no CA work).

Who holds a certificate is the ``holder`` of a pod: the pod itself (a sidecar's
pilot-agent or linkerd2-proxy asks for its own pod), or under Istio ambient its node's
ztunnel, which holds one certificate per workload identity on its node and asks istiod for
it on the pods' behalf (docs/mesh-semantics.md §11): ``holder = (node, service)``, the service
standing for its service account. A new pod whose identity its ztunnel already holds needs no
CSR; a renewal is made while any live pod of that identity is on the node. Concurrent CSRs
for one holder are not merged (two pods of one identity starting together on one node ask
twice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from meshsim.sim.controlplane.fifo import FifoServers

if TYPE_CHECKING:
    import simpy

    from meshsim.sim.app import Pod


class CertificateAuthority:
    def __init__(
        self,
        env: simpy.Environment,
        *,
        cores: int,
        sign_s: float,
        lifetime_s: float,
        renew_fraction: float,
        retry_s: float | None,
        horizon_s: float,
        is_down: Callable[[], bool],
        slow: Callable[[], float],
        account: Callable[[float, float], None],
        holder: Callable[[Pod], Hashable] | None = None,
        min_refresh_s: float = 0.0,
        max_refresh_s: float = math.inf,
    ) -> None:
        self.env = env
        self.queue = FifoServers(cores)
        self.sign_s = sign_s
        self.lifetime_s = lifetime_s
        self.renew_fraction = renew_fraction
        self.retry_s = retry_s
        """Wait before a CSR that got no answer is sent again; None: the renewal's own wait,
        as linkerd2-proxy's identity loop sleeps ``refresh_in`` after a failure too
        (:meth:`retry_delay`)."""
        self.min_refresh_s = min_refresh_s
        self.max_refresh_s = max_refresh_s
        self.refresh_s = min(max(renew_fraction * lifetime_s, min_refresh_s), max_refresh_s)
        """From a certificate's issue to its renewal: ``renew_fraction`` of its lifetime,
        within the proxy's bounds (linkerd2-proxy's ``refresh_in``: never under 10 s nor over
        24 h, so a 48 h certificate is renewed at 24 h, not 33.6 h)."""
        self.horizon_s = horizon_s
        """No renewal is scheduled beyond this time (the end of the run)."""
        self._is_down = is_down
        self._slow = slow
        self._account = account
        self._holder = holder
        self.expiry: dict[Hashable, float] = {}
        """By holder: when its certificate expires."""
        self.issued = 0
        self.failed_requests = 0

    def holder(self, pod: Pod) -> Hashable:
        """Who holds ``pod``'s certificate (the pod itself unless a holder was given)."""
        return pod if self._holder is None else self._holder(pod)

    def has_valid(self, pod: Pod) -> bool:
        exp = self.expiry.get(self.holder(pod))
        return exp is not None and self.env.now < exp

    def install(self, pod: Pod) -> None:
        """A pod present at the start: a fresh certificate, renewed in time."""
        key = self.holder(pod)
        if key in self.expiry:
            return  # its ztunnel already holds this identity
        self.expiry[key] = self.lifetime_s
        self._schedule_renewal(pod, 0.0)

    def request(self, pod: Pod, then: Callable[[Pod], None] | None = None) -> None:
        """The pod's proxy sends a CSR now; ``then(pod)`` runs once it holds the certificate."""
        if not pod.alive:
            pod = self._live_peer(pod)  # a renewal: another pod of the identity, or none
            if not pod.alive:
                return
        if then is not None and self._holder is not None and self.has_valid(pod):
            then(pod)  # a new pod whose identity its ztunnel already holds: no CSR
            return
        now = self.env.now
        if self._is_down():
            self.failed_requests += 1
            self._later(self.retry_delay(pod), lambda: self.request(pod, then))
            return
        cpu = self.sign_s * self._slow()
        _start, end = self.queue.assign(now, cpu)
        self._account(now, cpu)
        self._later(end - now, lambda: self._issued(pod, then))

    def retry_delay(self, pod: Pod) -> float:
        """How long ``pod``'s proxy waits after a CSR that failed. With ``retry_s`` None,
        linkerd2-proxy's ``refresh_in`` of the certificate it holds (certify.rs: the loop
        sleeps it whether the request succeeded or not): ``renew_fraction`` of the validity
        left, within [min, max] refresh, and the minimum (10 s) without a valid one."""
        if self.retry_s is not None:
            return self.retry_s
        exp = self.expiry.get(self.holder(pod))
        left = 0.0 if exp is None else exp - self.env.now
        wait = self.renew_fraction * left if left > 0 else self.min_refresh_s
        return min(max(wait, self.min_refresh_s), self.max_refresh_s)

    def _issued(self, pod: Pod, then: Callable[[Pod], None] | None) -> None:
        now = self.env.now
        self.issued += 1
        self.expiry[self.holder(pod)] = now + self.lifetime_s
        self._schedule_renewal(pod, now)
        if then is not None:
            then(pod)

    def _live_peer(self, pod: Pod) -> Pod:
        """A live pod with ``pod``'s holder (``pod`` itself if none, or without holders)."""
        if self._holder is None:
            return pod
        key = self.holder(pod)
        return next((p for p in pod.service.pods if p.alive and self.holder(p) == key), pod)

    def _schedule_renewal(self, pod: Pod, issued_at: float) -> None:
        at = issued_at + self.refresh_s
        if at < self.horizon_s:
            self._later(at - self.env.now, lambda: self.request(pod))

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(max(delay, 0.0))
        assert ev.callbacks is not None
        ev.callbacks.append(lambda _e: fn())
