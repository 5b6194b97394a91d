"""The machine's speed at each lab point: a fixed CPU-bound probe, timed on each lab core.

The lab's host is a shared virtual machine whose speed drifts over minutes with nothing else
running: the same CPU-bound loop took 71 to 121 ms from one second to the next, and the echo
upstream (an unchanged program) spent 19.7 to 33.9 us of CPU per request at saturation in
one calibration run. The calibrated model's CPU costs are microseconds of the machine *at
the time of the fit*; a held-out point measured in a faster or slower phase is not the
machine the model describes.

So the lab times :func:`probe` pinned on each of its cores right before and right after each
point's load (the lab is idle then) and records it with the point (``speed``, see
:func:`probe_cores`). The host flips between a fast and a slow state (probe times of about
5.7 and 9.6 ms, 1.7x, as in the loop above) within a second, often between a point's before
and after; the faster of the two is the point's time (:func:`probe_s`), so that a slow phase
at one moment does not count. Nothing is probed during the load: records of 2026-12-03 and
before hold a sampler's probes every 0.1 s inside it (``during``), which timed the lab's own
processes on the shared core as much as the host (see :func:`probe_s`) and, at 0.3 to 0.7 ms
of CPU each, held the core the latency was being measured on.

:func:`reference` is the fit points' median probe time per core, kept in the fit record; a
point's :func:`factors` are its probe time over that reference (above 1: the machine was
slower than during the fit). :func:`scale_model` multiplies every CPU-time
parameter of a model by a factor (:data:`CPU_PARAMETERS`), which is how
:mod:`meshsim.calibrate.validate` predicts a held-out point on the machine as it was then.

The probe is the kind of work the proxy does, in pure Python: parse an HTTP/1.1 request head
(bytes split and partition, header names lowered into a dict), a route record and a response
head joined. Its time is the thread's CPU time (``CLOCK_THREAD_CPUTIME_ID``), the clock the
lab's CPU per request is read on (schedstat), so time spent waiting for the core while
another process runs is not counted as slowness.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar

T = TypeVar("T")

PROBE: Final = "http-head-parse-v1"
"""The probe's name: references and points are comparable only for the same probe."""
ROUNDS: Final = 3000
"""Request heads parsed per repetition (about 5 ms of CPU on the lab's host in its fast state,
10 ms in its slow one)."""
REPEATS: Final = 3
"""Repetitions per core and moment; their median is the probe time (an interrupt or a cold
cache in one repetition does not move it)."""
CPU_PARAMETERS: Final = frozenset(
    {
        # Per-request CPU of a sidecar, by phase (microseconds of CPU on the fit's machine).
        "socket_io_us",
        "payload_cpu_us_per_kib",
        "http_parse_request_us",
        "http_parse_response_us",
        "routing_us",
        "telemetry_us",
        "rbac_us",
        "l7_filter_us",
        "wasm_filter_us",
        "streamed_request_cpu_us",
        # Waking an idle event loop, resuming a preempted one, and a TCP connection end.
        "wakeup_cpu_us",
        "preemption_cpu_us",
        "tcp_connection_cpu_us",
        # TLS: record layer per KiB and per request, handshakes per side.
        "tls_record_cpu_us_per_kib",
        "tls_request_cpu_us",
        "tls_key_exchange_cpu_us",
        "tls_sign_cpu_us",
        "tls_cert_verify_cpu_us",
        "tls_chain_verify_cpu_us",
        "tls_handshake_overhead_cpu_us",
        "tls_resumption_cpu_us",
    }
)
"""The sidecar model's parameters that are CPU time, and so scale with the machine's speed.
Not scaled: hop_latency_us and wakeup_latency_us (loopback transit and the host's latency to
run a woken thread, not CPU; the validation gives each point its own wake-up latency),
request_cpu_cv (a ratio), wakeup_cache_decay_ms (a time constant), counts (worker_threads,
tls_legs, tls_chain_verifications) and memory. The echo's and the load generator's CPU in
the simulated lab are scaled by the validation itself."""

_REQUEST: Final = (
    b"POST /echo HTTP/1.1\r\nHost: lab\r\nUser-Agent: meshsim-loadgen\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"X-Request-Id: 0123456789abcdef01234\r\nAccept: */*\r\n\r\n"
)


def probe_work(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        head, _, _ = _REQUEST.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method, path, version = lines[0].split(b" ")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        route = {"path": path.decode(), "method": method.decode(), "n": i}
        out = b"".join((version, b" 200 OK\r\ncontent-length: ", str(length).encode(), b"\r\n"))
        total += len(out) + len(route)
    return total


def probe(rounds: int = ROUNDS, repeats: int = REPEATS) -> float:
    """Seconds of this thread's CPU for ``rounds`` of the probe's work (median of
    ``repeats``)."""
    times = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        probe_work(rounds)
        times.append((time.thread_time_ns() - t0) * 1e-9)
    return statistics.median(times)


@contextlib.contextmanager
def on_core(core: int) -> Iterator[None]:
    """Run this thread on ``core`` only, then restore its affinity."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def on_each_core(cores: Iterable[int], measure: Callable[[], T]) -> dict[str, T]:
    """``measure()`` pinned on each of ``cores`` in turn, keyed by the core's number as a
    string (JSON object keys); empty where this platform cannot pin a thread."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return {}
    out: dict[str, T] = {}
    for core in sorted(set(cores)):
        with on_core(core):
            out[str(core)] = measure()
    return out


def probe_cores(cores: Iterable[int]) -> dict[str, float]:
    """The probe's time on each of ``cores`` (:func:`on_each_core`)."""
    return on_each_core(cores, probe)


def point_speed(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, Any]:
    """A point's ``speed`` record: per core, the probe's seconds before and after its load."""
    return {
        core: {"before": round(before[core], 7), "after": round(after[core], 7)}
        for core in sorted(set(before) & set(after))
    }


def probe_s(speed: Mapping[str, Any] | None) -> dict[str, float]:
    """A point's probe time per core: the faster of the probes right before and right after
    its load, with the lab idle (empty: not probed).

    Not the samples taken during the load (``during``, in older records): they timed the probe
    on a core the lab's processes share, so they measure those processes as much as the
    host. In run G (2026-12-02) they read 5.8-6.9 ms at fit points of 128 B, 7.8-9.3 ms at
    32 KiB, and fell with the load at 1 KiB (7.0-9.7 ms at 3257 rps, 6.3-7.7 at 14656),
    while the idle probes read 5.3-5.9 ms throughout but for the host's slow phases
    (9-10 ms), which the faster of the two leaves out unless both moments fall in one.
    Scaled by those samples, every held-out prediction of that run was 1-19 % faster than
    its unadjusted one, in step with the load."""
    if not speed:
        return {}
    return {core: min(v["before"], v["after"]) for core, v in speed.items()}


def median_probe_s(speeds: Iterable[Mapping[str, Any] | None]) -> dict[str, float]:
    """Per core, the median of several points' probe times (those that were probed)."""
    by_core: dict[str, list[float]] = {}
    for s in speeds:
        for core, seconds in probe_s(s).items():
            by_core.setdefault(core, []).append(seconds)
    return {core: statistics.median(v) for core, v in sorted(by_core.items())}


def reference(fit_speeds: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The fit record's reference: the fit points' median probe time per core (None when no
    fit point was probed: older records)."""
    speeds = list(fit_speeds)
    seconds = median_probe_s(speeds)
    if not seconds:
        return None
    return {
        "probe": PROBE,
        "seconds": {core: round(s, 7) for core, s in seconds.items()},
        "points": sum(1 for s in speeds if s),
        "method": "median over the fit points of each point's probe time (the faster of "
        "the idle probes right before and after its load), per lab core; "
        "meshsim/calibrate/speed.py",
    }


def fit_reference(fit: Mapping[str, Any]) -> dict[str, Any] | None:
    """A fit record's reference, recomputed from its fit points' probes when it keeps them,
    so that a record made before a change to :func:`probe_s` is read with the current one;
    else the one it stored."""
    fit_speeds = [p.get("speed") for p in fit.get("points") or () if p.get("role") == "fit"]
    if any(fit_speeds):
        return reference(fit_speeds)
    stored: dict[str, Any] | None = fit.get("speed_reference")
    return stored


def factors(seconds: Mapping[str, float], ref: Mapping[str, Any]) -> dict[str, float]:
    """Per core, probe time over the reference's (above 1: slower than during the fit)."""
    ref_s = ref["seconds"]
    return {core: s / ref_s[core] for core, s in seconds.items() if core in ref_s}


def speed_factor(speed: Mapping[str, Any] | None, ref: Mapping[str, Any]) -> float | None:
    """A point's speed factor: the mean of its cores' (None: the point was not probed)."""
    f = factors(probe_s(speed), ref)
    return sum(f.values()) / len(f) if f else None


def scale_model(doc: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """A copy of a model document (the YAML's mapping) with each of :data:`CPU_PARAMETERS`
    that it has multiplied by ``factor`` (its range too, so that the value stays inside);
    every other parameter unchanged."""
    out = copy.deepcopy(dict(doc))
    for name, entry in out.get("parameters", {}).items():
        if name in CPU_PARAMETERS and isinstance(entry, dict):
            entry["value"] = entry["value"] * factor
            if isinstance(entry.get("range"), list):
                entry["range"] = [bound * factor for bound in entry["range"]]
    return out


__all__ = [
    "CPU_PARAMETERS",
    "PROBE",
    "factors",
    "median_probe_s",
    "on_core",
    "on_each_core",
    "point_speed",
    "probe",
    "probe_cores",
    "probe_s",
    "probe_work",
    "reference",
    "scale_model",
    "speed_factor",
]
