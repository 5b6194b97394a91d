"""The calibration lab with compiled proxies: HAProxy (C, one thread) and the Rust reference
sidecar (tokio current-thread, hyper, rustls), through ``meshsim calibrate --proxy-cmd``.

They need the Debian packages that ``.ci/run`` installs (haproxy; cargo and the
librust-*-dev crates); without them they skip and say which is missing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshsim.calibrate.cache_cooling import cold_wakeups
from meshsim.calibrate.proxycmd import free_port
from meshsim.calibrate.stacks import compare_rows
from meshsim.models import load_model

ROOT = Path(__file__).resolve().parents[1]
RUST_DIR = ROOT / "proxies" / "rust-sidecar"
RUST_BIN = RUST_DIR / "target" / "release" / "meshsim-rust-sidecar"
HAPROXY_SIDECAR = ROOT / "proxies" / "haproxy" / "haproxy-sidecar"
PYTHON_SIDECAR = ROOT / "proxies" / "python-sidecar" / "meshsim-sidecar"
RUST_CMD = (
    f"{RUST_BIN} --listen {{listen}} --upstream {{upstream}} --role {{role}} "
    "--mtls {mtls} --cert {cert} --key {key} --ca {ca} --upstream-keepalive {keepalive}"
)
HAPROXY_CMD = (
    f"{HAPROXY_SIDECAR} --listen {{listen}} --upstream {{upstream}} --role {{role}} "
    "--mtls {mtls} --cert {cert} --key {key} --ca {ca} --keepalive {keepalive} "
    "--workdir {workdir}"
)
PYTHON_CMD = (
    f"{PYTHON_SIDECAR} --listen {{listen}} --upstream {{upstream}} --role {{role}} "
    "--mtls {mtls} --cert {cert} --key {key} --ca {ca} --keepalive {keepalive} "
    "--workdir {workdir}"
)
MESHSIM = [sys.executable, "-m", "meshsim"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rust_sidecar() -> Path:
    """The Rust sidecar's binary, built offline from Debian's crates when it is missing."""
    if RUST_BIN.exists():
        return RUST_BIN
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed (apt-get install cargo): Rust sidecar not built")
    if not Path("/usr/share/cargo/registry/hyper-0.14.19").is_dir():
        pytest.skip(
            "Debian's crates are not installed (apt-get install librust-hyper-dev "
            "librust-tokio-dev librust-tokio-rustls-dev librust-rustls-pemfile-dev)"
        )
    subprocess.run([cargo, "build", "--release", "--offline"], cwd=RUST_DIR, check=True)
    return RUST_BIN


@pytest.fixture(scope="module")
def haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return path


def _echo_through(
    template: str, tmp_path: Path, *, mtls: bool, key_type: str = "ecdsa-p256"
) -> bytes:
    """POST a body through client sidecar -> server sidecar -> echo, both sidecars from the
    command template with the lab CA's certificates (keys of ``key_type``); returns the
    response body."""
    from meshsim.calibrate.lab import _Node
    from meshsim.calibrate.proxycmd import CommandNode, ProxyCommand
    from meshsim.proxy.ca import CertificateAuthority

    tls_dir = tmp_path / "tls"
    CertificateAuthority.create("cluster.local", key_type=key_type).issue("default", "t").write(
        tls_dir
    )
    cmd = ProxyCommand.parse(template)
    files = {
        "cert": str(tls_dir / "cert.pem"),
        "key": str(tls_dir / "key.pem"),
        "ca": str(tls_dir / "ca.pem"),
        "mtls": "on" if mtls else "off",
        "keepalive": "on",
    }
    echo = _Node("echo", ["echo"], None, None)
    nodes = []
    try:
        upstream = echo.port
        for role in ("inbound", "outbound"):
            port = free_port()
            work = tmp_path / role
            work.mkdir()
            nodes.append(
                CommandNode(
                    role,
                    cmd.render(
                        listen=f"127.0.0.1:{port}",
                        upstream=f"127.0.0.1:{upstream}",
                        role=role,
                        workdir=str(work),
                        **files,
                    ),
                    None,
                    port,
                    work / "out.log",
                )
            )
            upstream = port
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=10)
        conn.request("POST", "/echo", body=b"hello through two sidecars")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        conn.close()
        return body
    finally:
        for n in nodes:
            n.stop()
        echo.stop()


MODES = [(False, "ecdsa-p256"), (True, "ecdsa-p256"), (True, "rsa-2048")]
MODE_IDS = ["plain", "mtls-ecdsa-p256", "mtls-rsa-2048"]


@pytest.mark.parametrize(("mtls", "key_type"), MODES, ids=MODE_IDS)
def test_rust_sidecar_forwards_through_two_hops(
    rust_sidecar: Path, tmp_path: Path, mtls: bool, key_type: str
) -> None:
    assert (
        _echo_through(RUST_CMD, tmp_path, mtls=mtls, key_type=key_type)
        == b"hello through two sidecars"
    )


@pytest.mark.parametrize(("mtls", "key_type"), MODES, ids=MODE_IDS)
def test_haproxy_sidecar_forwards_through_two_hops(
    haproxy: str, tmp_path: Path, mtls: bool, key_type: str
) -> None:
    assert (
        _echo_through(HAPROXY_CMD, tmp_path, mtls=mtls, key_type=key_type)
        == b"hello through two sidecars"
    )


@pytest.mark.parametrize(("mtls", "key_type"), MODES, ids=MODE_IDS)
def test_python_sidecar_wrapper_forwards_through_two_hops(
    tmp_path: Path, mtls: bool, key_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON", sys.executable)
    assert (
        _echo_through(PYTHON_CMD, tmp_path, mtls=mtls, key_type=key_type)
        == b"hello through two sidecars"
    )


@pytest.mark.slow
@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048"])
def test_lab_handshakes_through_meshsim_proxy_with_each_key_type(key_type: str) -> None:
    """The lab's own sidecars (meshsim's proxy) with certificates of each key type: every
    request over a new mTLS connection is answered, the resumed mode resumes, and a full
    handshake costs the server sidecar more CPU than a resumed one."""
    from cryptography import x509

    from meshsim.calibrate import lab_costs
    from meshsim.calibrate.lab import Lab, workdir
    from meshsim.proxy.ca import key_type_of

    lab = Lab(workdir(), key_type=key_type)
    try:
        cert = x509.load_pem_x509_certificate((lab.tls_dir / "cert.pem").read_bytes())
        assert key_type_of(cert.public_key()) == key_type
        costs = lab_costs.connection_costs(lab, 20, tls=True)
    finally:
        lab.close()
    assert costs["resumed_fraction"] == 19 / 20  # every connection but the first resumes
    assert costs["tls_full"]["cpu_us"] > costs["tls_resumed"]["cpu_us"]
    assert costs["tls_full"]["cpu_us"] > costs["plain_connection"]["cpu_us"]


def _quick_calibration(template: str, out: Path, key_type: str | None = None) -> None:
    """``meshsim calibrate --quick --proxy-cmd`` as a user runs it (with ``--key-type`` when
    given), then the checks every calibrated model must pass: it loads, its mTLS points had
    no errors, ``meshsim validate`` runs on it, the stacks table reads it, and the model
    file, its fit record and the table name the certificates' key type."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    keys = ["--key-type", key_type] if key_type else []
    run = subprocess.run(
        [*MESHSIM, "calibrate", "--quick", *keys, "--out", str(out), "--proxy-cmd", template],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    model = load_model(out)
    assert model.value("tls_handshake_overhead_cpu_us") > 0.0
    fit = json.loads(out.with_name(out.stem + ".fit.json").read_text())
    # The fitted costs charge about what was measured at saturation (few wake-ups, where
    # the model's throughput is checked): within a factor 2 on a shared, noisy machine.
    (sat,) = [p for p in fit["points"] if p["role"] == "fit" and p["rps"] == 0]
    cpu = sat["process_cpu_us_per_request"]
    measured = (cpu["client_sidecar"] + cpu["server_sidecar"]) / 2
    # The wake-up cost is per fully cold wake-up where the model has the host's cache
    # cooling: a switch counts as the share of a cold one its mean sleep cooled.
    decay = model.value("wakeup_cache_decay_ms") or None
    cold = cold_wakeups(cpu, sat["wakeups_per_request"], sat["achieved_rps"], decay)
    assert cold is not None
    charged = (
        model.value("socket_io_us")
        + model.value("payload_cpu_us_per_kib") * 2 * sat["payload_bytes"] / 1024
        + model.value("wakeup_cpu_us") * cold
    )
    assert measured / 2 < charged < measured * 2
    assert fit["proxy_command"] == template
    mtls = [p for p in fit["points"] if p["mtls"]]
    assert mtls
    assert all(p["errors"] == 0 and p["achieved_rps"] > 0 for p in mtls)
    val = subprocess.run(
        # 1 s simulated a point, as long as the quick grid's loads (as for meshsim's own
        # proxy in tests/test_calibrate_integration.py).
        [*MESHSIM, "validate", str(out), "--json", "--duration-s", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert val.returncode in (0, 1), val.stderr[-3000:]  # 1: a goal missed, a result
    rows = json.loads(val.stdout)["rows"]
    assert len(rows) == fit["held_out_count"]
    assert all(math.isfinite(r["predicted"]["p50"]) for r in rows)
    (row,) = compare_rows([out])
    assert row.values["measured_low_us"] > 0.0
    expected = key_type or "ecdsa-p256"
    assert fit["key_type"] == expected
    assert f"workload keys {expected}" in out.read_text()
    assert row.key_type == expected


@pytest.mark.slow
@pytest.mark.lab
def test_quick_calibration_of_the_rust_sidecar(rust_sidecar: Path, tmp_path: Path) -> None:
    _quick_calibration(RUST_CMD, tmp_path / "rust-sidecar.yaml", key_type="rsa-2048")


@pytest.mark.slow
@pytest.mark.lab
def test_quick_calibration_of_haproxy(haproxy: str, tmp_path: Path) -> None:
    _quick_calibration(HAPROXY_CMD, tmp_path / "haproxy.yaml")
