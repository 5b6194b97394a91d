"""``meshsim size``'s answer as text: what to provision, and how each figure was found."""

from __future__ import annotations

from meshsim.studies.sizing import MeshSizing, SizingInput


def render(result: list[MeshSizing], inputs: SizingInput, command: str, *,
           from_scenario: bool) -> str:  # fmt: skip
    band = (
        f"[low, high]: model band over {inputs.samples} parameter sets drawn over the "
        "models' ranges"
        if inputs.samples
        else "model band missing (--samples 0)"
    )
    lines = [
        f"{inputs.pods:,} meshed pods, {inputs.services:,} services, "
        f"{inputs.entry_rps:,.6g} client rps entering, {inputs.call_rps:,.6g} rps between "
        f"services; payload {inputs.request_bytes} / {inputs.response_bytes} bytes, "
        f"{inputs.connections} connections per proxy, churn {inputs.churn_per_s:g} pods/s, "
        f"mTLS {'on' if inputs.mtls else 'off'}",
        f"figures: value {band}",
        "",
    ]  # fmt: skip
    for m in result:
        lines.append(f"== {m.mesh}")
        for p in m.proxies:
            lines.append(
                f"  {p.count:,} x {p.kind} ({p.name}) at {p.rps_per_proxy:,.4g} rps each: "
                f"{p.cpu_vcpu.show()} vCPU, {p.memory_mb.show()} MB; utilisation "
                f"{p.utilisation.show('.2f')}; tops out at {p.max_rps.show()} rps "
                "(closed form)" + ("  SATURATED" if p.saturated else "")
            )  # fmt: skip
        lines.append(f"  all proxies: {m.cpu_total.show()} vCPU, "
                     f"{m.memory_total_mb.show(',.0f')} MB")  # fmt: skip
        if m.requests.get("cpu_cores"):
            used = m.cpu_total.value / m.requests["cpu_cores"]
            lines.append(
                f"  requested by the sidecars (Istio default 100m / 128Mi each): "
                f"{m.requests['cpu_cores']:,.4g} cores, {m.requests['memory_mb']:,.6g} MB; use "
                f"is {used:.2f} x the CPU request"
            )  # fmt: skip
        share = m.cpu_total.value / inputs.node_cores
        lines.append(f"  proxy CPU fills {share:,.3g} nodes of {inputs.node_cores} cores")
        cp = m.control_plane
        who = "linkerd destination" if m.mesh == "linkerd" else (
            f"istiod x{m.control_plane_replicas}")  # fmt: skip
        lines.append(f"  control plane ({who}): {cp['cpu_vcpu'].show()} vCPU, "
                     f"{cp['memory_mb'].show('.4g')} MB (closed form)")  # fmt: skip
        if m.hop_p50_ms is not None and m.hop_p99_ms is not None:
            lines.append(f"  added per hop: p50 {m.hop_p50_ms.show()} ms, p99 "
                         f"{m.hop_p99_ms.show()} ms ({m.hop_method})")  # fmt: skip
        else:
            lines.append(f"  added per hop: {m.hop_method}")
        d = m.decomposition_us
        lines.append(
            f"    per hop, mean: proxy CPU on the path {d['proxy_cpu_on_path_us']:.4g} us, "
            f"wake-ups {d['wakeups_us']:.4g} us, IPC and hand-offs {d['hop_latency_us']:.4g} "
            f"us, queueing {d['queueing_mean_us']:.4g} us"
        )  # fmt: skip
        lines += [f"  note: {n}" for n in m.notes]
        lines.append("")
    if from_scenario:
        lines.append(f"simulate the full scenario: {command}")
    else:
        lines.append("simulate the full scenario: meshsim import MANIFESTS --metrics METRICS "
                     f"--out scenario.yaml && {command}")  # fmt: skip
    return "\n".join(lines)
