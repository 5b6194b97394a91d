"""meshsim import: manifests -> scenario (Kubernetes, Istio, Gateway API, Linkerd)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshsim.cli.main import cli

from meshsim.scenario import load_scenario
from meshsim.scenario.importers import KINDS, ManifestError, import_cluster
from meshsim.scenario.model import Scenario

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "import"


def topology(sc: Scenario, rename: dict[str, str] | None = None) -> dict[str, Any]:
    """Services, versions with replicas, and each version's effective calls."""
    rename = rename or {}
    out: dict[str, Any] = {}
    for svc in sc.services:
        versions = {}
        for v in svc.subsets():
            calls = v.calls if v.calls is not None else svc.calls
            versions[v.name if svc.versions else "-"] = (
                v.replicas,
                [(rename.get(c.service, c.service), c.probability, c.parallel) for c in calls],
            )
        out[rename.get(svc.name, svc.name)] = versions
    return out


def message_sizes(sc: Scenario) -> dict[tuple[str, str], tuple[int, list[int]]]:
    """Each version's response size and its calls' request sizes, as the engine reads them."""
    out = {}
    for svc in sc.services:
        for v in svc.subsets():
            calls = v.calls if v.calls is not None else svc.calls
            size = v.response_bytes if v.response_bytes is not None else svc.response_bytes
            out[(svc.name, v.name)] = (size, [c.request_bytes for c in calls])
    return out


def test_bookinfo_topology_matches_the_hand_written_scenario() -> None:
    imported = import_cluster(
        [FIXTURES / "bookinfo"], metrics=[FIXTURES / "bookinfo-metrics.prom"]
    ).scenario
    written = load_scenario(ROOT / "scenarios" / "bookinfo.yaml")
    assert topology(imported) == topology(written)
    # Istio's byte histograms give the message sizes (the proxies' per-KiB costs)
    assert message_sizes(imported) == message_sizes(written)
    assert [w.request_bytes for w in imported.workloads] == [1024]
    assert [w.target for w in imported.workloads] == ["productpage"]
    assert imported.workloads[0].rate_rps == pytest.approx(200.0)
    rule = imported.traffic[0]
    assert (rule.service, rule.split, rule.timeout_ms) == (
        "reviews",
        {"v1": 34, "v2": 33, "v3": 33},
        2000.0,
    )
    assert written.traffic[0].split == rule.split
    assert imported.meshes == ["none", "istio"]


def test_emojivoto_topology_matches_the_hand_written_scenario() -> None:
    result = import_cluster([FIXTURES / "emojivoto"], metrics=[FIXTURES / "emojivoto-metrics.json"])
    imported = result.scenario
    written = load_scenario(ROOT / "scenarios" / "emojivoto.yaml")
    # Emojivoto's Services are named <app>-svc upstream; the hand-written scenario drops it.
    rename = {"web-svc": "web", "emoji-svc": "emoji", "voting-svc": "voting"}
    assert topology(imported, rename) == topology(written)
    assert {s.name: s.protocol for s in imported.services} == {
        "emoji-svc": "grpc",
        "voting-svc": "grpc",
        "web-svc": "http1",
    }
    assert [(w.name, w.target, w.rate_rps) for w in imported.workloads] == [
        ("vote-bot", "web-svc", pytest.approx(300.0))
    ]
    assert imported.meshes == ["none", "linkerd"]
    opts = imported.mesh_options.linkerd
    assert (opts.retry_budget, opts.retry_ratio, opts.min_retries_per_second, opts.retry_ttl_s) == (
        True,
        0.2,
        10.0,
        10.0,
    )
    rules = [
        (
            r.service,
            r.match.path_exact if r.match else None,
            r.match.path_prefix if r.match else None,
            r.timeout_ms,
            r.retries.retry_on if r.retries else None,
        )
        for r in imported.traffic
    ]
    assert rules == [
        ("emoji-svc", "/emojivoto.v1.EmojiService/FindByShortcode", None, None, ["5xx"]),
        ("emoji-svc", "/emojivoto.v1.EmojiService/ListAll", None, 300.0, None),
        ("voting-svc", None, "/emojivoto.v1.VotingService/Vote", 1000.0, None),
    ]


def test_every_generated_value_names_its_source_line() -> None:
    result = import_cluster([FIXTURES / "bookinfo"])
    lines = result.text.splitlines()
    replicas = next(line for line in lines if line.strip().startswith("replicas: 2"))
    source = replicas.split("# ", 1)[1].split()[0]  # file:line
    file, line = source.rsplit(":", 1)
    assert Path(file).read_text().splitlines()[int(line) - 1].strip() == "replicas: 2"
    split = next(line for line in lines if line.strip().startswith("v2: 33"))
    file, line = split.split("# ", 1)[1].split()[0].rsplit(":", 1)
    assert Path(file).read_text().splitlines()[int(line) - 1].strip() == "weight: 33"
    assert any("ServiceAccount/bookinfo-reviews" in s for s in result.skipped)
    assert len(result.skipped) == 4


MIXED = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
  annotations:
    linkerd.io/inject: enabled
    config.linkerd.io/default-inbound-policy: all-authenticated
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: cart, namespace: shop}
  spec:
    selector: {app: cart}
    ports: [{name: grpc-api, port: 80}]
- apiVersion: v1
  kind: Service
  metadata: {name: front, namespace: shop}
  spec:
    selector: {app: front}
    ports: [{port: 80, appProtocol: http}]
- apiVersion: v1
  kind: Service
  metadata: {name: front-stable, namespace: shop}
  spec:
    selector: {app: front, version: stable}
- apiVersion: v1
  kind: Service
  metadata: {name: front-canary, namespace: shop}
  spec:
    selector: {app: front, version: canary}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: cart, namespace: shop}
  spec:
    template:
      metadata:
        labels: {app: cart}
        annotations:
          config.linkerd.io/proxy-cpu-limit: "1500m"
          proxy.istio.io/config: "concurrency: 4"
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: front-stable, namespace: shop}
  spec:
    replicas: 3
    template:
      metadata: {labels: {app: front, version: stable}}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: front-canary, namespace: shop}
  spec:
    replicas: 1
    template:
      metadata: {labels: {app: front, version: canary}}
- apiVersion: autoscaling/v2
  kind: HorizontalPodAutoscaler
  metadata: {name: cart, namespace: shop}
  spec:
    scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: cart}
    minReplicas: 4
    maxReplicas: 10
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  http:
  - match:
    - uri: {prefix: /api}
      headers: {x-user: {exact: tester}}
    fault:
      delay: {percentage: {value: 10}, fixedDelay: 50ms}
      abort: {percentage: {value: 1.5}, httpStatus: 503}
    route:
    - destination: {host: cart}
  - route:
    - destination: {host: cart}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 200ms, retryOn: "connect-failure,5xx"}
    mirror: {host: front}
    mirrorPercentage: {value: 5}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 200, maxRetries: 4}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5s, baseEjectionTime: 1m,
                       maxEjectionPercent: 50}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-viewer, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/front"]}}]
    to: [{operation: {methods: [GET], paths: ["/api/*"]}}]
    when: [{key: "request.headers[x]", values: ["1"]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: front-split
  namespace: shop
  annotations:
    retry.linkerd.io/http: 5xx,gateway-error
    retry.linkerd.io/limit: "2"
    retry.linkerd.io/timeout: 250ms
    timeout.linkerd.io/request: 2s
spec:
  parentRefs: [{group: core, kind: Service, name: front, port: 80}]
  rules:
  - backendRefs:
    - {name: front-stable, port: 80, weight: 90}
    - {name: front-canary, port: 80, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ingress, namespace: shop}
spec:
  parentRefs: [{name: public-gw}]
  rules: [{backendRefs: [{name: front, port: 80}]}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: cart-grpc, namespace: shop}
spec:
  podSelector: {matchLabels: {app: cart}}
  port: grpc
  accessPolicy: deny
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: front-only, namespace: shop}
spec:
  identityRefs: [{kind: ServiceAccount, name: front}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-from-front, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: cart-grpc}
  requiredAuthenticationRefs: [{kind: MeshTLSAuthentication, name: front-only,
                                group: policy.linkerd.io}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec: {hosts: [api.payments.example]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
"""


def test_each_mesh_resource_maps_to_its_scenario_key(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(MIXED)
    result = import_cluster([tmp_path])
    sc = result.scenario
    assert sc.meshes == ["none", "linkerd", "istio-ambient"]
    cart, front = sc.service("cart"), sc.service("front")
    assert (cart.replicas, cart.protocol, cart.namespace) == (4, "grpc", "shop")  # HPA floor
    assert [(v.name, v.replicas) for v in front.versions or []] == [("stable", 3), ("canary", 1)]
    assert front.protocol == "http1"
    # Current Linkerd keeps its runtime's one worker whatever the CPU limit; the warning
    # gives the count an older injector derived from it (1500m rounded up).
    assert sc.mesh_options.linkerd.workers == 1
    (older,) = [w for w in result.warnings if "proxy-cpu-limit" in w]
    assert "mesh_options.linkerd.workers: 2" in older
    assert sc.mesh_options.istio.workers == 4
    assert sc.mesh_options.istio.mtls == "PERMISSIVE"
    faulty, default = sc.traffic[:2]
    assert faulty.match is not None
    assert (faulty.match.path_prefix, faulty.match.headers) == ("/api", {"x-user": "tester"})
    assert faulty.fault is not None
    assert faulty.fault.delay is not None
    assert faulty.fault.abort is not None
    assert (faulty.fault.delay.percent, faulty.fault.delay.fixed_ms) == (10, 50.0)
    assert (faulty.fault.abort.percent, faulty.fault.abort.status) == (1.5, 503)
    # the DestinationRule's policy rides on the service's first rule
    assert faulty.load_balancer == "round_robin"
    assert faulty.circuit_breaker is not None
    assert faulty.circuit_breaker.model_dump() == {
        "max_connections": 100,
        "max_pending_requests": 10,
        "max_requests": 200,
        "max_retries": 4,
    }
    assert faulty.outlier_detection is not None
    assert faulty.outlier_detection.model_dump(exclude_none=True) == {
        "consecutive_5xx": 7,
        "interval_s": 5.0,
        "base_ejection_s": 60.0,
        "max_ejection_percent": 50.0,
    }
    assert default.timeout_ms == 1500.0
    assert default.retries is not None
    assert (
        default.retries.attempts,
        default.retries.per_try_timeout_ms,
        default.retries.retry_on,
    ) == (3, 200.0, ["connect-failure", "5xx"])
    assert default.mirror is not None
    assert (default.mirror.service, default.mirror.percent) == ("front", 5.0)
    route = next(r for r in sc.traffic if r.service == "front")
    assert route.split == {"stable": 90, "canary": 10}
    assert route.timeout_ms == 2000.0
    assert route.retries is not None
    assert (route.retries.attempts, route.retries.per_try_timeout_ms, route.retries.retry_on) == (
        2,
        250.0,
        ["5xx", "gateway-error"],
    )
    assert [w.target for w in sc.workloads] == ["front"]
    (policy,) = sc.security.istio.authorization_policies
    assert (policy.name, policy.namespace, policy.selector, policy.action) == (
        "cart-viewer",
        "shop",
        "cart",
        "ALLOW",
    )
    assert policy.rules[0].from_[0].principals == ["cluster.local/ns/shop/sa/front"]
    assert (policy.rules[0].to[0].methods, policy.rules[0].to[0].paths) == (["GET"], ["/api/*"])
    linkerd = sc.security.linkerd
    assert linkerd.default_policy == "all-authenticated"
    assert [(s.name, s.service, s.access_policy) for s in linkerd.servers] == [
        ("cart-grpc", "cart", "deny")
    ]
    assert [(a.server, a.authentications) for a in linkerd.authorization_policies] == [
        ("cart-grpc", ["front-only"])
    ]
    assert [
        (m.name, [a.name for a in m.service_accounts]) for m in linkerd.mesh_tls_authentications
    ] == [("front-only", ["front"])]
    # fault and mirror under Linkerd: emulated, and said so
    assert sc.mesh_options.linkerd.unsupported == "emulate"
    text = "\n".join(result.warnings)
    for expected in (
        "'when' conditions",
        "Service/front-canary selects some of",
        "scales Deployment/cart between 4 and 10",
        "api.payments.example",
    ):
        assert expected in text
    assert any("ConfigMap/settings" in s for s in result.skipped)


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


ISTIO_ZEROS = """\
apiVersion: v1
kind: Service
metadata: {name: cart}
spec: {selector: {app: cart}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart}
spec:
  replicas: 2
  template: {metadata: {labels: {app: cart}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart}
spec:
  hosts: [cart]
  http:
  - match: [{uri: {prefix: /slow}}]
    route: [{destination: {host: cart}}]
    retries: {attempts: 2, retryOn: 5xx, backoff: 100ms, retryIgnorePreviousHosts: false}
  - route: [{destination: {host: cart}}]
    retries: {perTryTimeout: 2s, retryOn: 5xx}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart}
spec:
  host: cart
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 1s}
      http: {http2MaxRequests: 0, maxRetries: 0, maxRequestsPerConnection: 1}
"""


def test_istio_retry_and_pool_fields_import_as_istiod_programs_them(tmp_path: Path) -> None:
    """A retries block without attempts is retries off (istiod's ConvertPolicy: attempts <= 0
    gives no policy), not the scenario's default 2; a connectionPool threshold of 0 is unset
    (istiod sets only those above 0), not a refusal or "no retries"; backoff is Envoy's base
    interval; what has no scenario key is a warning."""
    from meshsim.policy.mapping import map_traffic

    (tmp_path / "cart.yaml").write_text(ISTIO_ZEROS)
    result = import_cluster([tmp_path])
    slow, rest = result.scenario.traffic
    assert slow.retries is not None
    assert rest.retries is not None
    assert (slow.retries.attempts, slow.retries.backoff_base_ms) == (2, 100.0)
    assert rest.retries.attempts == 0
    assert slow.circuit_breaker is not None
    assert slow.circuit_breaker.model_dump(exclude_none=True) == {"max_connections": 10}
    warned = "\n".join(result.warnings)
    for field in ("retryIgnorePreviousHosts", "connectTimeout", "maxRequestsPerConnection"):
        assert field in warned
    assert "retries without attempts turn retries off" in warned
    policy = map_traffic(result.scenario, "istio").policy("cart")
    assert [r.envoy_retry is None for r in policy.routes] == [False, True]
    assert policy.cluster.thresholds.max_retries == 2**32 - 1
    assert policy.cluster.thresholds.max_requests == 2**32 - 1


def test_linkerd_s_timeout_annotation_wins_over_the_route_s_field(tmp_path: Path) -> None:
    """Linkerd's policy controller takes timeout.linkerd.io/request over the rule's
    timeouts.request (docs/mesh-semantics.md 6.3); a disagreement is a warning."""
    old = "  rules:\n  - backendRefs:\n    - {name: front-stable"
    assert old in MIXED
    both = MIXED.replace(
        old, "  rules:\n  - timeouts: {request: 5s}\n    backendRefs:\n    - {name: front-stable"
    )
    (tmp_path / "shop.yaml").write_text(both)
    result = import_cluster([tmp_path])
    (rule,) = [r for r in result.scenario.traffic if r.service == "front"]
    assert rule.timeout_ms == 2000.0
    (warning,) = [w for w in result.warnings if "timeout.linkerd.io/request" in w]
    assert "5000 ms here" in warning


def test_cli_writes_a_scenario_that_check_accepts(tmp_path: Path) -> None:
    out = tmp_path / "bookinfo.yaml"
    res = run_cli(
        "import",
        str(FIXTURES / "bookinfo"),
        "--out",
        str(out),
        "--metrics",
        str(FIXTURES / "bookinfo-metrics.prom"),
    )
    assert res.exit_code == 0, res.output
    check = run_cli("check", str(out))
    assert check.exit_code == 0, check.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\n"
            "kind: Service\nfoo: bar: baz\n",
            "bad.yaml:7:9: not valid YAML",
        ),
        ("kind: Service\nmetadata:\n  name: a\n  name: b\n", "bad.yaml:4"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
            "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e]\n"
            "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
            "bad.yaml",
        ),
        ("- just\n- a list\n", "expected a Kubernetes object"),
        ("metadata: {name: x}\n", "needs 'kind'"),
    ],
)
def test_malformed_manifests_are_refused_with_file_and_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    res = run_cli("import", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o.yaml"))
    assert res.exit_code == 2
    assert expected in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o.yaml").exists()


def test_a_50_mb_manifest_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    with pytest.raises(ManifestError, match="larger than the limit"):
        import_cluster([big])


def test_manifests_without_a_service_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("kind: ConfigMap\nmetadata: {name: x}\n")
    res = run_cli("import", str(tmp_path), "--out", str(tmp_path / "o.yaml"))
    assert res.exit_code == 2
    assert "no Service that selects a Deployment" in res.output


TWO_NAMESPACES = """\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: a}
spec: {selector: {app: api}}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: b}
spec: {selector: {app: api}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: a}
spec: {template: {metadata: {labels: {app: api}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: b}
spec: {replicas: 5, template: {metadata: {labels: {app: api}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: b}
spec:
  hosts: [api]
  http: [{route: [{destination: {host: api}}], timeout: 3s}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-from-b, namespace: b}
spec:
  hosts: [api.a.svc.cluster.local]
  http: [{route: [{destination: {host: api.a.svc.cluster.local}}], timeout: 1s}]
"""


def test_a_name_in_two_namespaces_resolves_by_namespace(tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(TWO_NAMESPACES)
    result = import_cluster([tmp_path])
    sc = result.scenario
    assert [(s.name, s.namespace, s.replicas) for s in sc.services] == [
        ("api", "a", 1),
        ("api-b", "b", 5),  # no spec.replicas: Kubernetes' default 1
    ]
    assert [(r.service, r.timeout_ms) for r in sc.traffic] == [("api-b", 3000.0), ("api", 1000.0)]
    assert any("also exists in namespace a" in w for w in result.warnings)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False),
    st.sampled_from(["", "x", "reviews", "v1", "100m", "1s", "-5s", "5xx", "ALLOW", "STRICT",
                     "Service", "ROUND_ROBIN", "/api", "a" * 70]),
)  # fmt: skip
_keys = st.sampled_from([
    "spec", "metadata", "name", "namespace", "labels", "selector", "replicas", "template", "hosts",
    "http", "route", "destination", "host", "subset", "weight", "match", "uri", "prefix",
    "headers", "retries", "attempts", "timeout", "fault", "delay", "abort", "trafficPolicy",
    "connectionPool", "outlierDetection", "subsets", "rules", "from", "to", "source",
    "principals", "parentRefs", "backendRefs", "kind", "routes", "condition", "pathRegex",
    "isRetryable", "podSelector", "matchLabels", "targetRef", "annotations", "ports",
    "appProtocol", "scaleTargetRef", "minReplicas", "mtls", "mode", "action", "gateways",
])  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)
_objects = st.fixed_dictionaries({
    "apiVersion": st.sampled_from(["v1", "apps/v1", "networking.istio.io/v1",
                                   "security.istio.io/v1", "gateway.networking.k8s.io/v1",
                                   "policy.linkerd.io/v1beta3", "linkerd.io/v1alpha2"]),
    "kind": st.sampled_from(sorted(KINDS)),
    "metadata": st.fixed_dictionaries(
        {"name": st.sampled_from(["reviews", "details", "a", "Bad_Name", "x" * 70])},
        optional={"namespace": st.sampled_from(["default", "b"]), "labels": _values,
                  "annotations": _values},
    ),
    "spec": _values,
})  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_objects, min_size=1, max_size=5))
@pytest.mark.long
def test_any_shape_of_known_kinds_imports_or_is_refused_cleanly(objects: list[Any]) -> None:
    """Fields of every type in every known kind, next to the Bookinfo fixture: the result is a
    valid scenario (with warnings), or a ManifestError that is not an importer gap."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "random.yaml").write_text(yaml.safe_dump_all(objects))
        refused = ""
        try:
            result = import_cluster([FIXTURES / "bookinfo", tmp])
        except ManifestError as exc:
            refused = str(exc)
        else:
            assert result.scenario.service("productpage").total_replicas == 2
        assert "gap in the importer" not in refused


def test_manifests_on_standard_input(tmp_path: Path) -> None:
    """kubectl get ... -o yaml | meshsim import - --out scenario.yaml"""
    text = (FIXTURES / "emojivoto" / "emojivoto.yml").read_text()
    out = tmp_path / "s.yaml"
    res = CliRunner().invoke(cli, ["import", "-", "--out", str(out)], input=text)
    assert res.exit_code == 0, res.output
    sc = load_scenario(out)
    assert [s.name for s in sc.services] == ["emoji-svc", "voting-svc", "web-svc"]
    assert "# <stdin>:53 Service/emoji-svc metadata.name" in out.read_text()


def test_node_objects_give_the_cluster(tmp_path: Path) -> None:
    sc = import_cluster([FIXTURES / "bookinfo", FIXTURES / "bookinfo-nodes.yaml"]).scenario
    assert (sc.cluster.nodes, sc.cluster.cores_per_node) == (3, 4)
    assert sc.cluster.memory_gb_per_node == pytest.approx(16393648 * 1024 / 1e9, abs=1e-3)
    (tmp_path / "n.yaml").write_text(
        "kind: Node\nmetadata: {name: big}\nstatus: {capacity: {cpu: 3500m, memory: 64Gi}}\n"
        "---\nkind: Node\nmetadata: {name: odd}\nstatus: {capacity: {cpu: lots}}\n"
    )
    result = import_cluster([FIXTURES / "bookinfo", FIXTURES / "bookinfo-nodes.yaml", tmp_path])
    # five nodes; the commonest shape (three 4-core nodes) stands for all, and both odd ones
    # are said
    assert (result.scenario.cluster.nodes, result.scenario.cluster.cores_per_node) == (5, 4)
    text = " ".join(result.warnings)
    assert "Node/odd has no readable CPU" in text
    assert "nodes of 2 shapes" in text


RESOURCES = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: api}
  spec: {selector: {app: api}}
- apiVersion: v1
  kind: Service
  metadata: {name: pair}
  spec: {selector: {app: pair}}
- apiVersion: v1
  kind: Service
  metadata: {name: mixed}
  spec: {selector: {app: mixed}}
- apiVersion: v1
  kind: Service
  metadata: {name: bad}
  spec: {selector: {app: bad}}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: api}
  spec:
    template:
      metadata:
        labels: {app: api}
        annotations: {sidecar.istio.io/proxyCPU: 50m, sidecar.istio.io/proxyCPULimit: 500m}
      spec:
        containers:
        - name: api
          resources:
            requests: {cpu: 250m, memory: 256Mi, ephemeral-storage: 1Gi}
            limits: {cpu: "1", memory: 512Mi}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: pair}
  spec:
    template:
      metadata:
        labels: {app: pair}
        annotations: {config.linkerd.io/proxy-memory-limit: 64Mi}
      spec:
        containers:
        - {name: main, resources: {requests: {cpu: 200m}, limits: {cpu: 300m, memory: 1Gi}}}
        - {name: helper, resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}}
        - {name: istio-proxy, resources: {requests: {cpu: 10m}, limits: {cpu: 2}}}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: mixed-v1}
  spec:
    template:
      metadata: {labels: {app: mixed, version: v1}}
      spec: {containers: [{name: m, resources: {limits: {cpu: 100m}}}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: mixed-v2}
  spec:
    template:
      metadata: {labels: {app: mixed, version: v2}}
      spec: {containers: [{name: m, resources: {limits: {cpu: 400m}}}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: bad}
  spec:
    template:
      metadata:
        labels: {app: bad}
        annotations: {sidecar.istio.io/proxyCPU: 2, sidecar.istio.io/proxyCPULimit: 1}
      spec: {containers: [{name: b, resources: {requests: {cpu: lots}}}]}
"""


def test_requests_and_limits_become_resources_and_proxy_resources(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RESOURCES)
    result = import_cluster([tmp_path])
    sc = result.scenario
    api = sc.service("api")
    assert api.resources.model_dump() == {
        "requests": {"cpu": "250m", "memory": "256Mi"},  # ephemeral-storage is not modelled
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    # Istio's injector writes only the annotated values: no memory request or limit is left
    assert api.proxy_resources is not None
    assert api.proxy_resources.model_dump() == {
        "requests": {"cpu": "50m", "memory": None},
        "limits": {"cpu": "500m", "memory": None},
    }
    # two app containers added up (the injected istio-proxy is not the app); the memory
    # limit only one of them sets does not bind the pod
    pair = sc.service("pair")
    assert pair.resources.model_dump() == {
        "requests": {"cpu": "300m", "memory": None},
        "limits": {"cpu": "500m", "memory": None},
    }
    assert pair.proxy_resources is not None
    assert pair.proxy_resources.limits.memory == "64Mi"  # Linkerd's annotation
    mixed = sc.service("mixed")
    assert mixed.resources.limits.cpu == "100m"  # the first version's
    text = " ".join(result.warnings)
    assert "the versions of mixed set different resources" in text
    assert "Deployment/mixed-v1's" in text
    # a request above its limit, an unreadable quantity: left out, each with its line
    bad = sc.service("bad")
    assert (bad.proxy_resources, bad.resources.requests.cpu) == (None, None)
    assert "Kubernetes refuses a request above its limit" in text
    assert "'lots' is not a CPU quantity" in text
    written = tmp_path / "out.yaml"
    runner = CliRunner()
    res = runner.invoke(cli, ["import", str(tmp_path / "r.yaml"), "--out", str(written)])
    assert res.exit_code == 0, res.output
    assert "sidecar.istio.io/proxyCPU, sidecar.istio.io/proxyCPULimit (istio's injector)" in (
        written.read_text()
    )
    assert load_scenario(written).service("api").proxy_resources == api.proxy_resources


@pytest.mark.parametrize(
    "containers",
    [
        [{"name": ["x"], "resources": {"requests": {"cpu": "1"}}}, {"name": "b"}],
        [{"name": "a", "resources": {"limits": {"cpu": {"x": 1}}}},
         {"name": "b", "resources": {"limits": {"cpu": "1"}}}],
        [{"name": "a", "resources": "lots"}, {"name": "b", "resources": {"requests": []}}],
        [{"name": "a", "resources": {"requests": {"cpu": True}}}],
    ],
)  # fmt: skip
def test_odd_container_resources_import_with_a_warning_or_none(
    containers: list[Any], tmp_path: Path
) -> None:
    doc = {
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "odd"},
             "spec": {"selector": {"app": "odd"}}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "odd"},
             "spec": {"template": {"metadata": {"labels": {"app": "odd"}},
                                   "spec": {"containers": containers}}}},
        ],
    }  # fmt: skip
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(doc))
    result = import_cluster([tmp_path])
    odd = result.scenario.service("odd")  # the service is kept whatever its containers say
    assert odd.resources.limits.cpu is None


def service_and_deployment(
    name: str, meta: str = "", port: str = "http", replicas: int = 1, namespace: str | None = None
) -> str:
    """A Service (``meta``: more of its metadata) and the Deployment it selects."""
    ns = f", namespace: {namespace}" if namespace else ""
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}{ns}{meta}}}\n"
        f"spec: {{selector: {{app: {name}}}, ports: [{{name: {port}, port: 80}}]}}\n---\n"
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}{ns}}}\n"
        f"spec: {{replicas: {replicas}, template: {{metadata: {{labels: {{app: {name}}}}}}}}}\n"
    )


def test_the_cilium_lb_l7_annotation_imports_as_lb_l7_services(tmp_path: Path) -> None:
    """``service.cilium.io/lb-l7: enabled`` on two Services: both in
    mesh_options.cilium.lb_l7_services, each named by the line it came from."""
    annotated = ", annotations: {service.cilium.io/lb-l7: enabled}"
    docs = [
        service_and_deployment(name, annotated if on else "", port="grpc", replicas=2)
        for name, on in (("a", True), ("b", False), ("c", True))
    ]
    (tmp_path / "m.yaml").write_text("---\n".join(docs))
    result = import_cluster([tmp_path])
    assert result.scenario.mesh_options.cilium.lb_l7_services == ["a", "c"]
    lines = result.text.splitlines()
    note = lines[next(i for i, x in enumerate(lines) if "lb_l7_services" in x) - 1]
    assert "m.yaml:3 Service/a metadata.annotations.service.cilium.io/lb-l7; " in note
    assert "m.yaml:23 Service/c metadata.annotations.service.cilium.io/lb-l7" in note


def test_use_waypoint_labels_import_as_ambient_waypoints(tmp_path: Path) -> None:
    """``istio.io/use-waypoint`` on a Service, or on its Namespace (a Service's own ``none``
    opts out): the services behind a waypoint under ambient."""
    docs = [
        "apiVersion: v1\nkind: Namespace\n"
        "metadata: {name: shop, labels: {istio.io/use-waypoint: waypoint}}\n"
    ]
    for name, ns, label in (("a", "default", "waypoint"), ("b", "default", None),
                            ("c", "shop", None), ("d", "shop", "none")):  # fmt: skip
        labels = f", labels: {{istio.io/use-waypoint: {label}}}" if label else ""
        docs.append(service_and_deployment(name, labels, namespace=ns))
    (tmp_path / "m.yaml").write_text("---\n".join(docs))
    result = import_cluster([tmp_path])
    assert result.scenario.mesh_options.istio_ambient.waypoints == ["a", "c"]
    assert "Namespace/shop metadata.labels.istio.io/use-waypoint" in result.text
