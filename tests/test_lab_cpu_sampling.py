"""The lab's sidecars time the CPU of one request in 16 by default, and of every request when
the lab asks (``Lab(cpu_sample_every=1)``: an experiment's timeline of the sidecars' CPU per
request, reports/validation/experiments/during_load_speed.py)."""

from __future__ import annotations

import time
from pathlib import Path

from meshsim.calibrate.lab import _Node
from meshsim.proxy.loadgen import LoadSpec, run_load


def _timed_share(tmp_path: Path, every: list[str]) -> tuple[int, int]:
    log = tmp_path / f"access{len(every)}.log"
    echo = _Node("echo", ["echo"], None, None)
    proxy = _Node("proxy", ["proxy", "--upstream", f"127.0.0.1:{echo.port}", *every], None, log)
    try:
        url = f"http://127.0.0.1:{proxy.port}/"
        run_load(LoadSpec(url=url, rps=200, connections=1, duration_s=0.5, drain_s=1.0))
        time.sleep(0.05)
    finally:
        proxy.stop()  # flushes the access log
        echo.stop()
    samples = proxy.new_log_samples()
    return len(samples.cpu_us), len(samples.duration_ms)


def test_every_request_is_timed_when_the_lab_asks(tmp_path: Path) -> None:
    timed, answered = _timed_share(tmp_path, ["--cpu-sample-every", "1"])
    assert answered >= 90
    assert timed == answered


def test_one_request_in_sixteen_is_timed_by_default(tmp_path: Path) -> None:
    timed, answered = _timed_share(tmp_path, [])
    assert answered >= 90
    # one read in 16 is timed: each request's head is one read here
    assert abs(timed - answered / 16) <= 1
