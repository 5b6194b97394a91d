"""What compiling the simulator's hot modules with mypyc would buy (issue 17, item 2: an
optional build, only if the numbers justify it). Not part of any install.

It copies the committed tree (``git archive HEAD``) to a scratch directory, makes the two
changes mypyc needs there (explicit ``__init__`` signatures for ``L7Proxy`` and ``Ztunnel``,
whose ``super().__init__(*args, **kw)`` compiled code rejects; ``Proxy`` and ``L7Proxy``
open to interpreted subclasses, the gateways' and the ingress controller's), compiles
:data:`MODULES` with ``python -m mypyc`` (mypy's compiler and a C compiler: a developer's
machine, not a user's), then measures both trees as benchmarks/engine_scaling.py does
(each run beside the bare simpy loop, in its own process, CPU time, medians) and checks
that both give the same summary.json for a few shipped scenarios.

    python benchmarks/mypyc_trial.py [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODULES = [
    "meshsim/sim/uncontended.py",
    "meshsim/sim/engine.py",
    "meshsim/sim/workload.py",
    "meshsim/sim/recorder.py",
    "meshsim/sim/dataplanes/",
]
POINTS = [
    ("none", 1),
    ("none", 2),
    ("istio", 1),
    ("istio", 2),
    ("linkerd", 1),
    ("linkerd", 2),
    ("istio-ambient", 1),
    ("istio-ambient", 2),
]
SCENARIOS = ["bookinfo", "emojivoto", "online-boutique", "ingress-bookinfo"]

_PATCHES: dict[str, list[tuple[str, str]]] = {
    "meshsim/sim/dataplanes/routing.py": [
        (
            "        *args: Any,\n        rng: np.random.Generator,\n"
            "        resilience: Resilience,\n        **kw: Any,\n    ) -> None:\n"
            "        super().__init__(*args, **kw)\n",
            "        env: Any, name: str, kind: str, model: Any, node: Any, threads: int, *,\n"
            "        rng: np.random.Generator, resilience: Resilience, stealing: bool,\n"
            "        pick: Any, pod: Any = None, telemetry: bool = True,\n"
            "        wasm_filters: int = 0, cpu_factor: Any = None,\n    ) -> None:\n"
            "        super().__init__(env, name, kind, model, node, threads, stealing=stealing,\n"
            "            pick=pick, pod=pod, telemetry=telemetry, wasm_filters=wasm_filters,\n"
            "            cpu_factor=cpu_factor)\n",
        ),
        (
            "class L7Proxy(Proxy):",
            "@mypyc_attr(allow_interpreted_subclasses=True)\nclass L7Proxy(Proxy):",
        ),
        ("import numpy as np\n", "import numpy as np\nfrom mypy_extensions import mypyc_attr\n"),
    ],
    "meshsim/sim/dataplanes/ambient.py": [
        (
            "    def __init__(self, *args: Any, **kw: Any) -> None:\n"
            "        super().__init__(*args, **kw)\n"
            "        self.endpoint_view",
            "    def __init__(\n"
            "        self, env: Any, name: str, kind: str, model: Any, node: Any,\n"
            "        threads: int, *, stealing: bool, pick: Any, cpu_factor: Any = None,\n"
            "    ) -> None:\n"
            "        super().__init__(env, name, kind, model, node, threads, stealing=stealing,\n"
            "            pick=pick, cpu_factor=cpu_factor)\n"
            "        self.endpoint_view",
        ),
    ],
    "meshsim/sim/dataplanes/proxy.py": [
        ("class Proxy:", "@mypyc_attr(allow_interpreted_subclasses=True)\nclass Proxy:"),
        ("import simpy\n", "import simpy\nfrom mypy_extensions import mypyc_attr\n"),
    ],
}

_POINT = """
import json, sys, time
sys.path.insert(0, sys.argv[4] + "/benchmarks")
from bare_simpy import Shape, bare_run
from engine_scaling import scenario_of
from meshsim.sim.engine import Simulation
mesh, hops, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shape = Shape(rate_rps=1000.0, hops=hops, duration_s=3.0)
ours, bare = [], []
for _ in range(k):
    sim = Simulation(scenario_of(shape, mesh), mesh, 1)
    c = time.process_time(); sim.run(); ours.append(time.process_time() - c)
    n = sum(w.sent for w in sim.workloads)
    c = time.process_time(); nb = bare_run(shape); bare.append(time.process_time() - c)
ours.sort(); bare.sort()
m, b = ours[k // 2], bare[k // 2]
print(json.dumps({"us_per_request": m / n * 1e6, "over_bare": (n / m) / (nb / b)}))
"""


def _tree(dest: Path) -> None:
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    # The editable install maps these subpackages to the repository; map them here too.
    for link, target in (("cli", "../cli"), ("_models", "../models"),
                         ("_templates", "../reports/templates")):  # fmt: skip
        (dest / "meshsim" / link).symlink_to(target)


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def _point(tree: Path, mesh: str, hops: int, repeats: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _POINT, mesh, str(hops), str(repeats), str(tree)],
        cwd=tree, env=_env(tree), check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _summary_hash(tree: Path, scenario: str, out: Path) -> str:
    subprocess.run(
        [sys.executable, "-m", "meshsim", "run", f"scenarios/{scenario}.yaml", "--out",
         str(out), "--duration-s", "12", "-q", "-j", "1"],
        cwd=tree, env=_env(tree), check=True, capture_output=True,
    )  # fmt: skip
    doc = json.loads((out / "summary.json").read_text())
    doc.pop("meshsim_version", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="build in DIR and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="meshsim-mypyc-"))
    plain, compiled = work / "plain", work / "compiled"
    for tree in (plain, compiled):
        tree.mkdir(parents=True)
        _tree(tree)
    for name, patches in _PATCHES.items():
        path = compiled / name
        text = path.read_text()
        for old, new in patches:
            if text.count(old) != 1:
                sys.exit(f"{name}: the code mypyc needs changed has moved ({old[:40]!r}...)")
            text = text.replace(old, new)
        path.write_text(text)
    build = subprocess.run(
        [sys.executable, "-m", "mypyc", *MODULES], cwd=compiled, env=_env(compiled),
        capture_output=True, text=True,
    )  # fmt: skip
    if build.returncode != 0:
        sys.exit(f"mypyc failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
    print(f"compiled {', '.join(MODULES)} in {compiled}")
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; CPU time, median of {args.repeats}")
    print(f"{'mesh':>14s} hops {'us/req':>8s} {'compiled':>9s} {'over bare':>10s} {'compiled':>9s}")
    for mesh, hops in POINTS:
        a = _point(plain, mesh, hops, args.repeats)
        b = _point(compiled, mesh, hops, args.repeats)
        print(
            f"{mesh:>14s} {hops:4d} {a['us_per_request']:8.1f} {b['us_per_request']:9.1f} "
            f"{a['over_bare']:9.2f}x {b['over_bare']:8.2f}x"
        )
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}")
    for scenario in SCENARIOS:
        ha = _summary_hash(plain, scenario, work / "runs" / "plain" / scenario)
        hb = _summary_hash(compiled, scenario, work / "runs" / "compiled" / scenario)
        print(f"  {scenario}: summary.json {'identical' if ha == hb else 'DIFFERS'} ({ha})")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
