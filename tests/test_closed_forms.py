"""Statistical validation against closed forms (docs/DESIGN.md, testing tier 3).

Each queue is built as a scenario, run through :func:`meshsim.api.run_scenario`, and
its client-side latency histogram compared with queueing theory. The network is made
free (zero latency, bytes of size 0 on a near-infinite link), so the only delays are
the app's worker slots and the node's cores.

Sample sizes were chosen from the estimators' spread: each tolerance below is at least
3 standard deviations of the estimate at the stated number of customers (measured over
independent seeds, see the docstrings), so a correct simulator passes with any seed
and the fixed seeds only make the suite reproducible. Histogram quantiles add at most
1 % of bucket error on top.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import simpy

from meshsim.api import run_scenario
from meshsim.results.run import MeshResult
from meshsim.scenario import Scenario, from_dict, load_scenario
from meshsim.sim.engine import Simulation

pytestmark = pytest.mark.statistical

FREE_NETWORK = {
    "same_node_us": 0,
    "cross_node_us": 0,
    "client_us": 0,
    "bandwidth_gbps": 1e9,
}


def queue_scenario(
    *,
    seed: int,
    duration_s: float,
    rate_rps: float,
    services: list[dict[str, Any]],
    nodes: int = 1,
    cores: int = 1,
) -> Scenario:
    return from_dict(
        {
            "meshsim": 1,
            "name": "queue",
            "seed": seed,
            "duration_s": duration_s,
            "warmup_s": 1.0,
            "cluster": {"nodes": nodes, "cores_per_node": cores, "network": FREE_NETWORK},
            "services": services,
            "workloads": [
                {
                    "name": "clients",
                    "target": "a",
                    "arrival": "poisson",
                    "rate_rps": rate_rps,
                    "request_bytes": 0,
                }
            ],
        }
    )


def service(
    name: str, cpu_ms: Any, concurrency: int, calls: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": 1,
        "concurrency": concurrency,
        "cpu_ms": cpu_ms,
        "response_bytes": 0,
        "calls": [{"service": c, "request_bytes": 0} for c in calls],
    }


def run_none(scenario: Scenario) -> MeshResult:
    result = run_scenario(scenario, meshes=["none"])
    return result.meshes["none"]


def rel(measured: float, expected: float) -> float:
    return measured / expected - 1.0


# --------------------------------------------------------------------------- M/M/1

MU = 1000.0  # service rate (1 ms mean service time)


@pytest.mark.parametrize(
    ("rho", "duration_s", "seed"),
    [
        # 200,000 customers: sd of the mean estimate 0.7 %, of p99 1.6 %.
        (0.5, 401.0, 11),
        # 1,000,000 customers: sd of the mean estimate 0.9 %, of p99 1.9 %.
        (0.8, 1251.0, 12),
    ],
)
def test_mm1_sojourn_mean_and_quantiles(rho: float, duration_s: float, seed: int) -> None:
    """M/M/1: the sojourn time is exponential with rate mu - lambda.

    Tolerances: mean within 3 %; p50, p90, p99 within 5 % of -ln(1 - q) / (mu - lambda).
    """
    lam = rho * MU
    scenario = queue_scenario(
        seed=seed,
        duration_s=duration_s,
        rate_rps=lam,
        services=[service("a", {"dist": "exponential", "mean": 1e3 / MU}, concurrency=1)],
    )
    mr = run_none(scenario)
    h = mr.merged("workloads", "clients")
    assert h.count == pytest.approx(lam * (duration_s - 1.0), rel=0.01)
    mean = 1.0 / (MU - lam)
    assert abs(rel(h.mean, mean)) <= 0.03, (h.mean, mean)
    for q in (0.5, 0.9, 0.99):
        expected = -math.log(1.0 - q) * mean
        assert abs(rel(h.quantile(q), expected)) <= 0.05, (q, h.quantile(q), expected)
    # The server histogram sees the same queue (no network): same mean within 0.1 %.
    assert mr.merged("services", "a").mean == pytest.approx(h.mean, rel=1e-3)
    # And the node's measured utilisation is rho within 1 %.
    (util,) = mr.replications[0].node_utilisation.values()
    assert util == pytest.approx(rho, rel=0.01)


# --------------------------------------------------------------------------- M/M/c


def erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c with offered load a = lambda / mu (< c)."""
    head = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / math.factorial(c) * c / (c - a)
    return tail / (head + tail)


@pytest.mark.parametrize(
    ("cores", "concurrency"), [(4, 4), pytest.param(4, 64, marks=pytest.mark.slow)]
)
def test_mmc_erlang_c_mean_wait(cores: int, concurrency: int) -> None:
    """M/M/4 at utilisation 0.5: mean wait in queue = C(c, a) / (c mu - lambda).

    Tolerance: 5 % of the Erlang C mean wait. The wait is the mean sojourn minus the
    mean service time of the same requests (the app CPU the node executed in the
    window, per request): that control variate removes the service-time noise.
    400,000 customers: sd of the estimate 1.4 %.

    Both arrangements are M/M/4: four cores with four worker slots, or four cores with
    64 slots (the queue then forms at the node's cores, a FCFS multi-server queue).
    """
    c, lam = 4, 2000.0
    duration_s = 201.0
    scenario = queue_scenario(
        seed=21,
        duration_s=duration_s,
        rate_rps=lam,
        cores=cores,
        services=[service("a", {"dist": "exponential", "mean": 1e3 / MU}, concurrency)],
    )
    mr = run_none(scenario)
    rep = mr.replications[0]
    h = mr.merged("workloads", "clients")
    service_mean = rep.app_cpu_vcpu["a"] * rep.window_s / rep.services["a"].requests
    assert service_mean == pytest.approx(1.0 / MU, rel=0.01)
    wait = h.mean - service_mean
    expected = erlang_c(c, lam / MU) / (c * MU - lam)
    assert abs(rel(wait, expected)) <= 0.05, (wait, expected)


# --------------------------------------------------------------------------- M/D/1


def test_md1_pollaczek_khinchine_mean() -> None:
    """M/D/1 at utilisation 0.5 (constant 1 ms of CPU): mean sojourn
    1/mu + rho / (2 mu (1 - rho)) = 1.5 ms (Pollaczek-Khinchine).

    Tolerance: 3 %. 100,000 customers: sd of the estimate 0.5 %.
    """
    rho = 0.5
    lam = rho * MU
    duration_s = 201.0
    scenario = queue_scenario(
        seed=31,
        duration_s=duration_s,
        rate_rps=lam,
        services=[service("a", 1e3 / MU, concurrency=1)],
    )
    h = run_none(scenario).merged("workloads", "clients")
    expected = 1.0 / MU + rho / (2.0 * MU * (1.0 - rho))
    assert abs(rel(h.mean, expected)) <= 0.03, (h.mean, expected)
    # With constant service nobody is faster than the service time itself.
    assert h.min == pytest.approx(1.0 / MU, rel=1e-9)


# --------------------------------------------------------------------------- tandem


def test_tandem_jackson_network() -> None:
    """Two exponential stations in series (a on node 0 calls b on node 1, one core
    each, worker slots plentiful so the queues form at the cores): by Burke's theorem
    the sojourn is 1/(mu1 - lambda) + 1/(mu2 - lambda).

    Placement spreads pods over the nodes with the fewest pods, so a's only replica
    lands on node-0 and b's on node-1 (checked below). Tolerance: 3 % of the mean
    sojourn; each station's server-side mean within 3 % of its own M/M/1 mean.
    100,000 customers: sd of the end-to-end estimate about 0.8 %.
    """
    mu1, mu2, lam = 1000.0, 1250.0, 500.0
    duration_s = 201.0
    scenario = queue_scenario(
        seed=41,
        duration_s=duration_s,
        rate_rps=lam,
        nodes=2,
        services=[
            service("a", {"dist": "exponential", "mean": 1e3 / mu1}, 1000, calls=("b",)),
            service("b", {"dist": "exponential", "mean": 1e3 / mu2}, 1000),
        ],
    )
    sim = Simulation(scenario, "none", 41)
    assert [p.node.name for p in sim.services["a"].pods] == ["node-0"]
    assert [p.node.name for p in sim.services["b"].pods] == ["node-1"]

    mr = run_none(scenario)
    end_to_end = mr.merged("workloads", "clients").mean
    expected = 1.0 / (mu1 - lam) + 1.0 / (mu2 - lam)
    assert abs(rel(end_to_end, expected)) <= 0.03, (end_to_end, expected)
    # b's server-side latency is its own M/M/1 sojourn.
    b_mean = mr.merged("services", "b").mean
    assert abs(rel(b_mean, 1.0 / (mu2 - lam))) <= 0.03, b_mean
    # a's server-side latency includes its call to b.
    assert mr.merged("services", "a").mean == pytest.approx(end_to_end, rel=1e-3)


# --------------------------------------------------------------------------- Little's law


def test_littles_law_on_bookinfo() -> None:
    """L = lambda W on scenarios/bookinfo.yaml (mesh none), with L measured two
    independent ways over the window [warm-up, end):

    - by sampling the workload's in-flight counter every 0.5 ms of simulated time;
    - from per-request records, as the time-weighted number of requests in the system.

    Tolerances: the two measurements of L agree within 1 %; lambda W (lambda from the
    requests sent in the window, W from the latency histogram) is within 2 % of L.
    The timeline's slow replica and error burst do not matter: Little's law holds
    sample path by sample path.
    """
    scenario = load_scenario("scenarios/bookinfo.yaml").model_copy(update={"replications": 1})
    sim = Simulation(scenario, "none", 7, keep_records=True)
    step = 0.5e-3
    samples: list[int] = []

    def sampler(env: simpy.Environment) -> Any:
        yield env.timeout(sim.warmup_s)
        while env.now < sim.end_s:
            samples.append(sum(w.in_flight for w in sim.workloads))
            yield env.timeout(step)

    sim.env.process(sampler(sim.env))
    sim.run()
    assert sim.in_flight() == 0

    window = sim.end_s - sim.warmup_s
    l_sampled = sum(samples) / len(samples)

    records = [r for r in sim.recorder.records or [] if r.kind == "workload"]
    busy = sum(
        max(0.0, min(r.finished_at, sim.end_s) - max(r.started_at, sim.warmup_s)) for r in records
    )
    l_records = busy / window

    stats = sim.recorder.workloads["users"]
    lam = stats.requests / window
    w = stats.histogram.mean
    assert stats.requests == pytest.approx(200 * window, rel=0.03)
    assert l_sampled > 0.5  # a real load, not an empty system
    assert abs(rel(l_records, l_sampled)) <= 0.01, (l_records, l_sampled)
    assert abs(rel(lam * w, l_sampled)) <= 0.02, (lam * w, l_sampled)
