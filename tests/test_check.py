"""``meshsim check``: it refuses what ``meshsim run`` refuses (at the rule's line), and its
call graph stays short however many paths the call DAG has (issue 12, items 6 and 10)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from click.testing import CliRunner
from meshsim.cli.check import MAX_LINES, call_depth, callees_by_service
from meshsim.cli.main import cli

from meshsim.scenario import loads

TWO_MESHES = """\
meshsim: 1
name: rules
duration_s: 10
warmup_s: 1
meshes: [istio, linkerd]
services:
  - {name: front, cpu_ms: 1, calls: [{service: back}]}
  - {name: back, cpu_ms: 1}
workloads:
  - {name: users, target: front, rate_rps: 10}
traffic:
  - service: front
    timeout_ms: 100
  - service: back
    fault:
      abort: {percent: 10, status: 503}
"""


def check(tmp_path: Path, text: str) -> tuple[int, str, str, Path]:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    # A wide terminal, so that rich does not wrap the lines this test reads.
    result = CliRunner().invoke(cli, ["check", str(path)], env={"COLUMNS": "300"})
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr, path


def test_linkerd_fault_injection_is_refused_by_check_as_by_run(tmp_path: Path) -> None:
    code, _, stderr, path = check(tmp_path, TWO_MESHES)
    assert code == 2
    assert f"{path}:14: traffic[1]: with mesh linkerd: traffic rule for back: Linkerd has no " \
        "fault injection" in stderr  # fmt: skip
    assert "mesh_options.linkerd.unsupported: emulate" in stderr
    assert "Traceback" not in stderr


def test_linkerd_fault_injection_with_emulation_passes_check(tmp_path: Path) -> None:
    text = TWO_MESHES + "mesh_options:\n  linkerd: {unsupported: emulate}\n"
    code, stdout, _, _ = check(tmp_path, text)
    assert code == 0
    assert "is valid: meshes istio, linkerd" in stdout


def test_an_unknown_retry_condition_is_refused_by_check(tmp_path: Path) -> None:
    text = TWO_MESHES.replace("meshes: [istio, linkerd]", "meshes: [istio]").replace(
        "    fault:\n      abort: {percent: 10, status: 503}",
        "    retries: {attempts: 2, retry_on: [5xx, bogus-thing]}",
    )
    code, _, stderr, path = check(tmp_path, text)
    assert code == 2
    assert (
        f"{path}:14: traffic[1]: with mesh istio: traffic rule for back: retries.retry_on: "
        "unknown retry_on 'bogus-thing'; expected one of 5xx," in stderr
    )


def diamonds(levels: int) -> str:
    """A chain of diamonds: s0 calls a0 or b0 (one in two each), both call s1, ...:
    2^levels call paths, though a request makes about 2 x levels calls."""
    lines = ["meshsim: 1", "name: diamonds", "duration_s: 10", "warmup_s: 1", "services:"]
    for i in range(levels):
        calls = f"[{{service: a{i}, probability: 0.5}}, {{service: b{i}, probability: 0.5}}]"
        lines.append(f"  - {{name: s{i}, cpu_ms: 0.1, calls: {calls}}}")
        for side in "ab":
            lines.append(f"  - {{name: {side}{i}, cpu_ms: 0.1, calls: [{{service: s{i + 1}}}]}}")
    lines.append(f"  - {{name: s{levels}, cpu_ms: 0.1}}")
    lines += ["workloads:", "  - {name: users, target: s0, rate_rps: 1}"]
    return "\n".join(lines) + "\n"


def test_a_call_graph_with_2_to_the_40_paths_prints_a_bounded_summary(tmp_path: Path) -> None:
    code, stdout, _, _ = check(tmp_path, diamonds(40))
    assert code == 0
    assert "call depth 81;" in stdout  # the workload's request, then 2 calls per diamond
    lines = stdout.splitlines()
    assert len(lines) < MAX_LINES
    assert "... 1 callee, deeper than 12 levels" in stdout
    # s1's callees are listed once; where s1 is reached again it refers back.
    assert sum("s1 x1" in line and "shown above" not in line for line in lines) == 1
    assert sum("s1 x1" in line and "(calls shown above)" in line for line in lines) == 1


def test_a_small_graph_is_printed_in_full(tmp_path: Path) -> None:
    code, stdout, _, _ = check(tmp_path, diamonds(2))
    assert code == 0
    tree = [line for line in stdout.splitlines() if "cpu 0.1 ms" in line]
    names = [line.split("cpu")[0].strip(" │├└─").split(" x")[0] for line in tree]
    assert names == ["s0", "a0", "s1", "a1", "s2", "b1", "s2", "b0", "s1"]
    assert "cut at" not in stdout


def test_call_depth_counts_the_longest_chain() -> None:
    scenario = loads(diamonds(3))
    assert call_depth(scenario, callees_by_service(scenario)) == 7


def test_a_wide_graph_is_cut_at_the_line_limit(tmp_path: Path) -> None:
    lines = ["meshsim: 1", "name: wide", "duration_s: 10", "warmup_s: 1", "services:"]
    lines += [f"  - {{name: s{i}, cpu_ms: 0.1, calls: [{{service: s{i + 1}}}]}}" for i in range(10)]
    lines += ["  - {name: s10, cpu_ms: 0.1}", "workloads:"]
    lines += [f"  - {{name: w{i}, target: s0, rate_rps: 1}}" for i in range(300)]
    code, stdout, _, _ = check(tmp_path, "\n".join(lines) + "\n")
    assert code == 0
    assert f"... cut at {MAX_LINES} lines: 11 services, 10 calls in all" in stdout
    assert len(stdout.splitlines()) < MAX_LINES + 10


def test_a_build_failure_that_validation_missed_is_reported_not_raised(tmp_path: Path) -> None:
    import meshsim.sim.engine
    from meshsim.scenario.runnable import BUILD_DEFECT

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ValueError("abort http_status must be in 200..599 (not 100)")

    with mock.patch.object(meshsim.sim.engine, "Simulation", broken):
        code, _, stderr, path = check(tmp_path, diamonds(1))
    assert code == 2
    assert (
        f"{path}: with mesh none: {BUILD_DEFECT} (ValueError: abort http_status must be in "
        "200..599 (not 100))" in stderr
    )


def test_the_call_graph_names_grpc_and_http2_services(tmp_path: Path) -> None:
    text = TWO_MESHES.replace("{name: back, cpu_ms: 1}", "{name: back, cpu_ms: 1, protocol: grpc}")
    text = text.split("traffic:")[0]
    code, stdout, _, _ = check(tmp_path, text)
    assert code == 0
    tree = [line.strip(" └─├│") for line in stdout.splitlines() if "cpu 1 ms" in line]
    assert tree == ["front x1  cpu 1 ms", "back x1  cpu 1 ms  grpc"]


def test_a_waypoint_or_cilium_l7_service_that_names_no_service_is_refused(tmp_path: Path) -> None:
    """A typo in a list of services in mesh_options would silently leave the service without
    its waypoint (or Cilium's Envoy): refused at its line, with the closest name."""
    base = TWO_MESHES.split("traffic:")[0].replace("[istio, linkerd]", "[istio-ambient, cilium]")
    for options, where in (
        ("  istio-ambient:\n    waypoints: [bakc]\n", "mesh_options.istio-ambient.waypoints[0]"),
        ("  cilium:\n    l7_services: [front, bakc]\n", "mesh_options.cilium.l7_services[1]"),
        ("  cilium:\n    lb_l7_services: [bakc]\n", "mesh_options.cilium.lb_l7_services[0]"),
    ):
        code, _, stderr, path = check(tmp_path, base + "mesh_options:\n" + options)
        assert code == 2
        assert f"{path}:13: {where}: no service named 'bakc'; did you mean 'back'?" in stderr
