from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from meshsim.errors import MeshsimError
from meshsim.proxy.echo import bound_port, start_echo
from meshsim.proxy.fortio import to_fortio
from meshsim.proxy.loadgen import LoadSpec, measure

from .helpers import Client, ServerThread, arun

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def echo_url(query: str = "") -> AsyncIterator[str]:
    """An echo server on this loop, for the load generator: its URL with ``query``."""
    server, _ = await start_echo(seed=1)
    try:
        yield f"http://127.0.0.1:{bound_port(server)}/{query}"
    finally:
        server.close()


def test_echo_knobs_over_a_socket() -> None:
    async def main() -> None:
        server, _ = await start_echo(seed=1)
        client = await Client.open(bound_port(server))
        r = await client.get("/?size=1024&status=503")
        assert (r.status, len(r.body)) == (503, 1024)
        r = await client.raw(b"POST /?delay=5ms HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert (r.status, r.body) == (200, b"hello")
        r = await client.get("/?delay=banana")
        assert r.status == 400
        assert b"bad duration" in r.body
        await client.close()
        server.close()

    arun(main)


def test_echo_concurrency_limit_queues_requests() -> None:
    async def main() -> None:
        server, state = await start_echo(concurrency=1, seed=1)
        port = bound_port(server)
        clients = [await Client.open(port) for _ in range(3)]
        tasks = [asyncio.ensure_future(c.get("/?delay=50ms")) for c in clients]
        await asyncio.sleep(0.02)
        assert state.in_service == 1
        assert len(state.waiting) == 2
        responses = await asyncio.gather(*tasks)
        assert [r.status for r in responses] == [200, 200, 200]
        assert state.in_service == 0
        assert state.served == 3
        for c in clients:
            await c.close()
        server.close()

    arun(main)


def test_loadgen_sends_the_scheduled_count_and_writes_fortio_json() -> None:
    async def main() -> None:
        async with echo_url("?size=100") as url:
            result = await measure(LoadSpec(url, rps=200, connections=4, duration_s=1.0))
        assert result.scheduled == 200
        assert result.ret_codes[200] == 200
        doc = to_fortio(result)
        assert doc["RequestedQPS"] == "200"
        assert isinstance(doc["ActualDuration"], int)
        hist = doc["DurationHistogram"]
        assert hist["Count"] == 200
        assert hist["Data"][-1]["Percent"] == pytest.approx(100.0)
        assert sum(b["Count"] for b in hist["Data"]) == 200
        assert hist["Max"] < 1.0  # seconds, not microseconds
        assert doc["RetCodes"] == {"200": 200}
        assert doc["Sizes"]["Avg"] == pytest.approx(100, rel=0.01)
        assert {p["Percentile"] for p in hist["Percentiles"]} >= {50.0, 99.0}

    arun(main)


@pytest.mark.timing
def test_loadgen_releases_what_is_due_within_half_a_tick() -> None:
    # A constant 2000 rps is a request every 0.5 ms: one due half a tick (0.5 ms) after the
    # last goes with it, the next after a sleep, so the requests leave in pairs; a sleep that
    # ends late (a busy machine) can only make a release bigger.
    async def main() -> None:
        async with echo_url() as url:
            result = await measure(LoadSpec(url, rps=2000, connections=8, duration_s=1.0))
        assert result.scheduled == 2000
        assert 1.95 <= result.scheduled / result.releases <= 4.0
        # Every release but the first follows a sleep, and each sleep's lateness is kept:
        # a timer counting whole milliseconds fires within about a tick of the time asked.
        assert len(result.release_lateness_s) == result.releases - 1
        assert all(-0.002 < late < 0.05 for late in result.release_lateness_s)

    arun(main)


def test_loadgen_does_not_collect_garbage_while_the_load_runs() -> None:
    # Something in this process keeps allocating containers that stay alive (as the lab's
    # own bookkeeping does): with the collector on, every 700 of them set off a
    # generation-0 collection, ~28 in this second. The allocator also notes, every 10 ms,
    # whether the collector is on and whether a collection ran since its last note.
    notes: list[tuple[float, bool, int]] = []
    runs = [0]

    def seen(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            runs[0] += 1

    async def allocate(kept: list[list[int]]) -> None:
        while True:
            before = runs[0]
            kept.extend([] for _ in range(200))
            notes.append((time.monotonic(), gc.isenabled(), runs[0] - before))
            await asyncio.sleep(0.01)

    async def main() -> None:
        kept: list[list[int]] = []
        async with echo_url() as url:
            gc.callbacks.append(seen)
            allocating = asyncio.ensure_future(allocate(kept))
            try:
                await asyncio.sleep(0.3)  # the allocations with the collector on, first
                called = time.monotonic()
                result = await measure(LoadSpec(url, rps=400, connections=4, duration_s=1.0))
            finally:
                allocating.cancel()
                gc.callbacks.remove(seen)
        assert result.scheduled == 400
        assert len(kept) >= 15_000
        # Well inside the load's second (its connections open in milliseconds), on the
        # monotonic clock: the collector off, and the allocations set off no collection.
        inside = [n for n in notes if called + 0.3 <= n[0] <= called + 0.9]
        assert len(inside) > 30
        assert not any(on for _, on, _ in inside)
        assert sum(n for _, _, n in inside) == 0
        # Before the call the same allocations did set it off, so the test could fail.
        assert any(n for t, on, n in notes if on and t < called)
        assert gc.isenabled()

    arun(main)


def test_a_server_freezes_its_start_up_heap_once_it_is_up() -> None:
    from meshsim.proxy.runner import wait_for_stop_signal

    async def main() -> None:
        waiting = asyncio.ensure_future(wait_for_stop_signal())
        await asyncio.sleep(0)
        waiting.cancel()

    gc.unfreeze()
    try:
        alive = len(gc.get_objects())
        arun(main)
        # Everything alive at start-up (this test process's heap) is out of the
        # collector's generations.
        assert gc.get_freeze_count() >= alive // 2
        assert len(gc.get_objects()) < alive // 2
    finally:
        gc.unfreeze()


def test_a_stop_signal_during_the_start_up_collection_stops_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The servers answer before the heap is frozen; a SIGINT in the collection's time (a
    # large heap on a busy host takes tens of ms) must stop them, not raise in the loop.
    import os
    import signal

    from meshsim.proxy import runner

    monkeypatch.setattr(runner, "freeze_startup_heap", lambda: os.kill(os.getpid(), signal.SIGINT))

    async def main() -> None:
        await asyncio.wait_for(runner.wait_for_stop_signal(), 5.0)

    arun(main)  # returns: neither KeyboardInterrupt nor a timeout


def test_corrected_latency_counts_the_wait_for_a_busy_connection() -> None:
    # One connection, 20 ms service, 100 rps planned: requests queue behind each other, so
    # the corrected latency grows far beyond the service time while uncorrected stays ~20 ms.
    async def main() -> None:
        async with echo_url("?delay=20ms") as url:
            spec = LoadSpec(url, rps=100, connections=1, duration_s=1.0, drain_s=5)
            result = await measure(spec)
        corrected_p90 = result.corrected.get_value_at_percentile(90)
        assert corrected_p90 > 3 * result.uncorrected.get_value_at_percentile(90)
        assert any("could not keep the requested rate" in w for w in result.warnings)

    arun(main)


def test_loadgen_rejects_bad_input() -> None:
    with pytest.raises(MeshsimError, match="bad URL"):
        arun(lambda: measure(LoadSpec("ftp://x/", rps=1)))
    with pytest.raises(MeshsimError, match="connections"):
        arun(lambda: measure(LoadSpec("http://127.0.0.1:1/", rps=1, connections=0)))


def _load_cli() -> click.Command:
    try:
        from meshsim.cli.load import load
    except ModuleNotFoundError:  # the project is not installed in editable mode
        from cli.load import load
    command: click.Command = load
    return command


def test_load_cli_errors_are_clean() -> None:
    runner = CliRunner()
    result = runner.invoke(_load_cli(), ["ftp://nowhere", "--rps", "10"])
    assert result.exit_code == 2
    assert "bad URL" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = runner.invoke(_load_cli(), ["http://127.0.0.1:1/", "--rps", "10", "--duration-s", "1"])
    assert result.exit_code == 2
    assert "cannot connect" in result.output
    result = runner.invoke(_load_cli(), ["http://127.0.0.1:1/", "--rps", "-3"])
    assert result.exit_code == 2
    assert "--rps" in result.output


def test_load_cli_writes_json(tmp_path: Path) -> None:
    async def start() -> tuple[int, list[object]]:
        server, _ = await start_echo(seed=1)
        return bound_port(server), [server]

    out = tmp_path / "run.json"
    with ServerThread(start) as echo:
        result = CliRunner().invoke(
            _load_cli(),
            [
                f"http://127.0.0.1:{echo.port}/",
                "--rps",
                "50",
                "--duration-s",
                "0.5",
                "--poisson",
                "--seed",
                "3",
                "--json",
                str(out),
            ],
        )
    assert result.exit_code == 0, result.output
    assert "corrected" in result.output
    doc = json.loads(out.read_text())
    assert doc["RunType"] == "HTTP"
    assert doc["Poisson"] is True
    assert doc["DurationHistogram"]["Count"] == doc["RetCodes"]["200"]
