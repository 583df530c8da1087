"""Prometheus metrics for hypervisor calls, recorded only by the call gate."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Hypervisor operations range from sub-millisecond reads to half-hour exports.
CALL_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
)

HYPERVISOR_CALLS = Counter(
    "virtrigaud_hypervisor_calls_total",
    "Hypervisor API calls by provider, method and outcome",
    ["provider_type", "provider", "method", "outcome"],
)
HYPERVISOR_CALL_SECONDS = Histogram(
    "virtrigaud_hypervisor_call_seconds",
    "Latency of hypervisor API calls (excluding rate-limit waits)",
    ["provider_type", "provider", "method"],
    buckets=CALL_BUCKETS,
)
RATE_LIMIT_WAIT_SECONDS = Histogram(
    "virtrigaud_hypervisor_ratelimit_wait_seconds",
    "Time spent waiting for a rate-limit token before a hypervisor call",
    ["provider_type", "provider"],
    buckets=(0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

FENCED_CALLS = Counter(
    "virtrigaud_hypervisor_fenced_calls_total",
    "Hypervisor mutations refused because this shard no longer held the key they were for",
    ["provider_type", "provider", "method"],
)
