"""A sidecar's CPU per 100 ms period (meshsim.calibrate.period_cpu): exact cases."""

from __future__ import annotations

import numpy as np
import pytest

from meshsim.calibrate.period_cpu import figures, period_figures

T0 = 1000.0


def _samples(cpu_ms: list[float]) -> list[tuple[float, dict[str, float]]]:
    """Samples every 10 ms of a process that spends ``cpu_ms[k]`` evenly over period k."""
    out = []
    total = 0.0
    for k, ms in enumerate(cpu_ms):
        for j in range(10):
            out.append((T0 + 0.1 * k + 0.01 * j, {"server_sidecar": total + ms * 1e-3 * j / 10}))
        total += ms * 1e-3
    out.append((T0 + 0.1 * len(cpu_ms), {"server_sidecar": total}))
    return out


def _answered(counts: list[int]) -> list[float]:
    """``counts[k]`` requests answered evenly inside period k."""
    return [T0 + 0.1 * k + 0.1 * (i + 0.5) / n for k, n in enumerate(counts) for i in range(n)]


def _figures(cpu_ms: list[float], counts: list[int]) -> dict[str, float] | None:
    end = T0 + 0.1 * len(cpu_ms)
    return period_figures(_samples(cpu_ms), "server_sidecar", _answered(counts), T0, end)


def test_a_steady_sidecar_varies_by_nothing() -> None:
    f = _figures([30.0] * 12, [300] * 12)
    assert f is not None
    assert f["periods"] == 10  # the whole periods between the first and the last answer
    assert f["cpu_ms_mean"] == pytest.approx(30.0)
    assert (f["cpu_cv"], f["requests_cv"], f["cpu_per_request_cv"]) == pytest.approx(
        (0.0, 0.0, 0.0), abs=1e-6
    )
    assert f["poisson_cv"] == pytest.approx(1 / np.sqrt(300), abs=1e-4)
    assert f["lag1"] == 0.0


def test_a_drift_of_the_cpu_per_request_is_told_from_the_requests() -> None:
    # 30 and 40 ms in turn for the same 300 requests: the CPU per request drifts (cv 5/35),
    # the requests do not, and one period's CPU predicts the next's the wrong way (lag1 -1).
    f = _figures([30.0, 40.0] * 6, [300] * 12)
    assert f is not None
    assert f["cpu_cv"] == pytest.approx(5 / 35, abs=1e-4)
    assert f["requests_cv"] == pytest.approx(0.0, abs=1e-9)
    assert f["cpu_per_request_cv"] == pytest.approx(5 / 35, abs=1e-4)
    assert f["lag1"] == pytest.approx(-1.0, abs=1e-4)


def test_requests_that_vary_at_a_steady_cost_per_request() -> None:
    # 250 and 350 requests in turn at 0.1 ms each: all of the CPU's variation is theirs.
    counts = [250, 350] * 6
    f = _figures([0.1 * n for n in counts], counts)
    assert f is not None
    assert f["cpu_cv"] == pytest.approx(50 / 300, abs=1e-4)
    assert f["requests_cv"] == pytest.approx(50 / 300, abs=1e-4)
    assert f["cpu_per_request_cv"] == pytest.approx(0.0, abs=1e-6)


def test_too_short_a_load_gives_no_figures() -> None:
    assert _figures([30.0] * 5, [300] * 5) is None


def test_the_report_table_takes_medians_over_the_passes() -> None:
    from meshsim.calibrate.period_cpu import period_table

    def point(role: str, cpu_cv: float, limit: float | None = None) -> dict[str, object]:
        figures = {"cpu_cv": cpu_cv, "requests_cv": 0.06, "poisson_cv": 0.058,
                   "cpu_per_request_cv": 0.1, "lag1": 0.2}  # fmt: skip
        return {"role": role, "config": "plain-ka-f0", "rps": 2975.8, "cpu_limit": limit,
                "period_cpu": {"server_sidecar": figures}}  # fmt: skip

    points = [point("held_out", c) for c in (0.08, 0.12, 0.10)]
    points.append({**point("held_out", 0.05), "rps": 0.0})  # the closed loop: saturation
    points += [point("throttled", 0.2, 1.1), point("fit", 0.9)]
    lines = period_table(points).splitlines()
    assert lines[1].split()[:4] == ["sat", "-", "1", "0.050"]
    # Figures recorded without a residual (and without series to compute it from): nan.
    assert lines[2].split() == [
        "2975.8", "-", "3", "0.100", "0.060", "0.058", "0.100", "0.20", "nan"
    ]  # fmt: skip
    assert lines[3].split()[:4] == ["2975.8", "1.1x", "1", "0.200"]
    assert len(lines) == 5  # the fit point is not shown; then the footnote
    assert period_table([point("fit", 0.1)]) == ""
    # The simulated lab's figures beside the lab's, by load and limit; "nan" where none.
    lines = period_table(points, {(2975.8, 0.0): (0.091, 0.37, 0.031)}).splitlines()
    assert lines[2].split()[-3:] == ["0.091", "0.37", "0.031"]
    assert lines[3].split()[-3:] == ["nan", "nan", "nan"]
    assert "sim:" in lines[-1]


def test_the_report_table_reads_a_residual_from_the_series_of_an_older_record() -> None:
    from meshsim.calibrate.period_cpu import period_table

    # 6 ms a period beside 30 us a request, and 0.5 ms more in every other period pair.
    n = [300, 340, 310, 280, 330, 290] * 5
    extra = [0.5, 0.5, 0.0, 0.0] * 7 + [0.5, 0.5]
    cpu = [6.0 + 0.03 * k + e for k, e in zip(n, extra, strict=True)]
    recorded = {"cpu_cv": 0.0, "requests_cv": 0.0, "poisson_cv": 0.0, "cpu_per_request_cv": 0.0,
                "lag1": 0.0, "cpu_ms_series": cpu, "requests_series": n}  # fmt: skip
    point = {"role": "held_out", "config": "plain-ka-f0", "rps": 3000.0, "cpu_limit": None,
             "period_cpu": {"server_sidecar": recorded}}  # fmt: skip
    row = period_table([point]).splitlines()[1].split()
    again = figures(np.asarray(cpu) * 1e-3, np.asarray(n, dtype=float))
    assert again is not None
    assert again["residual_cv"] > 0.01
    assert row[3] == f"{again['cpu_cv']:.3f}"
    assert row[-1] == f"{again['residual_cv']:.3f}"


def test_only_the_periods_with_answers_count() -> None:
    # No answer in the first two periods (the connections being set up) nor in the last two
    # (the drain): the whole periods inside the span of the answers are what is measured
    # (here the 8 between the first answer, just after period 2 began, and the last).
    cpu = [1.0, 1.0] + [30.0, 40.0] * 5 + [1.0, 1.0]
    counts = [0, 0] + [300] * 10 + [0, 0]
    f = _figures(cpu, counts)
    assert f is not None
    assert f["periods"] == 8
    assert f["requests_cv"] == pytest.approx(0.0, abs=1e-9)
    assert f["cpu_per_request_cv"] == pytest.approx(5 / 35, abs=1e-4)


def test_the_warm_ups_answers_do_not_start_the_loads_periods() -> None:
    """The access log holds the warm-up's answers before the load's start, and the load's
    first answer comes 25 ms after it (its connections' set-up): the period it falls in is
    short and is left out, so twelve steady periods give ten whole ones, not eleven with a
    low first count."""
    counts = [300] * 12
    answered = [T0 - 2.0 + 0.001 * i for i in range(500)]  # the warm-up, 2 s before
    # The load, set up in 25 ms: [T0, T0 + 0.1) holds 225 of its answers, the others 300.
    answered += [t + 0.025 for t in _answered(counts)]
    end = T0 + 0.1 * len(counts) + 0.025
    f = period_figures(_samples([30.0] * 13), "server_sidecar", answered, T0, end)
    assert f is not None
    assert f["periods"] == 11
    assert f["requests_cv"] == pytest.approx(0.0, abs=1e-9)


def test_a_points_record_keeps_the_periods_beside_their_figures() -> None:
    from meshsim.calibrate.period_cpu import measure

    cpu_ms, counts = [30.0, 45.0, 30.0] * 4, [300] * 12
    end = T0 + 0.1 * len(cpu_ms)
    out = measure(_samples(cpu_ms), {"server_sidecar": _answered(counts)}, T0, end)
    rec = out["server_sidecar"]
    # The whole periods between the first and the last answer: the second to the eleventh.
    assert rec["cpu_ms_series"] == pytest.approx(cpu_ms[1:11])
    assert rec["requests_series"] == counts[1:11]
    assert rec["cpu_cv"] == _figures(cpu_ms, counts)["cpu_cv"]  # type: ignore[index]


def test_the_report_says_why_a_model_has_no_drift() -> None:
    from meshsim.calibrate.throttled_report import period_lines

    figures = {"cpu_cv": 0.1, "requests_cv": 0.06, "poisson_cv": 0.058,
               "cpu_per_request_cv": 0.1, "lag1": 0.2}  # fmt: skip
    held = {"role": "held_out", "config": "plain-ka-f0", "rps": 2975.8, "cpu_limit": None,
            "period_cpu": {"server_sidecar": figures}}  # fmt: skip
    fitted = {**held, "role": "fit"}
    drift = {"cv": {"value": 0.079}, "time_constant_ms": {"value": 603.0}}
    for points, estimates, said in (
        ([held, fitted], {"cpu_drift": drift}, "drifts with cv 0.079 and a time constant of 603"),
        ([held, fitted, fitted], {"cpu_drift": None}, "at the 2 fit points whose periods"),
        ([held, {**fitted, "period_cpu": None}], {"cpu_drift": None}, "its record predates"),
    ):
        text = "\n".join(period_lines({"points": points, "estimates": estimates}, []))
        assert said in text
