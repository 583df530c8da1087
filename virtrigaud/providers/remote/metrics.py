"""Prometheus metrics of the provider wire: the server side and the caller side."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from virtrigaud.providers.metrics import CALL_BUCKETS

RPC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, *CALL_BUCKETS[1:])

# --- server (`virtrigaud provider serve`) ---
SERVER_RPCS = Counter(
    "virtrigaud_provider_server_rpcs_total",
    "provider.v1 calls served, by method and gRPC status code",
    ["provider_type", "method", "code"],
)
SERVER_RPC_SECONDS = Histogram(
    "virtrigaud_provider_server_rpc_seconds",
    "Time to serve a provider.v1 call (hypervisor work included)",
    ["provider_type", "method"],
    buckets=RPC_BUCKETS,
)
SERVER_TLS_REFUSED = Counter(
    "virtrigaud_provider_server_tls_refused_total",
    "Connections refused during or right after the TLS handshake, by reason",
    ["reason"],
)
SERVER_TLS_RELOADS = Counter(
    "virtrigaud_provider_server_tls_reloads_total",
    "Times the server certificate or the client CA bundle was reloaded from its source",
)
SERVER_TLS_RELOAD_ERRORS = Counter(
    "virtrigaud_provider_server_tls_reload_errors_total",
    "Reloads that failed (the last good material stays in use)",
)
SERVER_CONNECTIONS = Gauge(
    "virtrigaud_provider_server_connections", "Open client connections (after the handshake)"
)

# --- caller (a shard's remote provider) ---
REMOTE_RPCS = Counter(
    "virtrigaud_remote_provider_rpcs_total",
    "provider.v1 calls made to remote providers, by method and gRPC status code",
    ["provider_type", "provider", "method", "code"],
)
REMOTE_RPC_SECONDS = Histogram(
    "virtrigaud_remote_provider_rpc_seconds",
    "Latency of provider.v1 calls to remote providers (excluding rate-limit waits)",
    ["provider_type", "provider", "method"],
    buckets=RPC_BUCKETS,
)
REMOTE_RETRIES = Counter(
    "virtrigaud_remote_provider_retries_total",
    "Idempotent provider.v1 calls sent again after a transport failure",
    ["provider_type", "provider", "method"],
)
CIRCUIT_STATE = Gauge(
    "virtrigaud_remote_provider_circuit_state",
    "Circuit breaker per remote Provider: 0 closed, 1 half-open, 2 open",
    ["provider_type", "provider"],
)
CIRCUIT_TRANSITIONS = Counter(
    "virtrigaud_remote_provider_circuit_transitions_total",
    "Circuit breaker state changes per remote Provider",
    ["provider_type", "provider", "to"],
)
CIRCUIT_REJECTED = Counter(
    "virtrigaud_remote_provider_circuit_rejected_total",
    "Calls failed fast because the circuit was open",
    ["provider_type", "provider"],
)
