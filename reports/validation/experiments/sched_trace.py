"""What runs on the lab's cores during a load: the kernel's scheduler trace beside the access logs.

Runs one plain keep-alive load (1 KiB) at RPS for SECONDS with the kernel's ``sched_switch``
and ``sched_wakeup`` events traced (tracefs, clock ``mono``) and prints, over the load alone
(the warm-up before it and the probes around it left out):

- each core's time by process (the lab's four, idle, anything else by name);
- who takes a core from whom: each switch by the state the previous process left in
  (``R``: preempted while runnable, ``S``: asleep);
- how long a woken process waits to run, by what held its core when it woke (not timed for
  a core that was idle: this host's trace has no switch out of the idle task, so a task
  woken on an idle core is taken to run from its wake-up);
- each request's two sidecar spans (the access logs' lines paired by ``x-request-id``) and
  the client sidecar's share split into the way there (client parsed -> server parsed) and
  back (server written -> client written), p50 / p90 / p99 / mean, ms;
- the load generator's latency.

    python reports/validation/experiments/sched_trace.py [RPS [SECONDS [DUMP.pkl]]]

Needs root and tracefs; about 20 s; the lab's cores must be otherwise quiet. DUMP keeps the
events and log lines for other questions.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meshsim.calibrate.lab import Lab, workdir
from meshsim.calibrate.points import LabConfig, Point

TRACING = Path("/sys/kernel/tracing")
LINE = re.compile(r"\[(?P<cpu>\d+)\].*?\s(?P<ts>\d+\.\d+):\s+(?P<ev>sched_\w+):\s+(?P<rest>.*)$")
SWITCH = re.compile(
    r"prev_comm=(?P<pcomm>.*) prev_pid=(?P<prev>\d+) .*prev_state=(?P<state>\S+)"
    r" ==> next_comm=(?P<ncomm>.*) next_pid=(?P<next>\d+)"
)
WAKE = re.compile(r"comm=(?P<comm>.*) pid=(?P<pid>\d+) .*target_cpu=(?P<cpu>\d+)")

Event = tuple[float, int, str, str]


def _write(name: str, value: str) -> None:
    (TRACING / name).write_text(value)


def start_trace() -> None:
    if not (TRACING / "trace").exists():
        os.system(f"mount -t tracefs nodev {TRACING}")
    _write("tracing_on", "0")
    _write("trace", "")
    _write("trace_clock", "mono")
    _write("buffer_size_kb", "65536")
    _write("set_event", "sched:sched_switch\nsched:sched_wakeup\n")
    _write("tracing_on", "1")


def stop_trace() -> list[Event]:
    _write("tracing_on", "0")
    events: list[Event] = []
    with (TRACING / "trace").open() as fh:
        for line in fh:
            m = LINE.search(line)
            if m:
                events.append((float(m["ts"]), int(m["cpu"]), m["ev"], m["rest"]))
    _write("set_event", "")
    _write("trace", "")
    return events


def log_spans(path: Path, offset: int) -> dict[str, tuple[float, float]]:
    """request id -> (parsed, written) on the monotonic clock, from an access log's new lines."""
    shift = time.time() - time.monotonic()
    out = {}
    with path.open("rb") as fh:
        fh.seek(offset)
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("status") == 200:
                end = float(rec["ts"]) - shift
                out[rec["request_id"]] = (end - rec["duration_ms"] / 1000.0, end)
    return out


def load_window(client: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """The load's requests: those after the longest pause in the client's log (the host's
    probes between the warm-up and the load)."""
    starts = np.sort(np.array([v[0] for v in client.values()]))
    k = int(np.argmax(np.diff(starts)))
    return float(starts[k + 1]), max(v[1] for v in client.values())


def run(rps: float, seconds: float) -> dict[str, Any]:
    lab = Lab(workdir())
    try:
        lab.reconfigure(LabConfig())
        client, server = lab.client, lab.server
        assert client is not None
        assert server is not None
        assert client.log is not None
        assert server.log is not None
        names = {client.pids()[0]: "client_sidecar", server.pids()[0]: "server_sidecar"}
        names.update(dict.fromkeys(lab.echo.pids(), "echo"))
        offsets = [log.stat().st_size if log.exists() else 0 for log in (client.log, server.log)]
        start_trace()
        measured = lab.measure(Point(LabConfig(), 1024, rps, 32, True, seconds, "held_out"), 5)
        events = stop_trace()
        # The load generator runs in this process: its threads, and any that ended (the
        # period sampler's) show by this process's name.
        tasks = (int(t) for t in os.listdir("/proc/self/task"))
        names.update(dict.fromkeys(tasks, "load_generator"))
        return {
            "events": events,
            "names": names,
            "client": log_spans(client.log, offsets[0]),
            "server": log_spans(server.log, offsets[1]),
            "latency_ms": measured.latency_ms,
            "achieved_rps": measured.achieved_rps,
            "cpu_us_per_request": measured.process_cpu_us_per_request,
        }
    finally:
        lab.close()


def _name(names: dict[int, str], pid: str, comm: str) -> str:
    p = int(pid)
    return names.get(p) or ("idle" if p == 0 else comm)


def report(d: dict[str, Any]) -> None:
    names: dict[int, str] = d["names"]
    lo, hi = load_window(d["client"])
    events = [e for e in d["events"] if lo <= e[0] <= hi]
    held: dict[int, Counter[str]] = defaultdict(Counter)
    switches: Counter[tuple[int, str, str, str]] = Counter()
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    running: dict[int, tuple[float, str]] = {}
    woken: dict[str, tuple[float, str]] = {}
    for ts, cpu, ev, rest in events:
        if ev == "sched_switch":
            m = SWITCH.search(rest)
            if m is None:
                continue
            prev = _name(names, m["prev"], m["pcomm"])
            nxt = _name(names, m["next"], m["ncomm"])
            if cpu in running:
                held[cpu][running[cpu][1]] += ts - running[cpu][0]
            running[cpu] = (ts, nxt)
            switches[(cpu, prev, m["state"][0], nxt)] += 1
            if nxt in woken:
                t_wake, holder = woken.pop(nxt)
                waits[(nxt, holder)].append(ts - t_wake)
        elif ev == "sched_wakeup":
            m = WAKE.search(rest)
            if m is not None and int(m["pid"]) in names:
                target = int(m["cpu"])
                holder = running.get(target, (0.0, "?"))[1]
                who = names[int(m["pid"])]
                if holder == "idle":
                    # This host's trace has no switch out of the idle task (the wake-up, from
                    # the interrupt that ends the idle, is the last event before the woken
                    # task's own switch out): the woken task runs from its wake-up.
                    held[target]["idle"] += ts - running[target][0]
                    running[target] = (ts, who)
                    switches[(target, "idle", "R", who)] += 1
                else:
                    woken[who] = (ts, holder)
    lat = " / ".join(f"{q} {d['latency_ms'][q]:.3f}" for q in ("p50", "p90", "p99"))
    print(f"load: {d['achieved_rps']:.0f} rps over {hi - lo:.2f} s; load generator {lat} ms")
    for cpu in sorted(held):
        total = sum(held[cpu].values())
        top = ", ".join(f"{k} {v / total:.3f}" for k, v in held[cpu].most_common(6))
        print(f"core {cpu} time: {top}")
    # On-core time per request from the trace, beside the CPU schedstat counted over the point.
    n = sum(1 for c0, _ in d["client"].values() if c0 >= lo)
    on_core = {k: sum(h.get(k, 0.0) for h in held.values()) / n * 1e6 for k in names.values()}
    counted = d.get("cpu_us_per_request", {})
    pairs = [f"{k} {on_core[k]:.1f}/{counted.get(k, float('nan')):.1f}" for k in sorted(on_core)]
    print("us per request, on core (trace) / CPU (schedstat): " + ", ".join(pairs))
    print("switches (core, from, its state, to), count:")
    for key, n in sorted(switches.items(), key=lambda kv: -kv[1])[:16]:
        print(f"  {key}  {n}")
    print("woken -> running, by what held the core at the wake: count, p50 / p90 / p99 us")
    for (who, holder), v in sorted(waits.items()):
        if len(v) >= 20:
            q = np.percentile(np.array(v) * 1e6, [50, 90, 99])
            print(f"  {who:15} while {holder:15} {len(v):6d}  {q[0]:6.1f} {q[1]:6.1f} {q[2]:6.1f}")
    client, server = d["client"], d["server"]
    rows = np.array([
        (server[r][0] - c0, c1 - server[r][1], server[r][1] - server[r][0], c1 - c0)
        for r, (c0, c1) in client.items()
        if r in server and c0 >= lo
    ])  # fmt: skip
    print(f"{len(rows)} requests paired by x-request-id; ms:")
    for i, label in enumerate(("there: client parsed -> server parsed",
                               "back: server written -> client written",
                               "server sidecar's span", "client sidecar's span")):  # fmt: skip
        q = np.percentile(rows[:, i], [50, 90, 99]) * 1e3
        print(f"  {label:40} p50 {q[0]:.3f} p90 {q[1]:.3f} p99 {q[2]:.3f} "
              f"mean {rows[:, i].mean() * 1e3:.3f}")  # fmt: skip


def main(argv: Sequence[str]) -> None:
    rps = float(argv[0]) if argv else 5335.8
    seconds = float(argv[1]) if len(argv) > 1 else 3.0
    d = run(rps, seconds)
    if len(argv) > 2:
        with open(argv[2], "wb") as fh:
            pickle.dump(d, fh)
    report(d)


if __name__ == "__main__":
    main(sys.argv[1:])
