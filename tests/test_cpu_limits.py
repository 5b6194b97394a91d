"""Pod resources through a whole run: CPU limits throttle, memory limits OOM-kill, the
mesh defaults apply, and the counters reach summary.json, the CLI and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from meshsim.api import run_scenario
from meshsim.errors import ScenarioError
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict, load_scenario

ROOT = Path(__file__).resolve().parent.parent


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    return dict(build_summary(run_scenario(from_dict(data))))


@pytest.fixture(scope="module")
def cpu_limits() -> dict[str, Any]:
    data = load_scenario(ROOT / "scenarios" / "cpu-limits.yaml").to_dict()
    data.update(duration_s=12, warmup_s=2, meshes=["istio"])
    return data


@pytest.fixture(scope="module")
def limited(cpu_limits: dict[str, Any]) -> dict[str, Any]:
    return _summary(cpu_limits)


def test_a_tight_limit_throttles_and_raises_p99_while_mean_cpu_stays_below_it(
    limited: dict[str, Any],
) -> None:
    run = limited["runs"]["istio"]
    groups = run["cgroups"]
    free, generous, tight = (groups[f"{v}-v1-0/app"] for v in ("free", "generous", "tight"))
    assert free["cpu_limit_m"] is None
    assert free["nr_periods"] == free["nr_throttled"] == 0
    assert generous["cpu_limit_m"] == 2000.0
    assert generous["nr_periods"] == 100  # drew runtime in every period of the 10 s window
    assert generous["nr_throttled"] == 0
    assert tight["cpu_limit_m"] == 300.0
    assert tight["cpu_vcpu"] < 0.3
    assert 0.05 < tight["throttled_share"] < 0.5
    assert tight["throttled_s"] > 0.1
    sidecar = groups["tight-v1-0/sidecar"]
    assert sidecar["cpu_limit_m"] == 50.0
    assert sidecar["nr_throttled"] > 0
    p99 = {w: s["latency_ms"]["p99"] for w, s in run["workloads"].items()}
    assert p99["tight"] > 3 * p99["free"]
    assert p99["generous"] < 1.5 * p99["free"]


def test_istio_sidecars_take_the_global_proxy_resources_by_default() -> None:
    data = {
        "meshsim": 1, "name": "defaults", "duration_s": 3, "warmup_s": 1,
        "meshes": ["istio", "linkerd"], "cluster": {"scheduler": "cfs"},
        "services": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
        "workloads": [{"name": "w", "target": "a", "rate_rps": 50}],
    }  # fmt: skip
    runs = _summary(data)["runs"]
    istio, linkerd = runs["istio"]["cgroups"], runs["linkerd"]["cgroups"]
    # 100m -> cpu.shares 102 -> cpu.weight 4; limit 2000m (Istio's global.proxy.resources).
    assert (istio["a-v1-0/sidecar"]["cpu_weight"], istio["a-v1-0/sidecar"]["cpu_limit_m"]) == (
        4,
        2000.0,
    )
    # Linkerd sets none: a BestEffort container, cpu.shares 2 -> cpu.weight 1, no limit.
    assert (linkerd["a-v1-0/sidecar"]["cpu_weight"], linkerd["a-v1-0/sidecar"]["cpu_limit_m"]) == (
        1,
        None,
    )
    assert istio["a-v1-0/app"]["cpu_weight"] == 39  # 1 core -> shares 1024 -> weight 39


def test_the_same_seed_gives_the_same_summary(cpu_limits: dict[str, Any]) -> None:
    data = {**cpu_limits, "duration_s": 4}
    first = json.dumps(_summary(data), sort_keys=True)
    assert json.dumps(_summary(data), sort_keys=True) == first


def test_fcfs_enforces_the_limits_that_can_bind(
    cpu_limits: dict[str, Any], limited: dict[str, Any]
) -> None:
    """CPU limits are bandwidth control under either scheduler: under fcfs the tight
    variant throttles as under cfs; a limit that cannot bind (the generous sidecar's 2000m
    on Envoy's two workers) is not a cgroup of the run."""
    fcfs = {**cpu_limits["cluster"], "scheduler": "fcfs"}
    run = _summary({**cpu_limits, "cluster": fcfs})["runs"]["istio"]
    groups = run["cgroups"]
    assert set(groups) == {"generous-v1-0/app", "tight-v1-0/app", "tight-v1-0/sidecar"}
    assert groups["generous-v1-0/app"]["nr_throttled"] == 0
    assert groups["generous-v1-0/app"]["nr_periods"] == 100
    tight, sidecar = groups["tight-v1-0/app"], groups["tight-v1-0/sidecar"]
    assert tight["cpu_vcpu"] < 0.3
    assert 0.05 < tight["throttled_share"] < 0.5
    assert sidecar["nr_throttled"] > 0
    cfs = limited["runs"]["istio"]["cgroups"]
    for name in ("tight-v1-0/app", "tight-v1-0/sidecar"):
        assert groups[name]["cpu_vcpu"] == pytest.approx(cfs[name]["cpu_vcpu"], rel=0.05)
    p99 = {w: s["latency_ms"]["p99"] for w, s in run["workloads"].items()}
    assert p99["tight"] > 3 * p99["free"]


def test_under_fcfs_limits_that_cannot_bind_change_nothing(cpu_limits: dict[str, Any]) -> None:
    fcfs = {**cpu_limits["cluster"], "scheduler": "fcfs"}
    data = {**cpu_limits, "duration_s": 4, "cluster": fcfs}
    roomy = json.loads(json.dumps(data))
    for svc in roomy["services"]:
        # The node's 4 cores; Envoy's 2 workers (a limit alone would set the request).
        svc["resources"] = {"requests": {"cpu": "100m"}, "limits": {"cpu": "4"}}
        svc["proxy_resources"] = {"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}}
    with_limits = _summary(roomy)
    assert "cgroups" not in with_limits["runs"]["istio"]
    for svc in roomy["services"]:
        svc.pop("resources")
        svc.pop("proxy_resources")
    without = _summary(roomy)
    without["scenario_sha256"] = with_limits["scenario_sha256"]
    assert json.dumps(without, sort_keys=True) == json.dumps(with_limits, sort_keys=True)


OOM = {
    "meshsim": 1, "name": "oom", "seed": 3, "duration_s": 40, "warmup_s": 1,
    "meshes": ["istio"], "cluster": {"nodes": 2, "cores_per_node": 2, "scheduler": "cfs"},
    "services": [
        {"name": "a", "replicas": 2, "cpu_ms": 1, "calls": [{"service": "b"}],
         "proxy_resources": {"limits": {"memory": "10Mi"}}},
        {"name": "b", "cpu_ms": 1},
    ],
    "workloads": [{"name": "w", "target": "a", "rate_rps": 50}],
}  # fmt: skip


def test_a_sidecar_over_its_memory_limit_is_killed_and_restarted_with_backoff() -> None:
    # The sidecar's modelled memory (tens of MiB at rest) is over 10Mi from the start: it
    # is killed at the first check (1 s), restarted after 10 s and killed again, then after
    # 20 s (CrashLoopBackOff), and the service it fronts answers nothing.
    run = _summary(OOM)["runs"]["istio"]
    kills = [e for e in run["timeline"] if e["event"].startswith("OOM kill")]
    assert [e["at_s"] for e in kills] == [1.0, 1.0, 11.0, 11.0, 31.0, 31.0]
    assert run["cgroups"]["a-v1-0/sidecar"]["oom_kills"] == 3
    assert run["cgroups"]["a-v1-1/sidecar"]["oom_kills"] == 3
    assert run["cgroups"]["b-v1-0/sidecar"]["oom_kills"] == 0
    assert run["workloads"]["w"]["success_rate"] == 0.0


def test_requests_beyond_allocatable_are_a_warning() -> None:
    data = {
        "meshsim": 1, "name": "packed", "duration_s": 3, "warmup_s": 1, "meshes": ["none"],
        "cluster": {"cores_per_node": 2, "scheduler": "cfs", "allocatable": {"cpu": "1500m"}},
        "services": [{"name": "a", "replicas": 2, "resources": {"requests": {"cpu": "1"}}}],
        "workloads": [{"name": "w", "target": "a", "rate_rps": 10}],
    }  # fmt: skip
    warnings = _summary(data)["runs"]["none"]["warnings"]
    assert any("node-0: its pods request 2000m of CPU" in w and "1500m" in w for w in warnings)


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ({"cpu": "100x"}, "'100x' is not a CPU quantity"),
        ({"cpu": 0}, "must be above 0"),
        ({"memory": "12Qi"}, "'12Qi' is not a memory quantity"),
    ],
)
def test_bad_quantities_name_the_field(quantity: dict[str, Any], message: str) -> None:
    data = {
        "meshsim": 1, "name": "bad", "duration_s": 3, "warmup_s": 1,
        "services": [{"name": "a", "resources": {"limits": quantity}}],
        "workloads": [{"name": "w", "target": "a", "rate_rps": 10}],
    }  # fmt: skip
    with pytest.raises(ScenarioError) as err:
        from_dict(data)
    assert "services[0].resources.limits" in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            {"requests": {"cpu": "500m"}, "limits": {"cpu": "200m"}},
            "requests.cpu '500m' is above limits.cpu '200m'",
        ),
        (
            {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}},
            "requests.memory '1Gi' is above limits.memory '512Mi'",
        ),
    ],
)
def test_a_request_above_its_limit_is_refused_as_kubernetes_does(
    resources: dict[str, Any], message: str
) -> None:
    data = {
        "meshsim": 1, "name": "bad", "duration_s": 3, "warmup_s": 1,
        "services": [{"name": "a", "resources": resources}],
        "workloads": [{"name": "w", "target": "a", "rate_rps": 10}],
    }  # fmt: skip
    with pytest.raises(ScenarioError) as err:
        from_dict(data)
    assert "services[0].resources" in str(err.value)
    assert message in str(err.value)
    # A request equal to its limit is what a Guaranteed pod has.
    ok = {k: dict(resources["limits"]) for k in ("requests", "limits")}
    from_dict({**data, "services": [{"name": "a", "resources": ok}]})


def test_the_cli_and_the_report_show_the_limits(limited: dict[str, Any], cgroups_text: Any) -> None:
    from meshsim.report.sections import _cpu_limits_section

    text = cgroups_text(limited)
    assert "tight-v1-0/app" in text
    assert "300m" in text
    assert "Burstable" in text  # QoS: the pods' requests are below their limits
    assert "free-v1-0/app" not in text  # no limit, nothing to show
    # The generous sidecar's 2000m on Envoy's two workers cannot bind: on the books under
    # cfs, shown by neither, as under fcfs (whose books keep only the binding ones).
    groups = limited["runs"]["istio"]["cgroups"]
    assert groups["generous-v1-0/sidecar"]["cpu_limit_m"] == 2000.0
    assert "generous-v1-0/sidecar" not in text
    assert "generous-v1-0/app" in text  # 2 cores under 16 threads on a 4-core node: it can
    section = _cpu_limits_section(limited["runs"])
    assert section is not None
    shown = {row[1] for row in section.tables[0].rows}
    assert shown == {"generous-v1-0/app", "tight-v1-0/app", "tight-v1-0/sidecar"}
    assert section.notes == [
        "Not shown: 1 container(s) whose CPU limit cannot bind, at or above the cores their "
        "threads can use (Istio's default 2000m on a two-worker sidecar)."
    ]


def test_an_80_column_terminal_shows_every_figure_of_the_limits(
    limited: dict[str, Any],
) -> None:
    """Rich cut the table at 80 columns with an ellipsis ("0.2…", "Burstab…"), so a piped
    run or a narrow terminal lost the figures; now a name folds and no number is cut."""
    import copy

    from meshsim.cli.render import cgroups_table
    from rich.console import Console

    def shown(summary: dict[str, Any]) -> str:
        console = Console(width=80, record=True)
        console.print(cgroups_table(summary))
        return console.export_text()

    text = shown(limited)
    assert "…" not in text
    assert "every pod Burstable" in " ".join(text.splitlines()[:2])
    groups = limited["runs"]["istio"]["cgroups"]
    row = next(line for line in text.splitlines() if "tight-v1-0/sidecar" in line)
    c = groups["tight-v1-0/sidecar"]
    assert f"{c['cpu_vcpu']:.3f}" in row
    assert f"{c['nr_throttled']:.0f}/{c['nr_periods']:.0f}" in row
    assert f"{c['throttled_s']:.2f}s" in row
    # Two classes bring the QoS column back; the table is wider than 80 and folds names.
    mixed = copy.deepcopy(limited)
    mixed["runs"]["istio"]["cgroups"]["tight-v1-0/sidecar"]["qos_class"] = "Guaranteed"
    text = shown(mixed)
    assert "…" not in text
    assert "Guaranteed" in text
    assert "QoS" in text


@pytest.mark.parametrize(
    ("limit_m", "threads", "binds"),
    [(None, 2, False), (2000.0, 2, False), (1999.0, 2, True), (2500.0, 2, False),
     (300.0, 16, True), (300.0, None, True)],
)  # fmt: skip
def test_a_limit_binds_only_below_the_cores_its_threads_can_use(
    limit_m: float | None, threads: int | None, binds: bool
) -> None:
    from meshsim.results.summary import limit_can_bind

    assert limit_can_bind({"cpu_limit_m": limit_m, "threads": threads}) is binds


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["fcfs", "cfs"])
def test_the_simulated_lab_throttles_a_server_sidecar_limited_below_its_use(
    scheduler: Literal["fcfs", "cfs"],
) -> None:
    """The validation's lab (models/calibrated/lab.yaml) at its lowest held-out load, the
    server sidecar limited to 60 % of the CPU it was measured to use there: it is throttled
    in nearly every 100 ms period and its p99 grows tenfold; without a limit nothing is
    counted. (meshsim.calibrate.throttle sets the lab's measurement beside this.)"""
    from meshsim.calibrate.calibration import load_fit
    from meshsim.calibrate.throttle import lab_point, predict

    model = ROOT / "models" / "calibrated" / "lab.yaml"
    fit = load_fit(model)
    lowest = min(float(p["rps"]) for p in fit["points"] if p["role"] == "held_out" and p["rps"])
    point = lab_point(fit, lowest)
    used_m = point["achieved_rps"] * point["process_cpu_us_per_request"]["server_sidecar"] / 1e3
    free = predict(model, fit, point, None, duration_s=3.0, scheduler=scheduler)
    tight = predict(model, fit, point, 0.6 * used_m, duration_s=3.0, scheduler=scheduler)
    assert (free["nr_periods"], free["nr_throttled"]) == (0, 0)
    assert tight["nr_periods"] == 25  # the 2.5 s window
    assert tight["nr_throttled"] >= 20
    assert tight["p99_ms"] > 10 * free["p99_ms"]
