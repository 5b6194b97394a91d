"""Findings on constructed summaries (exact sentences), pure plot functions, costs."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from matplotlib.axes import Axes

from meshsim.report import figures as fg
from meshsim.report.cost import Prices, cost_frame, monthly_cost
from meshsim.report.findings import (
    added_latency,
    compare_latency,
    compare_resources,
    compare_success,
    findings,
)


def sig(
    p50: float, p99: float, ci: dict[str, list[float]] | None = None, *, success: float = 1.0,
    requests: int = 10_000,
) -> dict[str, Any]:  # fmt: skip
    return {
        "requests": requests,
        "success_rate": success,
        "latency_ms": {"mean": p50, "p50": p50, "p90": p99, "p99": p99, "p999": p99},
        "latency_ci95_ms": ci,
    }


def run(workload: dict[str, Any], **proxies: float) -> dict[str, Any]:
    return {
        "replications": 2,
        "workloads": {"users": workload},
        "proxies": {"count": 4, **proxies} if proxies else {"count": 0},
        "saturated": False,
    }


# ----------------------------------------------------------------------------- findings


def test_ahead_when_intervals_do_not_overlap() -> None:
    a = sig(2.0, 5.0, {"p99": [4.8, 5.2]})
    b = sig(2.0, 8.0, {"p99": [7.5, 8.5]})
    f = compare_latency("linkerd", a, "istio", b, "p99", "users")
    assert f is not None
    assert not f.noise
    assert f.text == (
        "linkerd is ahead of istio on p99 latency of users: 5.00 ms [95 % CI 4.8-5.2] "
        "against 8.00 ms [95 % CI 7.5-8.5], 3.00 ms (38%) lower."
    )


def test_order_of_arguments_does_not_matter() -> None:
    a = sig(2.0, 5.0, {"p99": [4.8, 5.2]})
    b = sig(2.0, 8.0, {"p99": [7.5, 8.5]})
    f1 = compare_latency("linkerd", a, "istio", b, "p99", "users")
    f2 = compare_latency("istio", b, "linkerd", a, "p99", "users")
    assert f1 == f2


def test_overlapping_intervals_are_noise() -> None:
    a = sig(2.0, 5.0, {"p99": [4.0, 6.5]})
    b = sig(2.0, 6.0, {"p99": [5.5, 6.5]})
    f = compare_latency("istio", a, "linkerd", b, "p99", "users")
    assert f is not None
    assert f.noise
    assert f.text == (
        "istio and linkerd are within the noise on p99 latency of users: 5.00 ms "
        "[95 % CI 4-6.5] against 6.00 ms [95 % CI 5.5-6.5] (the 95 % confidence intervals "
        "overlap)."
    )


def test_under_histogram_resolution_is_noise_even_without_ci() -> None:
    f = compare_latency("istio", sig(1.0, 10.0), "linkerd", sig(1.0, 10.05), "p99", "users")
    assert f is not None
    assert f.noise
    assert "under the histograms' 1 % resolution" in f.text


def test_one_replication_says_so() -> None:
    f = compare_latency("istio", sig(1.0, 4.0), "linkerd", sig(1.0, 5.0), "p99", "users")
    assert f is not None
    assert f.text == (
        "istio is ahead of linkerd on p99 latency of users: 4.00 ms against 5.00 ms, "
        "1.00 ms (20%) lower (one replication, so no confidence interval: rerun with "
        "replications >= 2)."
    )


def test_added_latency_exact() -> None:
    mesh = sig(3.0, 9.0, {"p50": [2.9, 3.1]})
    base = sig(2.0, 8.0, {"p50": [1.9, 2.1]})
    f = added_latency("istio", mesh, base, "p50", "users")
    assert f is not None
    assert f.text == (
        "istio adds 1.00 ms (50%) at p50 for users: 3.00 ms [95 % CI 2.9-3.1] against "
        "2.00 ms [95 % CI 1.9-2.1] without a mesh."
    )
    f = added_latency("istio", sig(2.1, 9.0, {"p50": [1.95, 2.3]}), base, "p50", "users")
    assert f is not None
    assert f.noise
    assert f.text.startswith("istio adds no latency beyond the noise at p50 for users")


def test_added_latency_uses_the_paired_interval_when_the_summary_has_one() -> None:
    # The runs' own intervals overlap (2.05-2.3 against 1.9-2.1), but the paired interval of
    # the difference (batch against batch on shared random numbers) excludes zero: real.
    base = sig(2.0, 8.0, {"p50": [1.9, 2.1]})
    mesh = {**sig(2.15, 9.0, {"p50": [2.05, 2.3]}), "added_latency_ci95_ms": {"p50": [0.1, 0.2]}}
    f = added_latency("istio", mesh, base, "p50", "users")
    assert f is not None
    assert not f.noise
    assert f.text == (
        "istio adds 0.150 ms (7%) at p50 for users: 2.15 ms [95 % CI 2.05-2.3] against 2.00 ms "
        "[95 % CI 1.9-2.1] without a mesh; the difference's 95 % CI 0.1..0.2 ms."
    )
    mesh["added_latency_ci95_ms"] = {"p50": [-0.05, 0.35]}
    f = added_latency("istio", mesh, base, "p50", "users")
    assert f is not None
    assert f.noise


def test_two_meshes_are_compared_by_their_paired_interval_when_the_summary_has_one() -> None:
    # Their own intervals overlap (6.0-6.2 against 5.7-6.0), but the paired interval of the
    # difference, kept under the mesh that comes first, excludes zero: a real difference.
    linkerd = {**sig(1.0, 6.1, {"p99": [6.0, 6.2]}),
               "difference_ci95_ms": {"ambient": {"p99": [0.2, 0.4]}}}  # fmt: skip
    ambient = sig(1.0, 5.8, {"p99": [5.7, 6.0]})
    f = compare_latency("linkerd", linkerd, "ambient", ambient, "p99", "users")
    assert f is not None
    assert not f.noise
    assert f.text == (
        "ambient is ahead of linkerd on p99 latency of users: 5.80 ms [95 % CI 5.7-6] against "
        "6.10 ms [95 % CI 6-6.2]; the difference's 95 % CI -0.4..-0.2 ms, 0.300 ms (5%) lower."
    )
    linkerd["difference_ci95_ms"] = {"ambient": {"p99": [-0.05, 0.4]}}
    f = compare_latency("linkerd", linkerd, "ambient", ambient, "p99", "users")
    assert f is not None
    assert f.noise
    assert f.text.endswith("(the difference's 95 % CI -0.4..0.05 ms holds zero).")


def test_success_rates_two_proportion_test() -> None:
    f = compare_success("a", sig(1, 1, success=0.999), "b", sig(1, 1, success=0.99), "users")
    assert f is not None
    assert not f.noise
    assert f.text == (
        "a succeeds more often than b for users: 99.90% against 99.00% "
        "(0.90 points, beyond 1.96 standard errors)."
    )
    small_n = compare_success(
        "a", sig(1, 1, success=0.999, requests=100), "b", sig(1, 1, success=0.99, requests=100),
        "users",
    )  # fmt: skip
    assert small_n is not None
    assert small_n.noise


def test_resources_compare_every_pair_of_meshes_leaner_first() -> None:
    """With ambient leanest, Linkerd against Istio is still stated: it is the question of a
    reader choosing between two sidecar meshes."""
    runs = {
        "none": run(sig(1, 2)),
        "istio": run(sig(1, 2), cpu_vcpu_per_1000rps=1.0, memory_mb_total=400.0),
        "linkerd": run(sig(1, 2), cpu_vcpu_per_1000rps=0.5, memory_mb_total=100.0),
        "istio-ambient": run(sig(1, 2), cpu_vcpu_per_1000rps=0.25, memory_mb_total=50.0),
    }
    texts = [f.text for f in compare_resources(runs)]
    assert texts == [
        "istio-ambient needs less proxy CPU per 1000 rps than linkerd: 0.25 vCPU against "
        "0.5 vCPU (linkerd uses 2.0x as much).",
        "istio-ambient needs less proxy CPU per 1000 rps than istio: 0.25 vCPU against 1 vCPU "
        "(istio uses 4.0x as much).",
        "linkerd needs less proxy CPU per 1000 rps than istio: 0.5 vCPU against 1 vCPU "
        "(istio uses 2.0x as much).",
        "istio-ambient needs less proxy memory in total than linkerd: 50 MB against 100 MB "
        "(linkerd uses 2.0x as much).",
        "istio-ambient needs less proxy memory in total than istio: 50 MB against 400 MB "
        "(istio uses 8.0x as much).",
        "linkerd needs less proxy memory in total than istio: 100 MB against 400 MB "
        "(istio uses 4.0x as much).",
    ]


def test_findings_for_a_full_comparison() -> None:
    runs = {
        "none": run(sig(2.0, 5.0, {"p50": [1.9, 2.1], "p99": [4.5, 5.5]})),
        "istio": run(sig(3.0, 5.2, {"p50": [2.9, 3.1], "p99": [4.6, 6.0]}), cpu_vcpu_per_1000rps=1),
        "linkerd": run(
            sig(2.5, 6.0, {"p50": [2.4, 2.6], "p99": [5.9, 6.1]}), cpu_vcpu_per_1000rps=1
        ),
    }
    runs["linkerd"]["saturated"] = True
    out = findings(runs)
    topics = [f.topic for f in out]
    assert topics[0] == "saturation"
    assert topics.count("added-latency") == 4  # 2 meshes x 2 percentiles
    assert topics.count("latency") == 2  # istio vs linkerd at p50 and p99
    assert [f.noise for f in out if f.topic == "latency"] == [False, True]
    assert "linkerd is ahead of istio on p50" in out[topics.index("latency")].text
    resources = [f for f in out if f.topic == "resources"]
    assert [f.text for f in resources] == [
        "istio and linkerd need the same proxy CPU per 1000 rps: 1 vCPU against 1 vCPU.",
        "istio and linkerd need the same proxy memory in total: 0 MB against 0 MB.",
    ]
    assert all(f.noise for f in resources)
    assert all(f.topic != "success" for f in out)


def test_latency_findings_compare_every_pair_of_meshes_not_only_the_leader() -> None:
    """Ambient ahead of both sidecar meshes: Linkerd against Istio is stated too."""
    runs = {
        "none": run(sig(2.0, 5.0, {"p50": [1.9, 2.1], "p99": [4.9, 5.1]})),
        "istio": run(sig(3.0, 6.0, {"p50": [2.9, 3.1], "p99": [5.9, 6.1]})),
        "linkerd": run(sig(2.6, 5.6, {"p50": [2.5, 2.7], "p99": [5.5, 5.7]})),
        "istio-ambient": run(sig(2.3, 5.3, {"p50": [2.2, 2.4], "p99": [5.2, 5.4]})),
    }
    heads = [f.text.split(":")[0] for f in findings(runs) if f.topic == "latency"]
    assert heads == [
        f"{a} is ahead of {b} on {p} latency of users"
        for p in ("p50", "p99")
        for a, b in (("istio-ambient", "linkerd"), ("istio-ambient", "istio"), ("linkerd", "istio"))
    ]


# ----------------------------------------------------------------------------- figures


def latency() -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("none", "users", "p50", 1.0, 0.9, 1.1),
            ("none", "users", "p99", 4.0, 3.5, 4.5),
            ("istio", "users", "p50", 1.5, float("nan"), float("nan")),
            ("istio", "users", "p99", 5.0, 4.5, 5.5),
        ],
        columns=["mesh", "workload", "percentile", "latency_ms", "ci_low_ms", "ci_high_ms"],
    )


@pytest.mark.parametrize(
    ("plot", "frame", "kwargs", "n_artists"),
    [
        (fg.plot_latency_percentiles, latency(), {}, 4),
        (
            fg.plot_added_latency,
            pd.DataFrame(
                [("istio", "users", "p50", 0.5), ("istio", "users", "p99", 1.0)],
                columns=["mesh", "workload", "percentile", "added_ms"],
            ),
            {},
            2,
        ),
        (
            fg.plot_proxy_resources,
            pd.DataFrame({"mesh": ["none", "istio"], "cpu_vcpu_per_1000rps": [0.0, 1.2]}),
            {},
            2,
        ),
        (
            fg.plot_convergence,
            pd.DataFrame({"mesh": ["istio"], "percentile": ["p99"], "convergence_s": [1.5]}),
            {},
            1,
        ),
    ],
)
def test_bar_plots_draw_on_the_given_axes(
    plot: Any, frame: pd.DataFrame, kwargs: dict[str, Any], n_artists: int
) -> None:
    ax = fg.new_axes()
    out = plot(frame, ax=ax, **kwargs)
    assert out is ax
    assert len(ax.patches) == n_artists
    assert ax.get_title()


def test_latency_vs_load_lines() -> None:
    frame = pd.DataFrame(
        [
            ("none", "users", 100.0, "p99", 2.0),
            ("none", "users", 200.0, "p99", 3.0),
            ("istio", "users", 100.0, "p99", 2.5),
            ("istio", "users", 200.0, "p99", 4.0),
        ],
        columns=["mesh", "workload", "offered_rps", "metric", "latency_ms"],
    )
    ax = fg.plot_latency_vs_load(frame, ax=fg.new_axes())
    assert [list(line.get_xdata()) for line in ax.lines] == [[100.0, 200.0], [100.0, 200.0]]
    assert ax.get_legend() is not None


def test_timeline_marks_events_and_warmup() -> None:
    frame = pd.DataFrame(
        {
            "mesh": ["none"] * 4,
            "second": [0.0, 1.0, 2.0, 3.0],
            "success_rate": [1.0, 1.0, 0.8, 1.0],
            "mean_latency_ms": [1.0, 1.0, 2.0, 1.0],
        }
    )
    ax = fg.plot_timeline(frame, events=[(2.0, "kill back")], warmup_s=1.0, ax=fg.new_axes())
    assert len(ax.lines) == 2  # the series and the event's vertical line
    assert [t.get_text() for t in ax.texts] == ["kill back"]
    assert len(ax.patches) == 1  # the warm-up band


def test_empty_frames_say_so() -> None:
    ax = fg.plot_convergence(
        pd.DataFrame(columns=["mesh", "percentile", "convergence_s"]), ax=fg.new_axes()
    )
    assert [t.get_text() for t in ax.texts] == ["no control plane modelled"]


def test_new_figure_when_no_axes_and_svg_is_standalone() -> None:
    ax = fg.plot_latency_percentiles(latency())
    assert isinstance(ax, Axes)
    svg = fg.to_svg(ax, id_prefix="x-")
    assert svg.startswith("<svg")
    assert 'id="x-' in svg
    assert "<?xml" not in svg


# ----------------------------------------------------------------------------- cost


def test_monthly_cost_exact() -> None:
    core_hours, gb_hours, usd = monthly_cost(2.0, 1024.0, Prices(0.05, 0.01))
    assert (core_hours, gb_hours) == (1460.0, 730.0)
    assert usd == pytest.approx(1460 * 0.05 + 730 * 0.01)
    assert monthly_cost(2.0, 1024.0, Prices())[2] is None


def test_cost_frame_adds_control_plane_and_scales_per_1000rps() -> None:
    res = pd.DataFrame(
        [
            {"mesh": "istio", "offered_rps": 500.0, "cpu_vcpu_total": 1.0,
             "memory_mb_total": 512.0, "control_plane_vcpu": 0.5,
             "control_plane_memory_mb": 512.0},
        ]
    )  # fmt: skip
    frame = cost_frame(res, Prices(core_hour_usd=0.1))
    row = frame.iloc[0]
    assert row["cores"] == 1.5
    assert row["memory_gb"] == 1.0
    assert row["usd_per_month"] == pytest.approx(1.5 * 730 * 0.1)
    assert row["usd_per_month_per_1000rps"] == pytest.approx(1.5 * 730 * 0.1 * 2)
