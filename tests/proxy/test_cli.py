"""``meshsim proxy``, ``echo``, ``load`` and ``ca`` through click's CliRunner.

Bad input exits 2 with a one-line message and no traceback. The long-running commands are
run in this (main) thread, where their SIGINT handler is installed, and stopped by a
SIGINT that a helper thread sends once it has had an answer from them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from meshsim.cli.main import cli

from meshsim.proxy.echo import bound_port, start_echo

from .helpers import ServerThread

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_exit_2(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def run_until_answered(args: list[str], port: int, path: str = "/") -> tuple[Result, int, bytes]:
    """Invoke a serving command; GET ``path`` on ``port`` from a thread, then SIGINT it."""
    answer: dict[str, object] = {}

    def poke() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", path)
                resp = conn.getresponse()
                answer["status"], answer["body"] = resp.status, resp.read()
                conn.close()
                break
            except OSError:
                time.sleep(0.05)
        # An answer means the loop runs main() past its start: the handler is in place.
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=poke, daemon=True)
    thread.start()
    result = CliRunner().invoke(cli, args)
    thread.join(20)
    return result, int(answer.get("status", 0)), bytes(answer.get("body", b""))  # type: ignore[call-overload]


# -- meshsim proxy ---------------------------------------------------------------------
def test_proxy_cli_serves_and_drains_on_sigint(tmp_path: Path) -> None:
    async def start() -> tuple[int, list[object]]:
        server, _ = await start_echo(seed=1)
        return bound_port(server), [server]

    port, admin = free_port(), free_port()
    log = tmp_path / "access.jsonl"
    with ServerThread(start) as echo:
        result, status, body = run_until_answered(
            [
                "proxy",
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                f"127.0.0.1:{echo.port}",
                "--admin",
                f"127.0.0.1:{admin}",
                "--access-log",
                str(log),
                "--drain-s",
                "1",
            ],
            port,
            "/?size=7",
        )
    assert result.exit_code == 0, result.output
    assert (status, body) == (200, b"x" * 7)
    assert "draining" in result.output
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["status"] for e in entries] == [200]  # flushed at stop


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--listen", "bad", "--upstream", "127.0.0.1:1"], ["bad --listen 'bad'"]),
        (["--listen", "127.0.0.1:0", "--upstream", "nope"], ["bad --upstream 'nope'"]),
        (["--listen", "127.0.0.1:0"], ["give --listen and --upstream together"]),
        ([], ["give --listen HOST:PORT --upstream HOST:PORT, or --config FILE"]),
        (
            ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--admin", "x"],
            ["bad --admin 'x'"],
        ),
        (
            [
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1",
                "--tls-dir",
                "/nonexistent",
                "--mode",
                "inbound",
            ],
            ["cannot read /nonexistent/ca.pem"],
        ),
        (["--config", "/nonexistent.yaml"], ["does not exist"]),
        (
            [
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1",
                "--access-log",
                "/nonexistent/dir/log",
            ],
            ["cannot open access log"],
        ),
    ],
)
def test_proxy_cli_bad_input(args: list[str], needles: list[str]) -> None:
    clean_exit_2(CliRunner().invoke(cli, ["proxy", *args]), *needles)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("listeners: [{listen: x, upstreams: [127.0.0.1:1]}]", "listeners[0].listen 'x'"),
        ("listeners: [{listen: '127.0.0.1:0'}]", "missing 'upstreams'"),
        ("limits: {max_headers: -1}\nlisteners: []", "limits.max_headers"),
        ("listeners: [\n  - {", "invalid YAML"),
        ("cpu_sample_every: -2", "cpu_sample_every"),
        (
            "listeners: [{listen: '127.0.0.1:0', upstreams: ['127.0.0.1:1'], "
            "traffic: {split: {v1: 1}}}]",
            "subsets",
        ),
        (
            "listeners: [{listen: '127.0.0.1:0', upstreams: ['127.0.0.1:1'], "
            "traffic: {load_balancer: fastest}}]",
            "load_balancer",
        ),
    ],
)
def test_proxy_cli_bad_config(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    clean_exit_2(CliRunner().invoke(cli, ["proxy", "--config", str(path)]), needle)


def test_proxy_cli_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["proxy", "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:1"]
        )
    clean_exit_2(result, "cannot listen")


# -- meshsim echo ----------------------------------------------------------------------
def test_echo_cli_serves_until_sigint() -> None:
    port = free_port()
    result, status, body = run_until_answered(
        ["echo", "--listen", f"127.0.0.1:{port}", "--seed", "1"], port, "/?size=3&status=201"
    )
    assert result.exit_code == 0, result.output
    assert (status, body) == (201, b"xxx")
    assert f"echo listening on 127.0.0.1:{port}" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--listen", "127.0.0.1:99999"], "bad --listen '127.0.0.1:99999'"),
        (["--listen", "nope"], "bad --listen 'nope'"),
        (["--concurrency", "0"], "--concurrency"),
        (["--seed", "x"], "--seed"),
    ],
)
def test_echo_cli_bad_input(args: list[str], needle: str) -> None:
    clean_exit_2(CliRunner().invoke(cli, ["echo", *args]), needle)


def test_echo_cli_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["echo", "--listen", f"127.0.0.1:{port}"])
    clean_exit_2(result, "cannot listen")


# -- meshsim load ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ftp://nowhere", "--rps", "10"], "bad URL"),
        (["http://127.0.0.1:1/", "--rps", "10", "--duration-s", "1"], "cannot connect"),
        (["http://127.0.0.1:1/", "--rps", "-3"], "--rps"),
        (["http://127.0.0.1:1/", "--rps", "1", "--connections", "0"], "--connections"),
        (["http://127.0.0.1:1/", "--rps", "1", "--duration-s", "0"], "--duration-s"),
        (["http://127.0.0.1:1/"], "--rps"),
        (["http://[::1/", "--rps", "1"], "bad URL"),
    ],
)
def test_load_cli_bad_input(args: list[str], needle: str) -> None:
    clean_exit_2(CliRunner().invoke(cli, ["load", *args]), needle)


def test_load_cli_prints_a_table() -> None:
    async def start() -> tuple[int, list[object]]:
        server, _ = await start_echo(seed=1)
        return bound_port(server), [server]

    with ServerThread(start) as echo:
        result = CliRunner().invoke(
            cli, ["load", f"http://127.0.0.1:{echo.port}/", "--rps", "40", "--duration-s", "0.5"]
        )
    assert result.exit_code == 0, result.output
    assert "corrected" in result.output


# -- meshsim ca ------------------------------------------------------------------------
def test_ca_cli_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir = tmp_path / "ca"
    assert runner.invoke(cli, ["ca", "init", "--dir", str(ca_dir)]).exit_code == 0
    clean_exit_2(runner.invoke(cli, ["ca", "init", "--dir", str(ca_dir)]), "already holds a CA")
    clean_exit_2(
        runner.invoke(
            cli,
            [
                "ca",
                "issue",
                "--ca-dir",
                str(ca_dir),
                "--sa",
                "a",
                "--out",
                str(tmp_path / "w"),
                "--lifetime-s",
                "0",
            ],
        ),
        "--lifetime-s",
    )
    clean_exit_2(
        runner.invoke(cli, ["ca", "issue", "--ca-dir", str(ca_dir), "--out", str(tmp_path)]),
        "--sa",
    )
    clean_exit_2(runner.invoke(cli, ["ca", "init"]), "--dir")
    clean_exit_2(runner.invoke(cli, ["ca", "rotate"]), "No such command")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "ca.pem").write_text("not a certificate")
    (tmp_path / "junk" / "ca-key.pem").write_text("not a key")
    result = runner.invoke(
        cli,
        [
            "ca",
            "issue",
            "--ca-dir",
            str(tmp_path / "junk"),
            "--sa",
            "a",
            "--out",
            str(tmp_path / "w"),
        ],
    )
    clean_exit_2(result)
