"""A ``protocol: grpc`` service fails as a gRPC server does: a gRPC status in a 200.

docs/mesh-semantics.md §1.3 (Istio retries UNAVAILABLE and CANCELLED by default), §3.2
(Envoy's outlier detection counts UNAVAILABLE as a 503), §6.2 (``retry.linkerd.io/grpc``),
§6.4 (failure accrual). Constant arrivals and every replica failing make these exact.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest

from meshsim.api import run_scenario
from meshsim.errors import MeshsimError
from meshsim.policy import GrpcStatus
from meshsim.results.otlp import Row, otlp_json
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict, loads
from meshsim.scenario.events import ErrorsEvent


def doc(
    mesh: str,
    events: list[dict[str, Any]],
    traffic: list[dict[str, Any]] | None = None,
    *,
    frontend: str = "http1",
    replicas: int = 2,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """users -> frontend (2 replicas) -> backend (gRPC), 100 rps constant, 3 s measured."""
    return {
        "meshsim": 1, "name": "grpc", "seed": 4, "duration_s": 4.0, "warmup_s": 1.0,
        "meshes": [mesh], "cluster": {"nodes": 3, "cores_per_node": 8},
        "services": [
            {"name": "frontend", "replicas": 2, "cpu_ms": 0.1, "concurrency": 4096,
             "protocol": frontend, "calls": [{"service": "backend"}]},
            {"name": "backend", "replicas": replicas, "cpu_ms": 1.0, "concurrency": 64,
             "protocol": "grpc"},
        ],
        "workloads": [{"name": "users", "target": "frontend", "arrival": "constant",
                       "rate_rps": 100}],
        "traffic": traffic or [], "events": events, "mesh_options": options or {},
    }  # fmt: skip


def run(d: dict[str, Any]) -> dict[str, Any]:
    mesh = d["meshes"][0]
    result: dict[str, Any] = build_summary(run_scenario(from_dict(d)))["runs"][mesh]
    return result


def errors(at_s: float = 0.0, **extra: Any) -> list[dict[str, Any]]:
    return [{"at_s": at_s, "action": "errors", "target": "backend", "rate": 1.0, **extra}]


def test_istio_retries_a_grpc_server_s_unavailable_by_default_and_not_internal() -> None:
    """§1.3: an errors event on a gRPC service answers UNAVAILABLE (14) in a 200 by default,
    which istiod's default retry_on retries twice; INTERNAL is not retried. The caller sees
    the gRPC status, an error, and answers its own client a 500."""
    run_ = run(doc("istio", errors()))
    res = run_["resilience"]["backend"]
    n = res["requests"]
    assert n == 300
    assert (res["attempts"], res["retries"], res["retries_exhausted"]) == (3 * n, 2 * n, n)
    assert run_["edges"]["frontend->backend"]["statuses"] == {"grpc-14": n}
    assert run_["edges"]["frontend->backend"]["success_rate"] == 0.0
    assert run_["workloads"]["users"]["success_rate"] == 0.0
    assert set(run_["workloads"]["users"]["statuses"]) == {"500"}
    internal = run(doc("istio", errors(grpc_status="internal")))
    res = internal["resilience"]["backend"]
    assert (res["attempts"], res["retries"]) == (n, 0)
    assert internal["edges"]["frontend->backend"]["statuses"] == {"grpc-13": n}


def test_an_http_status_stays_http_on_a_grpc_service_and_is_not_retried() -> None:
    """``status`` still asks for an HTTP status (a 503 from a gRPC service is not
    ``unavailable`` to Envoy: no HTTP status is retried by default since Istio 1.24)."""
    run_ = run(doc("istio", errors(status=503)))
    res = run_["resilience"]["backend"]
    assert res["retries"] == 0
    assert run_["edges"]["frontend->backend"]["statuses"] == {"503": res["requests"]}


def test_a_grpc_server_whose_required_call_failed_answers_internal() -> None:
    """A gRPC frontend whose backend call failed returns the error as INTERNAL (13), as
    Online Boutique's checkoutservice does; the client counts it as an error."""
    run_ = run(doc("istio", errors(grpc_status="internal"), frontend="grpc"))
    users = run_["workloads"]["users"]
    assert set(users["statuses"]) == {"grpc-13"}
    assert users["success_rate"] == 0.0


def test_linkerd_retries_unavailable_only_with_the_grpc_annotation() -> None:
    """§6.2: ``retries: {retry_on: [unavailable]}`` is ``retry.linkerd.io/grpc:
    unavailable`` with limit 1: one retry per request. No rule: Linkerd does not retry."""
    rule = {"service": "backend", "retries": {"attempts": 1, "retry_on": ["unavailable"]}}
    res = run(doc("linkerd", errors(), [rule]))["resilience"]["backend"]
    n = res["requests"]
    assert (res["attempts"], res["retries"], res["retries_exhausted"]) == (2 * n, n, n)
    plain = run(doc("linkerd", errors()))["resilience"]["backend"]
    assert (plain["attempts"], plain["retries"]) == (n, 0)


def test_failure_accrual_shuts_the_replica_that_answers_unavailable() -> None:
    """§6.4: UNAVAILABLE is a failure to Linkerd's breaker: each of the two calling
    proxies shuts the failing replica once, after 7 in a row (its probes fail too)."""
    options = {"linkerd": {"failure_accrual": "consecutive"}}
    d = doc("linkerd", errors(2.0, count=1), options=options)
    run_ = run(d)
    res = run_["resilience"]["backend"]
    assert res["ejections"] == 2
    failed = run_["edges"]["frontend->backend"]["statuses"]["grpc-14"]
    assert 2 * 7 <= failed < 2 * 10  # 7 per caller, then a probe now and then


def test_outlier_detection_counts_unavailable_and_not_resource_exhausted() -> None:
    """§3.2: Envoy maps a grpc-status header to an HTTP status for outlier detection:
    UNAVAILABLE is a 503, so 5 in a row eject the replica (one per calling sidecar);
    RESOURCE_EXHAUSTED is a 429, no error to the detector (but one to the caller)."""
    rule = {"service": "backend", "retries": {"attempts": 0},
            "outlier_detection": {"consecutive_5xx": 5, "max_ejection_percent": 50}}  # fmt: skip
    unavailable = run(doc("istio", errors(2.0, count=1), [rule], replicas=4))
    assert unavailable["resilience"]["backend"]["ejections"] == 2
    assert unavailable["edges"]["frontend->backend"]["statuses"]["grpc-14"] == 2 * 5
    exhausted = run(doc("istio", errors(2.0, count=1, grpc_status="resource_exhausted"), [rule],
                        replicas=4))  # fmt: skip
    assert exhausted["resilience"]["backend"]["ejections"] == 0
    assert exhausted["edges"]["frontend->backend"]["statuses"]["grpc-8"] > 0
    assert exhausted["workloads"]["users"]["success_rate"] < 1.0


def test_grpc_status_names_are_the_codes_but_ok() -> None:
    from meshsim.scenario.events import GrpcStatusName

    names = set(get_args(GrpcStatusName))
    assert names == {c.name.lower() for c in GrpcStatus if c is not GrpcStatus.OK}


_CHECKED = """\
meshsim: 1
name: t
duration_s: 5
warmup_s: 1
meshes: [istio]
services:
  - {name: a, replicas: 1, cpu_ms: 1, protocol: grpc, calls: [{service: b}]}
  - {name: b, cpu_ms: 1, versions: [{name: v1, replicas: 1}]}
workloads:
  - {name: w, target: a, arrival: constant, rate_rps: 10}
events:
"""


def test_a_grpc_status_on_an_http_service_is_refused_with_its_line() -> None:
    def event(fields: str) -> str:
        return _CHECKED + "  - {at_s: 1, action: errors, rate: 1, " + fields + "}\n"

    bad = event("target: b-v1, grpc_status: internal")
    expected = (
        r"t\.yaml:12: events\[0\]\.grpc_status: 'b' is not a gRPC service "
        r"\(protocol: http1\).*expected status \(400\.\.599\)"
    )
    with pytest.raises(MeshsimError, match=expected):
        loads(bad, "t.yaml")
    both = event("target: a, grpc_status: internal, status: 503")
    with pytest.raises(MeshsimError, match=r"events\[0\]\.status: expected one of status"):
        loads(both, "t.yaml")
    spelled = loads(event("target: a, grpc_status: DEADLINE-EXCEEDED"), "t.yaml").events[0]
    assert isinstance(spelled, ErrorsEvent)
    assert spelled.grpc_status == "deadline_exceeded"


def test_spans_carry_the_grpc_status_of_a_200() -> None:
    """OTel: the HTTP status of a gRPC error is 200, its code ``rpc.grpc.status_code``."""
    row = Row("istio", 0, 1, "users", "workload", "users", 0.0, 0.001, 1014)
    span = otlp_json([row])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attributes = {a["key"]: a["value"]["intValue"] for a in span["attributes"]}
    assert (attributes["http.response.status_code"], attributes["rpc.grpc.status_code"]) == (
        "200", "14")  # fmt: skip
    assert span["status"]["code"] == 2  # error
