#!/usr/bin/env bash
# CI gate on model outputs: Bookinfo and Emojivoto under every mesh, compared with
# benchmarks/baselines/model-outputs.json. Exit 1 when a latency percentile, success
# rate or proxy cost moved beyond the tolerance and outside the replication noise;
# 2 for bad input. The simulator-speed part of the suite is left out (shared CI
# machines); run it with: meshsim bench benchmarks/suites/model-outputs.yaml --only sim-speed
set -euo pipefail
cd "$(dirname "$0")/.."
MESHSIM="${MESHSIM:-.venv/bin/meshsim}"
exec "$MESHSIM" bench benchmarks/suites/model-outputs.yaml --only bookinfo,emojivoto "$@"
