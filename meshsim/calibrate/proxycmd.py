"""Any proxy process as the lab's sidecars: ``meshsim calibrate --proxy-cmd "CMD ..."``.

The command is a template. The lab starts it twice per configuration, as the client
sidecar and as the server sidecar, each pinned to its core like meshsim's own proxy, with
these placeholders filled in:

========== =================================================================================
``{listen}``    ``127.0.0.1:PORT`` the proxy must listen on (plain HTTP/1.1, or mTLS when
                ``{mtls}`` is ``on`` and ``{role}`` is ``inbound``)
``{upstream}``  ``127.0.0.1:PORT`` it must forward to (the server sidecar, or the echo server)
``{role}``      ``outbound`` (client sidecar: with mTLS it originates TLS to the upstream) or
                ``inbound`` (server sidecar: with mTLS it terminates TLS, client certificates
                required)
``{mtls}``      ``on`` or ``off``
``{cert}``      the workload certificate (PEM), issued by the lab's throw-away CA
``{key}``       its private key (PKCS#8 PEM; ECDSA P-256, or RSA 2048 with ``--key-type``)
``{ca}``        the CA certificate (PEM) that signs both sidecars' certificates
``{keepalive}`` ``on`` or ``off``: whether to keep upstream connections open between requests
``{workdir}``   an empty directory of the sidecar's own, for generated configuration files
========== =================================================================================

Which configurations of the grid are measured follows from the placeholders used: the mTLS
ones only with ``{mtls}`` (and then ``{cert}``, ``{key}``, ``{ca}`` and ``{role}`` are
required), keep-alive off only with ``{keepalive}``. A black box has no synthetic-filter
knob, so the filter configurations are never measured. ``{listen}`` and ``{upstream}`` are
required. The template is split like a shell command line (:func:`shlex.split`) before the
placeholders are filled in, so a path with spaces stays one argument; no shell runs it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshsim.errors import MeshsimError

PLACEHOLDERS = ("listen", "upstream", "role", "mtls", "cert", "key", "ca", "keepalive", "workdir")
REQUIRED = ("listen", "upstream")
MTLS_NEEDS = ("cert", "key", "ca", "role")
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ProxyCommand:
    """A validated command template (see the module docstring)."""

    template: str
    argv: tuple[str, ...]
    used: frozenset[str]

    @staticmethod
    def parse(template: str) -> ProxyCommand:
        """Check the template: known, well-formed placeholders, the required ones present,
        and a program that exists. Raises :class:`MeshsimError` naming what is wrong."""
        where = f"--proxy-cmd {template!r}"
        try:
            argv = tuple(shlex.split(template))
        except ValueError as exc:
            raise MeshsimError(f"{where}: cannot split into arguments: {exc}") from None
        if not argv:
            raise MeshsimError(f"{where}: empty command")
        used: set[str] = set()
        for arg in argv:
            try:
                fields = [
                    f for _lit, f, _spec, _conv in string.Formatter().parse(arg) if f is not None
                ]
            except ValueError as exc:
                raise MeshsimError(
                    f"{where}: argument {arg!r}: {exc} (write a literal brace as {{{{ or }}}})"
                ) from None
            for f in fields:
                if f not in PLACEHOLDERS:
                    raise MeshsimError(
                        f"{where}: unknown placeholder {{{f}}} in {arg!r}; expected "
                        + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                    )
                used.add(f)
        missing = [p for p in REQUIRED if p not in used]
        if missing:
            raise MeshsimError(
                f"{where}: the template must use " + " and ".join(f"{{{p}}}" for p in missing)
            )
        tls_files = {"cert", "key", "ca"} & used
        if "mtls" in used:
            lacking = [p for p in MTLS_NEEDS if p not in used]
            if lacking:
                raise MeshsimError(
                    f"{where}: {{mtls}} needs "
                    + ", ".join(f"{{{p}}}" for p in lacking)
                    + " too (the certificates, and which side originates or terminates TLS)"
                )
        elif tls_files:
            raise MeshsimError(
                f"{where}: {', '.join(f'{{{p}}}' for p in sorted(tls_files))} without "
                "{mtls}: the lab measures plain and mTLS configurations with the same "
                "command, and {mtls} (on/off) tells the proxy which one it is"
            )
        if "{" in argv[0] or "}" in argv[0]:
            raise MeshsimError(f"{where}: the program itself ({argv[0]!r}) cannot be a placeholder")
        if _program(argv[0]) is None:
            raise MeshsimError(
                f"{where}: program {argv[0]!r} not found (not on PATH, or not an executable file)"
            )
        return ProxyCommand(template, argv, frozenset(used))

    @property
    def mtls(self) -> bool:
        return "mtls" in self.used

    @property
    def keepalive_knob(self) -> bool:
        return "keepalive" in self.used

    @property
    def program(self) -> str:
        return _program(self.argv[0]) or self.argv[0]

    def render(self, **values: str) -> list[str]:
        """The argument vector with the placeholders filled in (unused values ignored)."""
        argv = [a.format(**values) for a in self.argv]
        argv[0] = self.program
        return argv


def _program(name: str) -> str | None:
    if os.sep in name:
        p = Path(name)
        return str(p.absolute()) if p.is_file() and os.access(p, os.X_OK) else None
    return shutil.which(name)


def free_port() -> int:
    """A loopback port nothing listens on now (the command binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _child_setup(cpu: int | None) -> None:
    """In the child before exec: pin to the core (threads inherit it) and ask for SIGTERM
    when the lab dies, so that no proxy outlives it."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """SIGTERM ``proc`` if it still runs, and SIGKILL it if it has not exited ``grace_s``
    later; either way it is reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from every process's parent in ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


class CommandNode:
    """One sidecar started from the command template: the lab's ``_Node`` interface."""

    log = None  # no access log: a black box's CPU is known per process, not per request

    def __init__(
        self, name: str, argv: list[str], cpu: int | None, port: int, output: Path
    ) -> None:
        self.name = name
        self.cpu = cpu
        self.port = port
        self.output = output
        with output.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _child_setup(cpu),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise MeshsimError(
                    f"{name} ({shlex.join(argv)}) exited with status "
                    f"{self.proc.returncode} before listening on port {port}:\n" + self._tail()
                )
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise MeshsimError(
                        f"{name} ({shlex.join(argv)}) is not listening on "
                        f"port {port} after {START_TIMEOUT_S:g} s:\n" + self._tail()
                    ) from None
                time.sleep(0.05)
        self.tree = process_tree(self.proc.pid)

    def _tail(self) -> str:
        try:
            return self.output.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """The process tree now (a proxy may fork workers after it starts listening)."""
        return process_tree(self.proc.pid) if self.proc.poll() is None else []

    def new_cpu_samples(self) -> list[float]:
        return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            tree = self.pids()
            stop_process(self.proc)
            for pid in tree[1:]:  # workers that outlived their master
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


__all__ = [
    "PLACEHOLDERS",
    "CommandNode",
    "ProxyCommand",
    "free_port",
    "process_tree",
    "stop_process",
]
