"""``meshsim lab up``: echo upstreams behind sidecars, wired by the scenario's call graph."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim.proxy.lab import start_lab
from meshsim.scenario import loads

from .helpers import arun, get_once

pytestmark = pytest.mark.integration

SCENARIO = """
meshsim: 1
name: mini
seed: 3
duration_s: 10
services:
  - name: front
    replicas: 2
    cpu_ms: 0.2
    response_bytes: 100
    calls: [{service: back}]
  - name: back
    cpu_ms: {dist: exponential, mean: 0.2}
    response_bytes: 20
    versions:
      - {name: v1, replicas: 1}
      - {name: v2, replicas: 1, calls: []}
workloads:
  - {name: users, target: front, rate_rps: 10}
traffic:
  - service: back
    retries: {attempts: 2, retry_on: [5xx]}
"""


def test_lab_wires_sidecars_and_serves_each_service() -> None:
    scenario = loads(SCENARIO)

    async def main() -> None:
        lab = await start_lab(scenario, delay="fixed")
        try:
            names = [r.name for r in lab.replicas]
            assert names == ["front-v1-0", "front-v1-1", "back-v1-0", "back-v2-0"]
            front = lab.replicas[0]
            assert front.knobs == "delay=0.2ms&size=100"
            assert list(front.outbound) == ["back"]
            assert lab.replicas[2].outbound == {}  # back makes no calls
            # Through the edge: the service's body size, from one of its replicas.
            r = await get_once(lab.edge["front"])
            assert (r.status, len(r.body)) == (200, 100)
            # One hop of the call graph: front's sidecar -> back's sidecars -> back's echo.
            r = await get_once(front.outbound["back"])
            assert (r.status, len(r.body)) == (200, 20)
            assert r.header(b"x-request-id") is None  # echo does not reflect headers
            # The traffic rule for back is in force on the caller's outbound listener.
            r = await get_once(front.outbound["back"], "/?status=503")
            assert r.status == 503
            served = sum(state.served for _, state in lab.echoes[2:])
            assert served == 1 + 3  # the 200, then the 503 tried three times
        finally:
            await lab.stop(1.0)

    arun(main)


def test_lab_with_mtls() -> None:
    scenario = loads(SCENARIO)

    async def main() -> None:
        lab = await start_lab(scenario, delay="none", mtls=True)
        try:
            front = lab.replicas[0]
            assert (await get_once(front.outbound["back"])).status == 200
            assert (await get_once(lab.edge["back"])).status == 200
            # An inbound sidecar speaks only TLS: a plaintext client gets no HTTP answer.
            try:
                r = await get_once(lab.replicas[2].inbound_port)
            except ConnectionError:
                return
            assert not r.complete
        finally:
            await lab.stop(1.0)

    arun(main)


def test_lab_up_cli_runs_until_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "mini.yaml"
    path.write_text(SCENARIO)
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshsim", "lab", "up", str(path), "--delay", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        match = re.search(r"service\s+.\s+back\s+.\s+127\.0\.0\.1:(\d+)", text)
        assert match, text
        r = arun(lambda: get_once(int(match.group(1))), timeout=10)
        assert (r.status, len(r.body)) == (200, 20)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "draining" in out
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_lab_up_bad_scenario_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("meshsim: 1\nname: x\n")
    result = CliRunner().invoke(cli, ["lab", "up", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["lab", "up", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    assert "no such file" in missing.output
