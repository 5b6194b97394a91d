"""How long a host takes to run a proxy thread that a message woke (``cluster.wakeup_latency``).

An event loop with no ready events sleeps in ``epoll_wait``. A message for it lands in its
socket at once, but the thread runs only after the kernel has interrupted the core, the core
has left its idle state and switched the thread in (on a VM, after the hypervisor has run the
vCPU too). That delay is paid by the first burst of work that finds a worker asleep, before
the burst can start; the bursts that reach the worker while it is being woken, or while it
is busy, ride that wake-up (an event loop takes every ready event in one poll). So the
latency falls out of a request's path as load rises, as the wake-up CPU does
(``wakeup_cpu_us``; :meth:`meshsim.sim.dataplanes.proxy.Proxy.work`).

The draws come from the percentiles given (linear between them, flat beyond the lowest and
the highest), batched from the node's own random stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from meshsim.sim.sampling import Sampler, quantile_sampler

if TYPE_CHECKING:
    from meshsim.scenario.host import WakeupLatency


def sampler(spec: WakeupLatency, rng: np.random.Generator) -> Sampler:
    """Draws of ``spec``'s latency, in seconds."""
    pairs = sorted(spec.percentiles_us.items())
    qs = np.array([p / 100.0 for p, _ in pairs])
    us = np.array([v for _, v in pairs]) * 1e-6
    return quantile_sampler(qs, us, rng, spec.mean_us() * 1e-6)
