"""The calibration lab leaves no component behind when it is stopped by a signal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshsim.calibrate.cgroup import probe, remove_stale

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux"
    ),
]

_LAB = (
    "import time\n"
    "from meshsim.calibrate.lab import Lab, workdir\n"
    "lab = Lab(workdir())\n"
    "try:\n"
    "    print(lab.echo.proc.pid, flush=True)\n"
    "    time.sleep(60)\n"
    "finally:\n"
    "    lab.close()\n"
)


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, waiting for its (possibly dead) parent's reaper
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_lab_components_stop_with_the_lab(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _LAB], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, sig)
        proc.wait(15)
        assert _gone(child), f"lab component {child} outlived the lab ({sig.name})"
        # Its components' CPU cgroups go with it; after a SIGKILL the next lab removes them
        # (once the components, killed with their parent, have finished exiting).
        support = probe()
        if support.path is not None:
            end = time.monotonic() + 10.0
            while True:
                if sig == signal.SIGKILL:
                    remove_stale(support.path, "meshsim-lab-")
                left = list(support.path.glob(f"meshsim-lab-{proc.pid}-*"))
                if not left or time.monotonic() > end:
                    break
                time.sleep(0.1)
            assert not left, f"the lab's cgroups outlived it ({sig.name})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if not _gone(child, 0.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
