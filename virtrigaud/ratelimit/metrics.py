"""Prometheus metrics of the per-Provider rate limiter, labelled by bucket key."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WAIT_SECONDS = Histogram(
    "virtrigaud_ratelimit_wait_seconds",
    "Time acquire() waited for a token",
    ["bucket"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DECISIONS = Counter(
    "virtrigaud_ratelimit_decisions_total",
    "Bucket decisions by where they were made (redis, actor, or the local fallback)",
    ["bucket", "source"],
)
DENIALS = Counter(
    "virtrigaud_ratelimit_denials_total", "Decisions that refused a token", ["bucket"]
)
FALLBACK_ACTIVE = Gauge(
    "virtrigaud_ratelimit_fallback_active",
    "1 while this bucket is served by the local per-shard share because the shared "
    "backend does not answer",
    ["bucket"],
)
FALLBACKS = Counter(
    "virtrigaud_ratelimit_fallbacks_total",
    "Times this bucket switched to the local per-shard share",
    ["bucket"],
)
FENCED = Counter(
    "virtrigaud_ratelimit_fenced_total",
    "Token requests refused because this shard incarnation is fenced",
    ["bucket"],
)
LEASED = Counter(
    "virtrigaud_ratelimit_leased_tokens_spent_total",
    "Tokens spent from a lease, without a round trip to the shared backend",
    ["bucket"],
)
