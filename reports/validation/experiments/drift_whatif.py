import json, sys
from pathlib import Path
from meshsim.api import run_scenario
from meshsim.calibrate.calibration import load_fit
from meshsim.calibrate.lab_scenario import throttling
from meshsim.calibrate.throttle import lab_point, scenario
from meshsim.results.summary import build_summary
from meshsim.scenario import from_dict

model = Path(sys.argv[1])
fit = load_fit(model)
drift = {"fast_factor": 0.9, "slow_factor": 1.1, "slow_share": 0.5, "slow_dwell_ms": 150}
for rps, limits in ((1190.3, (None, 227, 167)), (2975.8, (None, 467, 342))):
    point = lab_point(fit, rps)
    for limit in limits:
        row = [rps, limit]
        for d in (None, drift):
            doc = scenario(model, fit, point, limit, duration_s=10.0)
            if d:
                doc["cluster"]["host_speed"] = d
            run = build_summary(run_scenario(from_dict(doc)))["runs"]["istio"]
            lat = run["workloads"]["load"]["latency_ms"]
            t = throttling(run, doc)
            share = t["nr_throttled"] / t["nr_periods"] if t["nr_periods"] else 0
            row += [round(lat["p50"], 3), round(lat["p99"], 2), round(share, 3)]
        print(
            row,
            "meas p50 %.3f p99 %.2f" % (point["latency_ms"]["p50"], point["latency_ms"]["p99"])
            if limit is None
            else "",
            flush=True,
        )
