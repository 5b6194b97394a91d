"""Calibration end to end: ``meshsim calibrate --quick`` then ``meshsim validate`` (a smoke
test on a shared 2-core machine: the run and its report, not its accuracy), and
``--from-fortio`` on fortio JSON written by ``meshsim load --json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim.models import load_model

# The quick calibration's test is not marked timing: it checks that the lab runs end to end
# and what its record holds, none of the lab's figures against a bound, so it runs beside
# the rest of the suite (on a busy machine the lab's numbers move, not its record). The
# fortio test's model must find the proxy's added latency, which a busy machine can hide.
pytestmark = pytest.mark.integration


@pytest.mark.lab
def test_calibrate_quick_then_validate(tmp_path: Path) -> None:
    out = tmp_path / "quick.yaml"
    r = CliRunner().invoke(cli, ["calibrate", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    model = load_model(out)
    assert model.kind == "envoy-sidecar"
    assert model.worker_threads == 1
    assert all(
        "measurement" in p.source
        or "architecture" in p.source
        or "not " in p.source
        or "counted" in p.source
        or "MODELLING" in p.source
        for p in model.parameters.values()
    )
    fit = json.loads((tmp_path / "quick.fit.json").read_text())
    assert fit["held_out_count"] >= 3
    assert fit["service_time"]["dist"] in ("lognormal", "gamma", "empirical")
    assert fit["machine"]["python"]
    # The proxied held-out points record their sidecars' CPU per 100 ms period (a 1 s load
    # gives about eight periods: a point whose answers span fewer than five has none).
    held = [fit["points"][i] for i in fit["held_out"]]
    periods = [
        (p.get("period_cpu") or {}).get("server_sidecar") for p in held if p["proxied"] and p["rps"]
    ]
    assert any(periods)
    assert all(f["periods"] >= 5 and f["cpu_cv"] > 0 for f in periods if f)
    # The CPU-limited points: both limits at the lowest held-out load where the host lets the
    # lab make a CPU cgroup, else none and the reason why.
    limits = fit["cpu_limits"]
    # Where the host lets it, each component ran in a CPU cgroup of its own; the limited
    # points limit the server sidecar's.
    assert fit["cgroups"].startswith("one per component") == bool(limits["shares"])
    if limits["shares"]:
        assert len(fit["throttled"]) == len(limits["shares"]) == 2
        cgroups = [fit["points"][i]["cgroup"] for i in fit["throttled"]]
        assert all(c["limit_m"] > 0 and c["nr_periods"] > 0 for c in cgroups)
        # Counted over the load, which the whole point's counters (warm-up, probes) contain.
        for c in cgroups:
            assert c["window"] == "load"
            whole = c["whole_point"]
            assert whole["nr_periods"] >= c["nr_periods"]
            assert whole["nr_throttled"] >= c["nr_throttled"]
            assert whole["throttled_s"] >= c["throttled_s"]
    else:
        assert limits["reason"]
        assert not fit["throttled"]
    # The quick grid's 1 s points say little of accuracy (a CPU-limited point whose limit is
    # below what the quick model needs backs up, and its p99 grows with the simulated run:
    # +1019 % once), so what is checked is the run end to end, the goals missed listed: 1 s
    # simulated a point, as long as the lab's loads.
    r = CliRunner().invoke(
        cli, ["validate", str(out), "--json", "--exit-zero", "--duration-s", "1"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # the goals missed go to stderr
    assert doc["rows"]
    assert all(isinstance(f, str) and "exceeds" in f for f in doc["failures"])
    assert any(row["saturation"] for row in doc["rows"])
    limited = [row for row in doc["rows"] if row["cpu_limit_m"] is not None]
    assert len(limited) == len(fit["throttled"])
    assert all("throttled_share" in row["predicted"] for row in limited)
    assert all(Path(p).exists() for p in doc["figures"])
    # (That goals missed exit 1 is tests/test_calibrate_validate_cli.py's, on the committed
    # model: a second validation of this one would add its simulations and check nothing new.)


@pytest.mark.timing
def test_from_fortio_with_meshsim_load_json(tmp_path: Path) -> None:
    from meshsim.calibrate.lab import _Node

    echo = _Node("echo", ["echo"], None, None)
    proxy = _Node("proxy", ["proxy", "--upstream", f"127.0.0.1:{echo.port}"], None, None)
    try:
        files = []
        for rps in (100, 400):
            for label, port in (("baseline", echo.port), ("sidecar", proxy.port)):
                path = tmp_path / f"{label}-{rps}.json"
                r = CliRunner().invoke(
                    cli,
                    [
                        "load",
                        f"http://127.0.0.1:{port}/",
                        "--rps",
                        str(rps),
                        "-c",
                        "4",
                        "--duration-s",
                        "1",
                        "--poisson",
                        "--seed",
                        "1",
                        "--labels",
                        label,
                        "--json",
                        str(path),
                    ],
                )
                assert r.exit_code == 0, r.output
                files.append(path)
    finally:
        proxy.stop()
        echo.stop()
    man = tmp_path / "runs.yaml"
    man.write_text(
        "hops: 1\nworkers: 1\nruns:\n"
        + "".join(
            f"  - {{file: {p.name}, mesh: {str(p.name.startswith('sidecar')).lower()}}}\n"
            for p in files
        )
    )
    for inputs in ([str(p) for p in files], [str(man)]):
        out = tmp_path / "fortio.yaml"
        r = CliRunner().invoke(
            cli,
            ["calibrate", "--out", str(out), *[a for f in inputs for a in ("--from-fortio", f)]],
        )
        assert r.exit_code == 0, r.output
        m = load_model(out)
        r0, r1, _ = m.request_cpu_us(0, 0, mtls=True)
        assert r0 + r1 + 2 * m.hop_latency_us > 0  # the proxy adds latency
