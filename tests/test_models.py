"""Tests of the cost-model files and their loader (meshsim.models).

The anchor tests are accounting identities of the shipped files, not predictions: each file is
built so that its per-request components add up to the published total at the published
configuration, and these tests keep it that way when someone edits a component.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsim.errors import ModelError
from meshsim.models import (
    KINDS,
    PARAMETER_SPECS,
    ProxyCostModel,
    default_model,
    load_model,
    model_names,
    models_dir,
    optional_parameters,
    parse_model,
    ranged_parameters,
    required_parameters,
    unranged_parameters,
)

SHIPPED = ("istio-sidecar", "linkerd-proxy", "ztunnel", "waypoint")

# Anchor figures (docs/published-figures.md, docs/modern-anchors.md), written here independently
# of the files so that a file cannot change its own target: (vCPU per 1000 rps, MB per proxy).
PUBLISHED = {
    "istio-sidecar": (0.20, 60.0),  # Istio 1.24 docs, section 1b
    "waypoint": (0.25, 60.0),  # Istio 1.24 docs, section 1b
    "ztunnel": (0.06, 12.0),  # Istio 1.24 docs, section 1b
    # No modern per-request figure exists for linkerd2-proxy: the centre of the derived bracket
    # 0.06 (ztunnel) .. 0.20 (Envoy), modern-anchors 2.4; 15Mi in linkerd/linkerd2#8424 (2022).
    "linkerd-proxy": (0.12, 15.0),
}
# The anchors' own ranges at 1000 rps per proxy (vCPU): the Envoy sidecar between the Istio
# maintainer's 0.18 (istio/istio.io#15335) and OSM's 0.26 (modern-anchors A1, A2); Linkerd's
# derived bracket between ztunnel and Envoy.
ANCHOR_RANGE_1K = {"istio-sidecar": (0.18, 0.26), "linkerd-proxy": (0.06, 0.20)}


def _text(name: str) -> str:
    return (models_dir() / f"{name}.yaml").read_text(encoding="utf-8")


@functools.cache
def _parsed(name: str) -> dict[str, object]:
    """The shipped file's YAML, parsed once (the fuzz tests mutate a deep copy of it)."""
    return yaml.safe_load(_text(name))


def _line_of(text: str, pattern: str) -> int:
    for i, line in enumerate(text.splitlines(), start=1):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"{pattern!r} not in text")


def _line_after(text: str, anchor: str, pattern: str) -> int:
    """The first line matching ``pattern`` after the one matching ``anchor``."""
    start = _line_of(text, anchor)
    rest = "\n".join(text.splitlines()[start:])
    return start + _line_of(rest, pattern)


def _errors(text: str) -> ModelError:
    with pytest.raises(ModelError) as info:
        parse_model(text, path="m.yaml")
    return info.value


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_loads(name: str) -> None:
    m = load_model(name)
    assert isinstance(m, ProxyCostModel)
    assert set(required_parameters(m.kind)) <= set(m.parameters)
    assert set(m.parameters) <= set(required_parameters(m.kind)) | set(optional_parameters(m.kind))
    assert all(p.source.strip() for p in m.parameters.values())
    assert m.describes.strip()
    assert set(SHIPPED) <= set(model_names())


@pytest.mark.parametrize("name", SHIPPED)
def test_anchor_cpu_is_an_accounting_identity(name: str) -> None:
    m = load_model(name)
    vcpu, _ = PUBLISHED[name]
    a = m.anchor
    assert a is not None
    assert a.vcpu_per_1000rps == pytest.approx(vcpu)
    n = a.wakeups_per_request
    got = m.vcpu_per_1000rps(a.request_bytes, a.response_bytes, mtls=a.mtls, wakeups_per_request=n)
    assert got == pytest.approx(vcpu, rel=0.01)
    # at the anchor's own rate, (sum of phases + wake-ups) x rate = vCPU
    per_request = sum(m.request_cpu_us(a.request_bytes, a.response_bytes, mtls=a.mtls))
    per_request += n * m.wakeup_cpu_us
    assert per_request * a.rps / 1e6 == pytest.approx(vcpu * a.rps / 1000, rel=0.01)
    # every shipped proxy model splits its total into per-request work and wake-ups
    assert m.wakeup_cpu_us > 0
    assert n > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_anchor_memory_is_an_accounting_identity(name: str) -> None:
    m = load_model(name)
    _, mb = PUBLISHED[name]
    a = m.anchor
    assert a is not None
    got = m.memory_mb(a.connections, a.clusters, a.endpoints, tls_connections=a.tls_connections)
    assert got == pytest.approx(mb, rel=0.01)


def test_sidecar_anchor_arithmetic_matches_readme() -> None:
    m = load_model("istio-sidecar")
    req, resp, after = m.request_cpu_us(1024, 1024, mtls=True)
    assert after == pytest.approx(m.value("telemetry_us"))
    # per-request work c = 110 us, plus 1.76 wake-ups x 51.136 us = 200 us (the file's header)
    assert req + resp + after == pytest.approx(110.0, abs=0.01)
    assert req + resp + after + 1.76 * m.wakeup_cpu_us == pytest.approx(200.0, abs=0.01)
    # telemetry is off the critical path; parsing is the largest component
    assert m.value("http_parse_request_us") + m.value("http_parse_response_us") > after


def test_ztunnel_is_l4_only() -> None:
    z = default_model("ztunnel")
    assert z.layer == "L4"
    assert z.value("http_parse_request_us") == 0.0
    _, _, after = z.request_cpu_us(1024, 1024, mtls=True, rbac=True)
    assert after == 0.0
    with pytest.raises(ValueError, match="waypoint"):
        z.request_cpu_us(1024, 1024, mtls=True, l7_filters=1)
    assert z.connection_open_cpu_us(rbac=True) > z.connection_open_cpu_us()


def test_features_add_cost_in_the_right_phase() -> None:
    m = default_model("envoy-sidecar")
    base = m.request_cpu_us(1024, 1024, mtls=True)
    rbac = m.request_cpu_us(1024, 1024, mtls=True, rbac=True)
    assert rbac[0] - base[0] == pytest.approx(m.value("rbac_us"))
    assert rbac[1:] == base[1:]
    wasm = m.request_cpu_us(1024, 1024, mtls=True, wasm_filters=2)
    assert sum(wasm) - sum(base) == pytest.approx(2 * m.value("wasm_filter_us"))
    plain = m.request_cpu_us(1024, 1024, mtls=False)
    assert sum(base) - sum(plain) == pytest.approx(2 * m.value("tls_record_cpu_us_per_kib"))
    bigger = m.request_cpu_us(10 * 1024, 1024, mtls=True)
    assert bigger[0] > base[0]
    assert bigger[1] == base[1]
    with pytest.raises(ValueError, match="Wasm"):
        default_model("linkerd-proxy").request_cpu_us(1, 1, mtls=True, wasm_filters=1)


def test_a_body_too_large_to_hold_whole_pays_the_streaming_path_on_both() -> None:
    text = _text("linkerd-proxy")
    extra = (
        "  buffered_request_max_kib:\n    value: 16\n    unit: KiB\n    source: its code\n"
        "  streamed_request_cpu_us:\n    value: 20\n    unit: us\n    source: a fit\n"
    )
    m = parse_model(text.replace("  rbac_us:\n", extra + "  rbac_us:\n", 1), path="x.yaml")
    plain = parse_model(text, path="y.yaml")
    per_kib = m.value("payload_cpu_us_per_kib")
    held = m.request_cpu_us(16 * 1024, 1024, mtls=False)
    streamed = m.request_cpu_us(16 * 1024 + 1, 1024, mtls=False)
    # One byte more: the streaming path's 20 us, half on each path, and that byte's copy.
    assert streamed[0] - held[0] == pytest.approx(10.0 + per_kib / 1024)
    assert streamed[1] - held[1] == pytest.approx(10.0)
    assert streamed[2] == held[2]
    # Without the limit, every body is charged by its KiB alone.
    assert plain.request_cpu_us(16 * 1024 + 1, 1024, mtls=False)[1] == pytest.approx(
        plain.request_cpu_us(1024, 1024, mtls=False)[1]
    )
    # The response's size does not choose the path: the request body's does.
    assert m.request_cpu_us(1024, 64 * 1024, mtls=False)[0] == pytest.approx(
        m.request_cpu_us(1024, 1024, mtls=False)[0]
    )


def test_handshake_costs() -> None:
    istio = default_model("envoy-sidecar")
    linkerd = default_model("linkerd-proxy")
    assert istio.handshake_cpu_us("server") == pytest.approx(64.65 + 261.81 + 2 * 16.85)
    assert linkerd.handshake_cpu_us("client") == pytest.approx(64.65 + 19.71 + 3 * 59.90)
    # RSA signing makes Istio's default handshake dearer than Linkerd's ECDSA one (8.3)
    assert istio.handshake_cpu_us("server") > linkerd.handshake_cpu_us("server")
    assert istio.handshake_cpu_us("server", resumed=True) < istio.handshake_cpu_us("server")
    # one-way TLS: the client does not sign, the server does not verify
    assert istio.handshake_cpu_us("client", mutual=False) < istio.handshake_cpu_us("client")
    with pytest.raises(ValueError):
        istio.handshake_cpu_us("peer")  # type: ignore[arg-type]


def test_memory_grows_with_configuration() -> None:
    m = default_model("envoy-sidecar")
    scoped = m.memory_mb(8, 10, 20, tls_connections=4)
    unscoped = m.memory_mb(8, 500, 1500, tls_connections=4)
    assert unscoped - scoped == pytest.approx(
        (490 * m.value("cluster_kb") + 1480 * m.value("endpoint_kb")) / 1024
    )
    with pytest.raises(ValueError):
        m.memory_mb(1, tls_connections=2)


def test_default_model_per_kind() -> None:
    for kind in KINDS:
        assert default_model(kind).kind == kind
    with pytest.raises(ValueError):
        default_model("nginx")  # type: ignore[arg-type]


def test_load_by_name_and_by_path(tmp_path: Path) -> None:
    by_name = load_model("ztunnel")
    by_path = load_model(models_dir() / "ztunnel.yaml")
    assert by_name.parameters == by_path.parameters
    copy = tmp_path / "my-ztunnel.yaml"
    copy.write_text(_text("ztunnel"), encoding="utf-8")
    assert load_model(str(copy)).path == str(copy)
    with pytest.raises(ModelError, match="did you mean 'ztunnel'"):
        load_model("ztunel")
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- rejected files


def test_missing_source_names_line_and_field() -> None:
    text = _text("istio-sidecar")
    bad = re.sub(r"(  routing_us:\n(?:    .*\n)*?)    source: .*\n", r"\1", text, count=1)
    assert bad != text
    err = _errors(bad)
    [p] = err.problems
    assert p.field == "parameters.routing_us.source"
    assert p.line == _line_of(bad, r"^  routing_us:")
    assert "source" in p.message
    assert "m.yaml:" in str(err)


def test_empty_source_is_rejected() -> None:
    text = _text("ztunnel")
    bad = text.replace("source: ztunnel DEFAULT_WORKER_THREADS", 'source: "  "\n    x: ztunnel', 1)
    err = _errors(bad)
    fields = {p.field for p in err.problems}
    assert "parameters.worker_threads.source" in fields


def test_unknown_key_suggests_closest_name() -> None:
    text = _text("istio-sidecar").replace("  routing_us:", "  routeing_us:", 1)
    err = _errors(text)
    by_field = {p.field: p for p in err.problems}
    unknown = by_field["parameters.routeing_us"]
    assert "did you mean 'routing_us'" in unknown.message
    assert unknown.line == _line_of(text, r"^  routeing_us:")
    assert "parameters.routing_us" in by_field  # and the real one is reported missing
    assert "missing" in by_field["parameters.routing_us"].message


def test_parameter_of_another_kind_is_rejected() -> None:
    text = _text("ztunnel").replace(
        "parameters:\n", "parameters:\n  routing_us: {value: 1.0, unit: us, source: test}\n", 1
    )
    err = _errors(text)
    [p] = err.problems
    assert p.field == "parameters.routing_us"
    assert "ztunnel" in p.message
    assert p.line == _line_of(text, r"^  routing_us:")


def test_wrong_type_names_line_and_field() -> None:
    text = _text("istio-sidecar")
    bad = text.replace("  telemetry_us:\n    value: 28.283", '  telemetry_us:\n    value: "fast"')
    err = _errors(bad)
    [p] = err.problems
    assert p.field == "parameters.telemetry_us.value"
    assert p.line == _line_of(bad, r'value: "fast"')
    assert "number" in p.message


def test_negative_value_names_line_and_field() -> None:
    text = _text("linkerd-proxy")
    bad = text.replace("  rbac_us:\n    value: 5.0", "  rbac_us:\n    value: -5.0")
    err = _errors(bad)
    [p] = err.problems
    assert p.field == "parameters.rbac_us.value"
    assert p.line == _line_of(bad, r"value: -5.0")
    assert ">= 0" in p.message


def test_a_share_above_one_names_line_field_and_bounds() -> None:
    text = _text("linkerd-proxy")
    share = "  wakeup_cpu_after_share:\n    value: 1.5\n    unit: ratio\n    source: a guess\n"
    bad = text.replace("  rbac_us:\n", share + "  rbac_us:\n", 1)
    err = _errors(bad)
    [p] = err.problems
    assert p.field == "parameters.wakeup_cpu_after_share.value"
    assert p.line == _line_of(bad, r"value: 1.5")
    assert "from 0 to 1" in p.message
    # Nor may its range reach past 1: a model band would draw from it.
    ranged = share.replace("value: 1.5", "value: 0.5") + "    range: [0.2, 1.5]\n"
    ranged += "    range_source: a guess\n"
    bad = text.replace("  rbac_us:\n", ranged + "  rbac_us:\n", 1)
    [p] = _errors(bad).problems
    assert p.field == "parameters.wakeup_cpu_after_share.range"
    assert "above the most allowed 1" in p.message


def test_wrong_unit_and_fractional_count() -> None:
    text = _text("waypoint")
    bad = text.replace(
        "  routing_us:\n    value: 9.428\n    unit: us",
        "  routing_us:\n    value: 9.428\n    unit: ms",
    )
    bad = bad.replace("  worker_threads:\n    value: 2", "  worker_threads:\n    value: 1.5")
    fields = {p.field: p for p in _errors(bad).problems}
    assert "expected unit 'us'" in fields["parameters.routing_us.unit"].message
    assert "whole number" in fields["parameters.worker_threads.value"].message


def test_top_level_problems() -> None:
    err = _errors("kind: envoy-sidcar\ndescribes: x\nparameters: {}\nextra: 1\n")
    fields = {p.field: p for p in err.problems}
    assert "did you mean 'envoy-sidecar'" in fields["kind"].message
    assert fields["kind"].line == 1
    assert fields["extra"].line == 4
    assert "missing" in _errors("kind: ztunnel\n").problems[0].message
    dup = _errors(_text("ztunnel") + "kind: ztunnel\n")
    assert any("duplicate" in p.message for p in dup.problems)


def test_invalid_yaml_gives_line() -> None:
    err = _errors("kind: ztunnel\nparameters: [\n  a: b\n")
    assert err.problems[0].line is not None
    assert "YAML" in err.problems[0].message


def test_every_spec_has_unit_and_meaning() -> None:
    for spec in PARAMETER_SPECS.values():
        assert spec.unit
        assert spec.meaning
        assert spec.kinds


# --------------------------------------------------------------------------- fuzzing

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=12), inner, max_size=3),
    ),
    max_leaves=8,
)


def _only_model_error(text: str) -> None:
    """Parsing either succeeds or raises a ModelError with problems; nothing else escapes."""
    problems: list[object] = []
    try:
        parse_model(text, path="fuzz.yaml")
    except ModelError as exc:
        problems = list(exc.problems)
        str(exc)  # renders without raising
        assert problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    _only_model_error(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(SHIPPED),
    param=st.sampled_from(sorted(PARAMETER_SPECS)),
    field=st.sampled_from(["value", "unit", "source", "note", "range", "range_source", "extra"]),
    replacement=_VALUES,
    drop=st.booleans(),
)
@pytest.mark.long
def test_fuzz_mutated_shipped_files(
    name: str, param: str, field: str, replacement: object, drop: bool
) -> None:
    data = copy.deepcopy(_parsed(name))
    entry = data["parameters"].setdefault(param, {})
    if drop:
        entry.pop(field, None)
    else:
        entry[field] = replacement
    _only_model_error(yaml.safe_dump(data))


@pytest.mark.parametrize(
    "text",
    [
        "&a [*a]",
        "&a {k: *a}",
        "kind: ztunnel\nparameters: &p {worker_threads: *p}\n",
        "? [a]\n: b\n",
        "kind: ztunnel\ndescribes: x\nparameters:\n  socket_io_us: {value: 1" + "0" * 400 + "}\n",
        "kind: ztunnel\ndescribes: x\nparameters:\n  socket_io_us: {value: .nan}\n",
        "!!python/object:os.system {}",
        "\t",
    ],
)
def test_hostile_yaml_gives_model_error(text: str) -> None:
    _only_model_error(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SHIPPED), cut=st.integers(min_value=0, max_value=10_000))
def test_fuzz_truncated_files(name: str, cut: int) -> None:
    text = _text(name)
    _only_model_error(text[: cut % (len(text) + 1)])


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("name", model_names())
def test_every_shipped_parameter_has_a_sourced_range(name: str) -> None:
    """Issue 19: every parameter of every shipped model (proxies and control planes) has a range
    whose bounds name a source, and the range contains the value."""
    m = load_model(name)
    assert unranged_parameters(m) == ()
    for pname, p in m.parameters.items():
        assert p.range is not None, pname
        assert p.range.source.strip(), pname
        assert p.range.low <= p.value <= p.range.high, pname
    # a parameter varies unless it is a fixed fact (a count or a documented default)
    assert len(ranged_parameters(m, varying_only=True)) >= len(m.parameters) // 2


def _with_entry(extra: str, name: str = "ztunnel", param: str = "l4_rbac_us") -> str:
    """A shipped file whose parameter ``param`` has its range lines replaced by ``extra``."""
    text = _text(name)
    start = text.index(f"  {param}:\n")
    end = text.index("    source:", start)
    block = text[start:end]
    kept = "".join(
        line + "\n"
        for line in block.splitlines()
        if not line.startswith(("    range:", "    range_source:", "      "))
    )
    return text[:start] + kept + extra + text[end:]


def test_range_without_source_is_rejected() -> None:
    bad = _with_entry("    range: [1.0, 20.0]\n")
    [p] = _errors(bad).problems
    assert p.field == "parameters.l4_rbac_us.range_source"
    assert "range_source" in p.message
    assert p.line == _line_of(bad, r"^  l4_rbac_us:")
    empty = _with_entry('    range: [1.0, 20.0]\n    range_source: " "\n')
    [p] = _errors(empty).problems
    assert p.field == "parameters.l4_rbac_us.range_source"
    assert p.line == _line_after(empty, r"^  l4_rbac_us:", r'range_source: " "')


@pytest.mark.parametrize(
    ("lines", "field", "words"),
    [
        ("    range: [6.0, 20.0]\n", "range", "does not contain the value 5"),
        ("    range: [20.0, 1.0]\n", "range", "exceeds high bound"),
        ("    range: [1.0, .inf]\n", "range", "finite"),
        ("    range: [.nan, 20.0]\n", "range", "finite"),
        ("    range: [1.0, 1" + "0" * 400 + "]\n", "range", "finite"),
        ("    range: [-1.0, 20.0]\n", "range", "below the least allowed 0"),
        ("    range: [1.0]\n", "range", "[low, high]"),
        ("    range: 5.0\n", "range", "[low, high]"),
        ("    range: [1.0, true]\n", "range", "[low, high]"),
        ("    range: [1.0, '20']\n", "range", "[low, high]"),
        ("    range_source: a bracket\n", "range_source", "without a range"),
    ],
)
def test_malformed_range_is_rejected(lines: str, field: str, words: str) -> None:
    src = "" if "range_source" in lines else "    range_source: test\n"
    bad = _with_entry(lines + src)
    [p] = _errors(bad).problems
    assert p.field == f"parameters.l4_rbac_us.{field}"
    assert words in p.message
    assert p.line == _line_after(bad, r"^  l4_rbac_us:", rf"^    {field}:")


def test_every_shipped_anchor_bounds_its_cpu_total() -> None:
    """The band of a model's CPU total comes from its anchor's vcpu_range (tests/
    test_model_bands.py); every shipped file with an anchor has one, sourced, around its value."""
    anchored = [n for n in model_names() if load_model(n).anchor is not None]
    assert {"istio-sidecar", "linkerd-proxy", "ztunnel", "waypoint"} <= set(anchored)
    for name in anchored:
        a = load_model(name).anchor
        assert a is not None, name
        assert a.vcpu_range is not None, name
        assert a.vcpu_range[0] <= a.vcpu_per_1000rps <= a.vcpu_range[1], name
        assert a.vcpu_range_source is not None, name
        assert a.vcpu_range_source.strip(), name
    lo, hi = ANCHOR_RANGE_1K["linkerd-proxy"]
    assert load_model("linkerd-proxy").anchor.vcpu_range == [lo, hi]  # type: ignore[union-attr]
    lo, hi = ANCHOR_RANGE_1K["istio-sidecar"]
    assert load_model("istio-sidecar").anchor.vcpu_range == [lo, hi]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("  vcpu_range: [0.054, 0.078]\n", "  vcpu_range: [0.07, 0.078]\n", "vcpu_range",
         "does not contain vcpu_per_1000rps 0.06"),
        ("  vcpu_range: [0.054, 0.078]\n", "  vcpu_range: [0.054]\n", "vcpu_range",
         "[low, high]"),
        ("  vcpu_range: [0.054, 0.078]\n", "", "vcpu_range_source", "without a vcpu_range"),
        (r"  vcpu_range_source: >-\n(    .*\n)+", "  vcpu_range_source: ' '\n",
         "vcpu_range_source", "needs a non-empty vcpu_range_source"),
    ],
)  # fmt: skip
def test_a_malformed_anchor_range_is_rejected_at_its_line(
    old: str, new: str, field: str, words: str
) -> None:
    text = _text("ztunnel")
    bad = re.sub(old if old.startswith("  vcpu_range_source") else re.escape(old), new, text)
    assert bad != text
    [p] = _errors(bad).problems
    assert p.field == f"anchor.{field}"
    assert words in p.message
    assert p.line == _line_after(bad, r"^anchor:", rf"^  {field}:")


def test_count_ranges_must_be_whole() -> None:
    bad = _with_entry("    range: [1.5, 2]\n    range_source: test\n", param="worker_threads")
    [p] = _errors(bad).problems
    assert p.field == "parameters.worker_threads.range"
    assert "whole" in p.message


def test_ranges_are_optional_for_other_files() -> None:
    """A calibrated or user-written file may give no ranges (the calibration does not yet)."""
    text = re.sub(r"    range: .*\n", "", _text("ztunnel"))
    text = re.sub(r"    range_source: (?:>-\n(?:      .*\n)+|.*\n)", "", text)
    m = parse_model(text, path="user.yaml")
    assert all(p.range is None for p in m.parameters.values())
    assert ranged_parameters(m) == ()
    assert unranged_parameters(m) == tuple(m.parameters)


def test_ranged_parameters_have_dotted_names_and_sources() -> None:
    m = load_model("linkerd-proxy")
    items = {r.name: r for r in ranged_parameters(m)}
    w = items["linkerd-proxy.wakeup_cpu_us"]
    assert (w.model, w.parameter, w.unit) == ("linkerd-proxy", "wakeup_cpu_us", "us")
    assert (w.value, w.low, w.high) == (17.839, 8.5, 24.0)
    assert w.source.startswith("derived bracket")
    assert w.varies
    threads = items["linkerd-proxy.worker_threads"]
    assert threads.integer
    assert not threads.varies
    varying = {r.name for r in ranged_parameters(m, varying_only=True)}
    assert "linkerd-proxy.worker_threads" not in varying
    assert varying < set(items)
    # two meshes sharing a model share its names: the label is the caller's
    assert {r.model for r in ranged_parameters(m, label="shared")} == {"shared"}


def test_with_values_applies_a_parameter_set_inside_the_ranges() -> None:
    m = load_model("istio-sidecar")
    low = {r.parameter: r.low for r in ranged_parameters(m)}
    cheap = m.with_values(low)
    assert cheap.value("wakeup_cpu_us") == 21.0
    assert cheap.parameters["wakeup_cpu_us"].range == m.parameters["wakeup_cpu_us"].range
    cost = sum(m.request_cpu_us(1024, 1024, mtls=True))
    assert sum(cheap.request_cpu_us(1024, 1024, mtls=True)) < cost
    assert m.value("wakeup_cpu_us") == 51.136  # the original is unchanged
    with pytest.raises(ValueError, match="outside its range"):
        m.with_values({"wakeup_cpu_us": 200.0})
    with pytest.raises(KeyError):
        m.with_values({"hbone_frame_us": 1.0})
    with pytest.raises(ValueError, match="finite"):
        m.with_values({"routing_us": float("nan")})


def test_sidecar_memory_counts_envoy_agent_configuration_and_connections() -> None:
    m = default_model("envoy-sidecar")
    assert m.value("agent_memory_mb") > 0  # pilot-agent in the istio-proxy container
    idle = m.memory_mb(0)
    assert idle == pytest.approx(m.value("base_memory_mb") + m.value("agent_memory_mb"))
    busy = m.memory_mb(100, 0, 0, tls_connections=100)
    per_tls_connection_kb = m.value("connection_kb") + m.value("tls_connection_kb")
    assert busy - idle == pytest.approx(100 * per_tls_connection_kb / 1024)
    # Linkerd and ztunnel have no agent process: the optional term reads 0
    assert default_model("linkerd-proxy").value("agent_memory_mb") == 0.0
    assert default_model("ztunnel").value("agent_memory_mb") == 0.0


def test_linkerd_and_istio_stand_on_the_same_footing() -> None:
    """Both anchors at 1000 rps, 1 KiB each way, mTLS; Linkerd's inside its derived bracket,
    which reaches Envoy's level: the models do not decide the CPU comparison by construction."""
    istio, linkerd = load_model("istio-sidecar"), load_model("linkerd-proxy")
    for m in (istio, linkerd):
        a = m.anchor
        assert a is not None
        assert (a.rps, a.request_bytes, a.response_bytes, a.mtls) == (1000, 1024, 1024, True)
    lo, hi = ANCHOR_RANGE_1K["linkerd-proxy"]
    assert lo <= PUBLISHED["linkerd-proxy"][0] <= hi
    assert hi >= ANCHOR_RANGE_1K["istio-sidecar"][0]  # the bracket overlaps Envoy's range
    # the one-worker ceiling: at its per-request work a linkerd2-proxy saturates near the 2019
    # "~10k rps total" per core (linkerd/linkerd2#3755), not far above or below it
    c = sum(linkerd.request_cpu_us(1024, 1024, mtls=True))
    assert 8_000 < 1e6 / c < 15_000


# --------------------------------------------------------------------------- simulated anchors


def _bench_shape(mesh: str, rate_rps: float) -> dict[str, float]:
    """Istio's benchmark shape (tests/test_dataplanes.py): one meshed client, one server."""
    from meshsim.api import run_scenario
    from meshsim.results.summary import build_summary
    from meshsim.scenario import from_dict

    doc = {
        "meshsim": 1,
        "name": "anchors",
        "seed": 3,
        "duration_s": 3.0,
        "warmup_s": 0.5,
        "meshes": [mesh],
        "cluster": {"nodes": 2, "cores_per_node": 8},
        "services": [
            {
                "name": "server",
                "replicas": 1,
                "response_bytes": 1024,
                "cpu_ms": {"dist": "constant", "mean": 0.05},
            }
        ],
        "workloads": [
            {
                "name": "load",
                "target": "server",
                "arrival": "poisson",
                "rate_rps": rate_rps,
                "request_bytes": 1024,
                "connections": 16,
            }
        ],
        "mesh_options": {"meshed_clients": True},
    }
    p = build_summary(run_scenario(from_dict(doc)))["runs"][mesh]["proxies"]
    per_1000 = p["cpu_vcpu_per_1000rps"] / p["count"]
    return {"per_1000": per_1000, "vcpu": per_1000 * rate_rps / 1000}


@pytest.mark.slow
def test_simulated_sidecar_cpu_is_sub_linear_within_the_anchors() -> None:
    """A sidecar at 1k and 5k rps: vCPU inside the published ranges, and per request cheaper at
    5k (wake-ups shared by more requests). At 5k the anchors disagree: the Istio maintainer's
    0.45 vCPU (istio/istio.io#15335) and OSM's linear 1.21 at 4k -> 1.51 at 5k (A2); the model
    must lie between them. Tolerance: Poisson counts over 2.5 s vary by ~1%."""
    one, five = _bench_shape("istio", 1000.0), _bench_shape("istio", 5000.0)
    lo, hi = ANCHOR_RANGE_1K["istio-sidecar"]
    assert lo <= one["vcpu"] <= hi
    assert 0.45 <= five["vcpu"] <= 1.21 * 5 / 4
    assert five["per_1000"] < 0.95 * one["per_1000"]  # sub-linear, not one constant


@pytest.mark.slow
def test_simulated_linkerd_proxy_cpu_is_inside_its_bracket() -> None:
    one = _bench_shape("linkerd", 1000.0)
    lo, hi = ANCHOR_RANGE_1K["linkerd-proxy"]
    assert lo <= one["vcpu"] <= hi
