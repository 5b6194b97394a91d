"""Which EEVDF rules the lab's kernel follows, from its scheduler trace: replays each core's
two processes' lag from a dump of ``experiments/sched_trace.py`` and, at every wake-up of one
while the other runs, sets the rule's verdict (preempt or wait) beside what the trace shows
(the next switch on that core: the running one leaving runnable for the wakee, or asleep).

    python reports/validation/experiments/sched_trace.py 5336 3 /tmp/trace.pkl
    python reports/validation/experiments/sched_replay.py /tmp/trace.pkl [--keep OUT.json.gz]
    cd reports/validation/experiments
    python sched_replay.py ../passes/2026-12-05-sched-trace-5336.json.gz

(``--keep`` stores the dump's events of the lab's four processes, gzipped JSON, for replaying
without root: reports/validation/passes/ keeps the traces the write-up cites.)

The rules, each a pick as ``pick_eevdf`` makes it (equal weights, the base slice of a
two-CPU kernel, lag clamped to max(2 slices, a tick)):

- ``6.6``: a sleeper leaves with its lag; a wakee preempts if the pick would choose it;
- ``delay``: DELAY_DEQUEUE and DELAY_ZERO (6.12): a sleeper ahead of its share stays on the
  queue until picked (then leaves with no lag) or woken (then requeued, at V if owed);
- ``delay+requeue``: as ``delay``, and a requeued wakee is placed before the running task is
  charged for its current run (``requeue_delayed_entity`` has no ``update_curr``), so the
  running task is past V at the check: meshsim's fair scheduler;
- ``delay+ties``: as ``delay``, with every tie going to the wakee.

A rule that follows the kernel tells the trace's preemptions from its waits; one that does
not, misses. (The trace's timestamps are whole microseconds: near-ties are noise.)
"""

from __future__ import annotations

import gzip
import json
import pickle
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from sched_trace import SWITCH, WAKE, load_window

SLICE_S = 1.4e-3
"""The base slice of the lab's kernel (6.18) with two CPUs: 0.70 ms x (1 + log2 2), its
``se.slice`` (1.5 ms, EEVDF's first releases', gives the same verdicts on the kept traces)."""
LIMIT_S = max(2 * SLICE_S, 4e-3)
RULES = ("6.6", "delay", "delay+requeue", "delay+ties")
PAIRS = {0: ("client_sidecar", "load_generator"), 1: ("server_sidecar", "echo")}


class _Entity:
    def __init__(self) -> None:
        self.v = 0.0
        self.deadline = 0.0
        self.lag = 0.0
        self.on_rq = False
        self.delayed = False
        self.vprot = 0.0


class _Core:
    """One core's run queue of two processes under ``rule``."""

    def __init__(self, rule: str) -> None:
        self.delay = rule != "6.6"
        self.rule = rule
        self.rq: list[_Entity] = []
        self.curr: _Entity | None = None
        self.since = 0.0

    def avg(self) -> float:
        return sum(e.v for e in self.rq) / len(self.rq) if self.rq else 0.0

    def charge(self, t: float) -> None:
        if self.curr is not None:
            self.curr.v += t - self.since
            if self.curr.v >= self.curr.deadline:
                self.curr.deadline = self.curr.v + SLICE_S
        self.since = t

    def eligible(self, e: _Entity) -> bool:
        return e.v <= self.avg() + 1e-15

    def leave(self, e: _Entity, picked: bool = False) -> None:
        lag = 0.0 if len(self.rq) == 1 else max(-LIMIT_S, min(LIMIT_S, self.avg() - e.v))
        e.lag = min(lag, 0.0) if picked else lag
        e.on_rq = e.delayed = False
        self.rq.remove(e)

    def sleep(self, e: _Entity) -> None:
        if self.delay and len(self.rq) > 1 and not self.eligible(e):
            e.delayed = True
        else:
            self.leave(e)

    def pick_delayed(self) -> None:
        """A pick on this core: a delayed entity it reaches leaves."""
        while True:
            best = None
            for e in self.rq:
                if (
                    e is not self.curr
                    and self.eligible(e)
                    and (best is None or e.deadline < best.deadline)
                ):
                    best = e
            if best is None or not best.delayed:
                return
            self.leave(best, picked=True)

    def wake(self, e: _Entity) -> bool | None:
        """Enqueue ``e``; whether it preempts the running one (None: nothing running or
        already queued)."""
        requeued = False
        if e.delayed:
            e.delayed = False
            requeued = True
            if self.avg() - e.v > 0:
                self.rq.remove(e)
                e.v = self.avg() if self.rq else e.v
                e.deadline = e.v + SLICE_S
                self.rq.append(e)
        elif not e.on_rq:
            if self.rq:
                n = len(self.rq)
                e.v = self.avg() - e.lag * (n + 1) / n
            e.deadline = e.v + SLICE_S
            e.on_rq = True
            self.rq.append(e)
        else:
            return None
        c = self.curr
        if c is None:
            return None
        past = (self.rule == "delay+requeue" and requeued) or self.rule == "delay+ties"
        eligible = c.v < self.avg() - 1e-15 if past else self.eligible(c)
        if eligible and c.v < c.vprot:
            return False
        best = c if eligible else None
        for x in self.rq:
            if x is not c and self.eligible(x) and (best is None or x.deadline < best.deadline):
                best = x
        return best is e


def replay(dump: dict[str, Any], core: int, rule: str, wakee: str) -> Counter[tuple[str, str]]:
    """(trace's verdict, rule's verdict) counts for ``wakee``'s wake-ups on ``core``."""
    names: dict[int, str] = dump["names"]
    lo, hi = load_window(dump["client"])
    pair = PAIRS[core]
    runner = pair[0] if wakee == pair[1] else pair[1]
    q = _Core(rule)
    ents: dict[int, _Entity] = {}
    out: Counter[tuple[str, str]] = Counter()
    pending: bool | None = None
    for ts, cpu, ev, rest in dump["events"]:
        if ev == "sched_wakeup":
            m = WAKE.search(rest)
            assert m is not None
            pid = int(m["pid"])
            if int(m["cpu"]) != core or names.get(pid) not in pair:
                continue
            q.charge(ts)
            verdict = q.wake(ents.setdefault(pid, _Entity()))
            curr_name = None if q.curr is None else names.get(_pid_of(ents, q.curr))
            if verdict is not None and curr_name == runner and names.get(pid) == wakee:
                pending = verdict if lo <= ts <= hi else None
        elif ev == "sched_switch" and cpu == core:
            m = SWITCH.search(rest)
            assert m is not None
            prev, nxt, state = int(m["prev"]), int(m["next"]), m["state"]
            q.charge(ts)
            if q.curr is not None and ents.get(prev) is q.curr:
                if not state.startswith("R"):
                    q.sleep(q.curr)
                q.curr = None
            if pending is not None:
                if names.get(prev) == runner and names.get(nxt) == wakee:
                    seen = "preempts" if state.startswith("R") else "waits"
                    out[seen, "preempts" if pending else "waits"] += 1
                pending = None
            q.pick_delayed()
            if names.get(nxt) in pair:
                e = ents.setdefault(nxt, _Entity())
                if not e.on_rq:
                    e.on_rq = True
                    e.deadline = e.v + SLICE_S
                    q.rq.append(e)
                q.curr = e
                e.vprot = e.deadline
    return out


def _pid_of(ents: dict[int, _Entity], e: _Entity) -> int:
    return next(pid for pid, x in ents.items() if x is e)


def load(path: Path) -> dict[str, Any]:
    """A dump of sched_trace.py (pickle) or one kept by ``--keep`` (gzipped JSON)."""
    if path.name.endswith(".json.gz"):
        kept = json.loads(gzip.decompress(path.read_bytes()))
        kept["names"] = {int(pid): name for pid, name in kept["names"].items()}
        kept["events"] = [tuple(e) for e in kept["events"]]
        return kept
    return pickle.loads(path.read_bytes())


def keep(dump: dict[str, Any], out: Path) -> None:
    """The events of the lab's processes (and the load window's log spans), gzipped JSON."""
    names: dict[int, str] = dump["names"]
    pids = {str(pid) for pid in names}
    events = [
        e
        for e in dump["events"]
        if e[2] == "sched_switch" or (WAKE.search(e[3]) or {"pid": ""})["pid"] in pids
    ]
    kept = {"names": names, "events": events, "client": dump["client"]}
    out.write_bytes(gzip.compress(json.dumps(kept).encode(), 9))


def main() -> None:
    dump = load(Path(sys.argv[1]))
    if len(sys.argv) > 3 and sys.argv[2] == "--keep":
        keep(dump, Path(sys.argv[3]))
    lo, hi = load_window(dump["client"])
    requests = sum(1 for start, _end in dump["client"].values() if lo <= start <= hi)
    for core, (runner, wakee) in PAIRS.items():
        for who, on in ((wakee, runner), (runner, wakee)):
            print(f"core {core}: {who} woken while {on} runs")
            for rule in RULES:
                c = replay(dump, core, rule, who)
                seen = c["preempts", "preempts"] + c["preempts", "waits"]
                said = c["preempts", "preempts"] + c["waits", "preempts"]
                right = c["preempts", "preempts"] + c["waits", "waits"]
                total = sum(c.values())
                print(
                    f"  {rule:14s} preempts {said / requests:.3f} a request (trace "
                    f"{seen / requests:.3f}); verdicts right {right / max(total, 1):.0%} of {total}"
                )


if __name__ == "__main__":
    main()
