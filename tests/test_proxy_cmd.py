"""``meshsim calibrate --proxy-cmd``: the template's validation, the grid a black box gets, the
fit on a constructed measurement record (exact mechanisms in, exact parameters out), and the
stacks table read back from the written model."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from meshsim.cli.main import cli

from meshsim.calibrate.blackbox_fit import fit_command_model
from meshsim.calibrate.calibration import write_model
from meshsim.calibrate.point_record import BASELINE_QUANTILES
from meshsim.calibrate.points import LabConfig, Measured, grid, scale
from meshsim.calibrate.proxycmd import ProxyCommand, process_tree
from meshsim.calibrate.stacks import compare_rows, markdown_table
from meshsim.errors import MeshsimError
from meshsim.models import load_model

SH = "/bin/sh"


def test_template_records_placeholders_and_renders_each_argument() -> None:
    cmd = ProxyCommand.parse(
        f"{SH} -c 'exec x' --listen {{listen}} --up={{upstream}} "
        "--role {role} --mtls {mtls} --cert {cert} --key {key} --ca {ca}"
    )
    assert cmd.used == {"listen", "upstream", "role", "mtls", "cert", "key", "ca"}
    assert cmd.mtls
    assert not cmd.keepalive_knob
    argv = cmd.render(
        listen="127.0.0.1:1",
        upstream="127.0.0.1:2",
        role="inbound",
        mtls="on",
        cert="/c d.pem",
        key="k",
        ca="a",
        keepalive="on",
        workdir="w",
    )
    assert argv == [
        SH,
        "-c",
        "exec x",
        "--listen",
        "127.0.0.1:1",
        "--up=127.0.0.1:2",
        "--role",
        "inbound",
        "--mtls",
        "on",
        "--cert",
        "/c d.pem",
        "--key",
        "k",
        "--ca",
        "a",
    ]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (f"{SH} {{listen}} {{upstream}} {{port}}", "unknown placeholder {port}"),
        (f"{SH} {{listen}}", "must use {upstream}"),
        ("no-such-proxy-binary {listen} {upstream}", "program 'no-such-proxy-binary' not found"),
        (f"{SH} {{listen}} {{upstream}} {{cert}}", "{cert} without {mtls}"),
        (f"{SH} {{listen}} {{upstream}} {{mtls}} {{cert}} {{key}} {{ca}}", "{mtls} needs {role}"),
        (f"{SH} {{listen}} {{upstream}} {{oops", "write a literal brace"),
        (f"{SH} 'unclosed {{listen}} {{upstream}}", "cannot split"),
        ("", "empty command"),
    ],
)
def test_bad_template_is_refused_with_the_reason(template: str, message: str) -> None:
    with pytest.raises(MeshsimError) as exc:
        ProxyCommand.parse(template)
    assert message in str(exc.value)


def test_cli_bad_template_exits_2_without_traceback() -> None:
    result = CliRunner().invoke(
        cli, ["calibrate", "--quick", "--proxy-cmd", f"{SH} {{listen}} {{upstream}} {{nope}}"]
    )
    assert result.exit_code == 2
    assert "unknown placeholder {nope}" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(
        cli, ["calibrate", "--proxy-cmd", "/nonexistent/proxy {listen} {upstream}"]
    )
    assert result.exit_code == 2
    assert "not found" in result.output


def test_black_box_grid_leaves_out_what_the_template_cannot_express() -> None:
    full = grid(False)
    plain = grid(False, mtls=False, filters=False, keep_alive_off=False)
    assert {p.config for p in full} == {
        LabConfig(),
        LabConfig(mtls=True),
        LabConfig(filters=4),
        LabConfig(keep_alive=False),
        LabConfig(mtls=True, keep_alive=False),
    }
    assert {p.config for p in plain} == {LabConfig()}
    # The base configuration's points are the Python proxy's, in the same order.
    assert [p for p in full if p.config == LabConfig() and p.role != "fit"] == [
        p for p in plain if p.role != "fit"
    ]
    quick = grid(True, filters=False)
    assert {p.config for p in quick} == {LabConfig(), LabConfig(mtls=True)}


def test_process_tree_finds_children() -> None:
    proc = subprocess.Popen([SH, "-c", "sleep 30 & sleep 30 & wait"])
    try:
        for _ in range(100):
            tree = process_tree(proc.pid)
            if len(tree) == 3:
                break
            time.sleep(0.02)
        assert tree[0] == proc.pid
        assert len(tree) == 3
    finally:
        for pid in process_tree(proc.pid)[1:]:
            subprocess.run(["kill", str(pid)], check=False)
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ the fit, on a constructed lab

FIXED_US, PER_KIB_US, WAKEUP_US = 12.0, 0.5, 30.0
TLS_FIXED_US, TLS_PER_KIB_US = 4.0, 1.5
KEEPALIVE, PLAIN_CONN, TLS_FULL, TLS_RESUMED = (50.0, 1.0), (100.0, 1.5), (700.0, 2.0), (300.0, 2.0)


def _wakeups(rps: float) -> float:
    """Fewer wake-ups per request as load grows (independent of the payload)."""
    return 0.2 if rps == 0 else 1.0 / (1.0 + rps / 1000.0)


def _constructed_record(fixed_us: float = FIXED_US) -> dict[str, Any]:
    """A measurement record whose sidecars cost exactly FIXED + PER_KIB x KiB + WAKEUP x
    wake-ups (+ TLS's fixed and per-KiB costs with mTLS), with known connection costs."""
    pts = scale(grid(True, filters=False), 4000.0)
    measured = []
    for p in pts:
        kib = 2.0 * p.payload / 1024.0
        w = _wakeups(p.rps)
        cpu = fixed_us + PER_KIB_US * kib + WAKEUP_US * w
        if p.config.mtls:
            cpu += TLS_FIXED_US + TLS_PER_KIB_US * kib
        procs = {"echo": 20.0, "load_generator": 30.0}
        wakes = {"echo": 0.5, "load_generator": 0.5}
        if p.proxied:
            procs |= {"client_sidecar": cpu, "server_sidecar": cpu}
            wakes |= {"client_sidecar": w, "server_sidecar": w}
        p50 = 0.3 + (0.2 if p.proxied else 0.0)
        measured.append(
            Measured(
                point=p,
                achieved_rps=p.rps or 20000.0,
                latency_ms={"p50": p50, "p90": p50 * 2, "p99": p50 * 4, "mean": p50},
                requests=1000,
                errors=0,
                warnings=[],
                process_cpu_us_per_request=procs,
                wakeups_per_request=wakes,
                latency_quantiles_ms=[] if p.proxied else [0.3] * BASELINE_QUANTILES,
            )
        )
    block = {
        "requests": 100,
        "keepalive": {"cpu_us": KEEPALIVE[0], "wakeups": KEEPALIVE[1]},
        "plain_connection": {"cpu_us": PLAIN_CONN[0], "wakeups": PLAIN_CONN[1]},
        "tls_full": {"cpu_us": TLS_FULL[0], "wakeups": TLS_FULL[1]},
        "tls_resumed": {"cpu_us": TLS_RESUMED[0], "wakeups": TLS_RESUMED[1]},
        "resumed_fraction": 1.0,
    }
    mem = {
        "plain": [[k, 3000.0 + 10.0 * k] for k in (0, 50, 100, 200)],
        "tls": [[k, 3000.0 + 40.0 * k] for k in (0, 50, 100, 200)],
    }
    machine = {
        "host": "test",
        "cpu": "constructed",
        "cores": 2,
        "kernel": "k",
        "date": "2026-01-01T00:00:00Z",
    }
    return {
        "quick": True,
        "proxy_command": f"{SH} {{listen}} {{upstream}}",
        "capacity_estimate_rps": 4000.0,
        "lab_ceiling_rps": 4000.0,
        "placement": {"load_generator": 0, "client_sidecar": 0, "server_sidecar": 1, "echo": 1},
        "points": [m.to_json() for m in measured],
        "memory_kib": mem,
        "connection_costs": [block, replace_block(block, 1.0), block],
        "idle_cpu_ms_per_s": {"client_sidecar": 0.0},
        "machine": machine,
    }


def replace_block(block: dict[str, Any], extra_us: float) -> dict[str, Any]:
    """The same block with every mode ``extra_us`` dearer (the differences unchanged)."""
    out = dict(block)
    for mode in ("keepalive", "plain_connection", "tls_full", "tls_resumed"):
        out[mode] = {**block[mode], "cpu_us": block[mode]["cpu_us"] + extra_us}
    return out


def _value(doc: dict[str, Any], name: str) -> float:
    return float(doc["parameters"][name]["value"])


def test_fit_recovers_the_constructed_mechanisms(tmp_path: Path) -> None:
    doc = fit_command_model(_constructed_record(), name="constructed")
    assert _value(doc, "socket_io_us") == pytest.approx(FIXED_US, abs=1e-3)
    assert _value(doc, "payload_cpu_us_per_kib") == pytest.approx(PER_KIB_US, abs=1e-3)
    assert _value(doc, "wakeup_cpu_us") == pytest.approx(WAKEUP_US, abs=1e-3)
    assert _value(doc, "tls_request_cpu_us") == pytest.approx(TLS_FIXED_US, abs=1e-3)
    assert _value(doc, "tls_record_cpu_us_per_kib") == pytest.approx(TLS_PER_KIB_US, abs=1e-3)
    bare = {
        k: c - WAKEUP_US * w
        for k, (c, w) in {
            "ka": KEEPALIVE,
            "conn": PLAIN_CONN,
            "full": TLS_FULL,
            "res": TLS_RESUMED,
        }.items()
    }
    assert _value(doc, "tcp_connection_cpu_us") == pytest.approx(bare["conn"] - bare["ka"])
    assert _value(doc, "tls_handshake_overhead_cpu_us") == pytest.approx(
        bare["full"] - bare["conn"]
    )
    assert _value(doc, "tls_resumption_cpu_us") == pytest.approx(bare["res"] - bare["conn"])
    # The server side resumed what the lab offered; the client side is not measured, so the
    # model leaves tls_session_tickets out: the simulated proxy never offers a ticket.
    assert _value(doc, "tls_server_resumption") == 1.0
    assert "tls_session_tickets" not in doc["parameters"]
    assert _value(doc, "connection_kb") == pytest.approx(10.0, abs=1e-3)
    assert _value(doc, "tls_connection_kb") == pytest.approx(30.0, abs=1e-3)
    for name in ("http_parse_request_us", "telemetry_us", "l7_filter_us"):
        assert _value(doc, name) == 0.0
    assert "request_cpu_cv" not in doc["parameters"]  # not observable in a black box
    # The model loads as the simulator's sidecar kind, and ranges hold their values.
    path = tmp_path / "constructed.yaml"
    write_model(doc, path)
    load_model(path)
    for entry in doc["parameters"].values():
        if "range" in entry:
            assert entry["range"][0] <= entry["value"] <= entry["range"][1]
            assert entry["range_source"]


def test_a_negative_intercept_is_refitted_through_the_origin() -> None:
    # Amortisation steeper than one cost per wake-up: the free plane's intercept is -8 us.
    doc = fit_command_model(_constructed_record(fixed_us=-8.0))
    assert _value(doc, "socket_io_us") == 0.0
    assert "refitted through the origin" in doc["parameters"]["socket_io_us"]["note"]
    assert "intercept was -8.0 us" in doc["parameters"]["wakeup_cpu_us"]["note"]
    # Least squares through the origin of y = -8 + 0.5 kib + 30 w: the slopes absorb it, and
    # the fitted costs still reproduce the constructed points to within the 8 us removed.
    wake = doc["fit"]["estimates"]["process_cpu_us_vs_kib_and_wakeups"]["points"]
    per_kib, per_wake = _value(doc, "payload_cpu_us_per_kib"), _value(doc, "wakeup_cpu_us")
    assert per_wake < WAKEUP_US
    for pt in wake:
        assert abs(per_kib * pt["kib"] + per_wake * pt["wakeups"] - pt["y"]) < 8.0


def test_without_mtls_the_tls_costs_say_not_measured(tmp_path: Path) -> None:
    data = _constructed_record()
    data["points"] = [p for p in data["points"] if not p["point"]["config"]["mtls"]]
    data["memory_kib"].pop("tls")
    data["connection_costs"] = [
        {k: v for k, v in b.items() if k in ("requests", "keepalive", "plain_connection")}
        for b in data["connection_costs"]
    ]
    doc = fit_command_model(data)
    hs = doc["parameters"]["tls_handshake_overhead_cpu_us"]
    assert hs["value"] == 0.0
    assert "not measured" in hs["source"]
    assert "tls_request_cpu_us" not in doc["parameters"]
    write_model(doc, tmp_path / "plain.yaml")
    load_model(tmp_path / "plain.yaml")


def test_stacks_table_reads_the_models_back(tmp_path: Path) -> None:
    doc = fit_command_model(_constructed_record(), name="constructed")
    path = tmp_path / "rust-sidecar.yaml"
    write_model(doc, path)
    (row,) = compare_rows([path])
    assert row.values["fixed_cpu_us"] == pytest.approx(FIXED_US, abs=1e-3)
    assert row.values["wakeup_us"] == pytest.approx(WAKEUP_US, abs=1e-3)
    low_rps = min(p.rps for p in scale(grid(True), 4000.0) if p.rps > 0)
    kib = 2.0 * 256 / 1024.0
    assert row.values["measured_low_us"] == pytest.approx(
        FIXED_US + PER_KIB_US * kib + WAKEUP_US * _wakeups(low_rps), abs=0.01
    )  # rounded
    assert row.values["measured_sat_us"] == pytest.approx(
        FIXED_US + PER_KIB_US * 2.0 * 4096 / 1024.0 + WAKEUP_US * 0.2, abs=0.01
    )
    assert row.stack == "sh"  # the program of the recorded command
    text = markdown_table([row])
    assert text.splitlines()[0].startswith("| model | stack | keys | CPU/req fixed (us)")
    # A record from before --key-type: the lab CA issued ECDSA P-256 certificates only.
    assert "| rust-sidecar | sh | ecdsa-p256 | 12.0 |" in text


def test_stacks_table_of_a_published_model_shows_parameters_only() -> None:
    (row,) = compare_rows([Path("models/istio-sidecar.yaml")])
    assert row.stack == "published figures"
    assert row.key_type == "-"
    assert math.isnan(row.values["measured_low_us"])
    assert row.values["handshake_us"] > 0


def test_cli_compare_prints_the_table(tmp_path: Path) -> None:
    doc = fit_command_model(_constructed_record(), name="constructed")
    write_model(doc, tmp_path / "c.yaml")
    result = CliRunner().invoke(
        cli, ["calibrate", "compare", "--markdown", str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "| c | sh | ecdsa-p256 | 12.0 |" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("[1, 2]\n")
    result = CliRunner().invoke(cli, ["calibrate", "compare", str(bad)])
    assert result.exit_code == 2
    assert "not a model file" in result.output


# ------------------------------------------------------------------ workload key types


@pytest.mark.parametrize(("key_type", "size"), [("ecdsa-p256", 256), ("rsa-2048", 2048)])
def test_ca_issues_certificates_of_each_key_type(key_type: str, size: int) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from meshsim.proxy.ca import CertificateAuthority, key_type_of

    ca = CertificateAuthority.create("cluster.local", key_type=key_type)
    assert ca.key_type == key_type
    wl = ca.issue("default", "calibrate")
    assert wl.key_type == key_type
    cert = x509.load_pem_x509_certificate(wl.cert_pem)
    pub = cert.public_key()
    assert isinstance(
        pub, rsa.RSAPublicKey if key_type == "rsa-2048" else ec.EllipticCurvePublicKey
    )
    assert pub.key_size == size
    assert key_type_of(pub) == key_type
    assert key_type_of(serialization.load_pem_private_key(wl.key_pem, None)) == key_type
    assert wl.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, as rustls reads
    cert.verify_directly_issued_by(ca.cert)  # raises if the CA did not sign it
    # An RSA CA may still issue an ECDSA workload key when asked.
    other = "ecdsa-p256" if key_type == "rsa-2048" else "rsa-2048"
    assert (
        key_type_of(
            x509.load_pem_x509_certificate(
                ca.issue("default", "x", key_type=other).cert_pem
            ).public_key()
        )
        == other
    )


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048"])
def test_mtls_handshake_with_each_key_type(key_type: str, tmp_path: Path) -> None:
    """meshsim's proxy's own TLS contexts complete a mutual TLS 1.3 handshake (in memory)
    with certificates of each key type, and the peer certificate is the issued one."""
    import ssl

    from meshsim.proxy.ca import CertificateAuthority
    from meshsim.proxy.tls import client_context, server_context

    CertificateAuthority.create("cluster.local", key_type=key_type).issue(
        "default", "calibrate"
    ).write(tmp_path)
    cli_ctx, srv_ctx = client_context(tmp_path), server_context(tmp_path)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli_side = cli_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    srv_side = srv_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for name, side, out, peer_in in (
            ("c", cli_side, c_out, s_in),
            ("s", srv_side, s_out, c_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            break
    assert all(done.values())
    assert cli_side.version() == "TLSv1.3"
    assert srv_side.getpeercert(binary_form=True) == cli_side.getpeercert(binary_form=True)


@pytest.mark.parametrize("bad", ["rsa-4096", "ECDSA-P256", "", "ed25519"])
def test_a_bad_key_type_is_refused(bad: str) -> None:
    from meshsim.proxy.ca import CertificateAuthority, IdentityError

    with pytest.raises(IdentityError) as exc:
        CertificateAuthority.create("cluster.local", key_type=bad)
    assert exc.value.field == "key_type"
    assert f"unknown key type {bad!r}: expected one of ecdsa-p256, rsa-2048" in str(exc.value)
    ca = CertificateAuthority.create("cluster.local")
    with pytest.raises(IdentityError):
        ca.issue("default", "x", key_type=bad)


def test_cli_refuses_a_bad_key_type_with_exit_2() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "calibrate",
            "--quick",
            "--key-type",
            "rsa-4096",
            "--proxy-cmd",
            f"{SH} {{listen}} {{upstream}}",
        ],
    )
    assert result.exit_code == 2
    assert "Invalid value for '--key-type'" in result.output
    assert "'rsa-4096' is not one of 'ecdsa-p256', 'rsa-2048'" in result.output
    assert "Traceback" not in result.output
    fortio = Path("tests/fixtures").rglob("*.json")
    one = next(iter(fortio), None)
    if one is not None:
        result = CliRunner().invoke(
            cli, ["calibrate", "--key-type", "rsa-2048", "--from-fortio", str(one)]
        )
        assert result.exit_code == 2
        assert "--key-type applies to the lab" in result.output


def test_cli_key_types_are_the_ca_s() -> None:
    from meshsim.cli import calibrate as cli_calibrate

    from meshsim.proxy import ca

    assert cli_calibrate.KEY_TYPES == ca.KEY_TYPES
    assert cli_calibrate.DEFAULT_KEY_TYPE == ca.DEFAULT_KEY_TYPE


def test_model_file_and_compare_table_record_the_key_type(tmp_path: Path) -> None:
    data = _constructed_record()
    data["key_type"] = "rsa-2048"
    doc = fit_command_model(data, name="rsa")
    assert doc["fit"]["key_type"] == "rsa-2048"
    assert doc["measured_on"].endswith("; workload keys rsa-2048")
    hs = doc["parameters"]["tls_handshake_overhead_cpu_us"]
    assert "--key-type rsa-2048" in hs["source"]
    assert "with rsa-2048 workload keys" in hs["note"]
    path = tmp_path / "haproxy-rsa.yaml"
    write_model(doc, path)
    load_model(path)  # the provenance lives where the loader accepts it
    assert "workload keys rsa-2048" in path.read_text()
    ecdsa = tmp_path / "haproxy.yaml"
    write_model(fit_command_model(_constructed_record(), name="e"), ecdsa)
    rows = compare_rows([ecdsa, path])
    assert [r.key_type for r in rows] == ["ecdsa-p256", "rsa-2048"]
    text = markdown_table(rows)
    assert "| haproxy | sh | ecdsa-p256 |" in text
    assert "| haproxy-rsa | sh | rsa-2048 |" in text
    result = CliRunner().invoke(cli, ["calibrate", "compare", str(ecdsa), str(path)])
    assert result.exit_code == 0, result.output
    assert "rsa-2048" in result.output
    assert "ecdsa-p256" in result.output


def test_churn_costs_are_differences_of_modes_median_over_rounds() -> None:
    from meshsim.calibrate.churn import costs_table, summarise_costs

    block = _constructed_record()["connection_costs"][0]
    blocks = [
        block,
        replace_block(block, 5.0),
        {**block, "tls_full": {"cpu_us": 900.0, "wakeups": 2.0}},
    ]
    s = summarise_costs(blocks)
    assert s["rounds"] == 3
    # full = tls_full - plain_connection: 600, 600, 800 -> median 600, range 600..800
    assert s["full_us"] == {"median": 600.0, "range": [600.0, 800.0]}
    assert s["resumed_us"] == {"median": 200.0, "range": [200.0, 200.0]}
    assert s["tcp_us"] == {"median": 50.0, "range": [50.0, 50.0]}
    assert s["mtls_connection_us"] == {"median": 650.0, "range": [650.0, 850.0]}
    data = {
        "models": {"h": {"stack": "C (HAProxy)"}},
        "connection_costs": {
            "h": {
                "ecdsa-p256": blocks,
                "rsa-2048": [
                    replace_block(b, 0.0) | {"tls_full": {"cpu_us": 1300.0, "wakeups": 2.0}}
                    for b in (block, block)
                ],
            }
        },
    }
    text = costs_table(data)
    assert "| h | C (HAProxy) | ecdsa-p256 | 600 [600..800] | 200 [200..200] | 100 |" in text
    # RSA full handshake 1300 - 100 = 1200 against ECDSA's 600: twice as dear.
    assert "| h | C (HAProxy) | rsa-2048 | 1200 [1200..1200] |" in text
    assert text.splitlines()[-1].endswith("| 2.00 |")


def test_cli_churn_from_a_stored_record_and_its_refusals(tmp_path: Path) -> None:
    import json

    block = _constructed_record()["connection_costs"][0]
    record = {
        "models": {"h": {"path": "unused.yaml", "stack": "C (HAProxy)"}},
        "key_types": ["ecdsa-p256"],
        "connection_costs": {"h": {"ecdsa-p256": [block]}},
        "keepalive_off": {},
    }
    path = tmp_path / "churn.json"
    path.write_text(json.dumps(record))
    result = CliRunner().invoke(cli, ["calibrate", "churn", "--from", str(path)])
    assert result.exit_code == 0, result.output
    # full 700 - 100, resumed 300 - 100, TCP 100 - 50, a new mTLS connection 700 - 50
    assert (
        "| h | C (HAProxy) | ecdsa-p256 | 600 [600..600] | 200 [200..200] | 100 | "
        "50 [50..50] | 650 [650..650] |  |"
    ) in result.output
    result = CliRunner().invoke(cli, ["calibrate", "churn"])
    assert result.exit_code == 2
    assert "give the calibrated models" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": {}}')
    result = CliRunner().invoke(cli, ["calibrate", "churn", "--from", str(bad)])
    assert result.exit_code == 2
    assert "not a churn record" in result.output
    result = CliRunner().invoke(
        cli, ["calibrate", "churn", "--key-type", "dsa", "models/calibrated/haproxy.yaml"]
    )
    assert result.exit_code == 2
    assert "'dsa' is not one of 'ecdsa-p256', 'rsa-2048'" in result.output
