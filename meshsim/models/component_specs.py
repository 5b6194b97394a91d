"""Parameters of the model files that describe components other than proxies and the two
control planes: the observability stack (``models/observability.yaml``) and Cilium's parts
(``models/cilium-*.yaml``, ``models/spire.yaml``).

Plain tuples, so that :mod:`meshsim.models.parameters` can read them without an import cycle:
``(name, unit, meaning, kinds, integer, minimum)``.
"""

from __future__ import annotations

from typing import Final

COMPONENT_KINDS: Final = (
    "observability",
    "cilium-agent",
    "cilium-operator",
    "cilium-encryption",
    "spire",
)
"""Kinds of component model files; each has its shipped file ``models/<kind>.yaml``."""

_OBS: Final = frozenset({"observability"})
_AGENT: Final = frozenset({"cilium-agent"})
_OPERATOR: Final = frozenset({"cilium-operator"})
_CRYPT: Final = frozenset({"cilium-encryption"})
_SPIRE: Final = frozenset({"spire"})

ComponentSpec = tuple[str, str, str, frozenset[str], bool, float]

COMPONENT_SPECS: Final[tuple[ComponentSpec, ...]] = (
    # -- metrics: in the proxy, and in Prometheus
    ("scrape_interval_s", "s", "Prometheus scrape interval of the proxies' metrics endpoints",
     _OBS, False, 1.0),
    ("proxy_series_kb", "KB", "proxy memory per exported metric series (one label combination; "
     "each histogram bucket is a series)", _OBS, False, 0.0),
    ("proxy_scrape_cpu_us_per_series", "us", "proxy CPU to render one series at one scrape",
     _OBS, False, 0.0),
    ("prometheus_base_memory_mb", "MB", "Prometheus resident memory with no series", _OBS,
     False, 0.0),
    ("prometheus_series_kb", "KB", "Prometheus memory per active series in its head block",
     _OBS, False, 0.0),
    ("prometheus_sample_cpu_us", "us", "Prometheus CPU per sample scraped and ingested", _OBS,
     False, 0.0),
    # -- tracing: in the proxy, and in the collector
    ("span_cpu_us", "us", "proxy CPU to start, finish and encode one span (sampled requests "
     "only)", _OBS, False, 0.0),
    ("span_export_batch_cpu_us", "us", "proxy CPU per export call (one batch of spans: "
     "serialise and send)", _OBS, False, 0.0),
    ("span_export_kib", "KiB", "bytes of one span as exported (OTLP protobuf)", _OBS, False,
     0.0),
    ("collector_span_cpu_us", "us", "collector CPU to receive, batch and export one span",
     _OBS, False, 0.0),
    ("collector_base_memory_mb", "MB", "collector resident memory (memory_limiter default "
     "envelope)", _OBS, False, 0.0),
    # -- access logs
    ("access_log_us", "us", "proxy CPU to format and write one access-log line, per request "
     "per proxy that logs", _OBS, False, 0.0),
    # -- Cilium agent (per node): the eBPF datapath and the agent process
    ("ebpf_packet_cpu_us", "us", "kernel CPU per packet through Cilium's eBPF programs at one "
     "end (socket LB / tc hooks, conntrack, policy map lookup)", _AGENT, False, 0.0),
    ("ebpf_connection_cpu_us", "us", "kernel CPU per new connection at one end (socket-LB "
     "service translation, conntrack entry creation)", _AGENT, False, 0.0),
    ("ebpf_hop_latency_us", "us", "non-CPU latency the eBPF datapath adds per direction per "
     "node (veth/netns switch with BPF host routing)", _AGENT, False, 0.0),
    ("mss_bytes", "bytes", "TCP payload bytes per packet (MSS); a message of n bytes is "
     "ceil(n / mss) packets", _AGENT, True, 1.0),
    ("agent_base_memory_mb", "MB", "cilium-agent resident memory with no endpoints", _AGENT,
     False, 0.0),
    ("agent_endpoint_kb", "KB", "cilium-agent memory per local endpoint (pod)", _AGENT, False,
     0.0),
    ("agent_identity_kb", "KB", "cilium-agent memory per security identity in the cluster "
     "(policy maps, ipcache)", _AGENT, False, 0.0),
    ("agent_upkeep_cpu_us_per_s", "us/s", "cilium-agent CPU per second with nothing changing",
     _AGENT, False, 0.0),
    ("endpoint_regeneration_cpu_us", "us", "cilium-agent CPU to regenerate one endpoint's "
     "eBPF programs and maps after a change", _AGENT, False, 0.0),
    ("identity_propagation_ms", "ms", "from a pod's creation to every agent knowing its "
     "identity (CiliumIdentity/CiliumEndpoint watch, ipcache update)", _AGENT, False, 0.0),
    # -- Cilium operator
    ("operator_base_memory_mb", "MB", "cilium-operator resident memory", _OPERATOR, False,
     0.0),
    ("operator_identity_kb", "KB", "cilium-operator memory per identity it garbage-collects",
     _OPERATOR, False, 0.0),
    ("operator_upkeep_cpu_us_per_s", "us/s", "cilium-operator CPU per second at rest",
     _OPERATOR, False, 0.0),
    # -- transparent encryption (kernel, per node)
    ("wireguard_cpu_us_per_kib", "us/KiB", "WireGuard ChaCha20-Poly1305 per KiB, per end "
     "(encrypt on the sending node, decrypt on the receiving one)", _CRYPT, False, 0.0),
    ("wireguard_packet_cpu_us", "us", "WireGuard per packet per end beyond the cipher "
     "(encapsulation, queueing to its workers)", _CRYPT, False, 0.0),
    ("wireguard_overhead_bytes", "bytes", "WireGuard encapsulation bytes per packet", _CRYPT,
     True, 0.0),
    ("ipsec_cpu_us_per_kib", "us/KiB", "IPsec ESP AES-GCM per KiB, per end", _CRYPT, False,
     0.0),
    ("ipsec_packet_cpu_us", "us", "IPsec per packet per end beyond the cipher (xfrm lookup, "
     "ESP header)", _CRYPT, False, 0.0),
    ("ipsec_overhead_bytes", "bytes", "ESP encapsulation bytes per packet", _CRYPT, True,
     0.0),
    # -- SPIRE (mutual authentication)
    ("spire_server_base_memory_mb", "MB", "spire-server resident memory", _SPIRE, False, 0.0),
    ("spire_server_entry_kb", "KB", "spire-server memory per registration entry (identity)",
     _SPIRE, False, 0.0),
    ("spire_agent_memory_mb", "MB", "spire-agent resident memory (one per node)", _SPIRE,
     False, 0.0),
    ("svid_sign_us", "us", "spire-server CPU to sign one X509-SVID", _SPIRE, False, 0.0),
    ("svid_ttl_s", "s", "X509-SVID lifetime", _SPIRE, False, 1.0),
    ("svid_sync_interval_s", "s", "spire-agent's sync interval with the server: how long a "
     "new registration entry may wait to reach the agent", _SPIRE, False, 0.0),
    ("auth_handshake_us", "us", "cilium-agent CPU for one mutual-auth handshake (mTLS between "
     "the two agents, per identity pair and node pair)", _SPIRE, False, 0.0),
    ("auth_handshake_latency_ms", "ms", "time the first connection of a new identity pair "
     "waits for the agents' handshake (its packets are dropped until the auth map is set)",
     _SPIRE, False, 0.0),
)  # fmt: skip
