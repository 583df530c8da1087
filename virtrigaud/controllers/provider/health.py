"""How probe outcomes become a Provider's health: thresholds, timing, reasons.

A probe is one cheap call (``Provider.probe``). A Provider that was never healthy, or
whose probe fails in a way retrying cannot fix (credentials refused, TLS, version, an
invalid spec), is unhealthy at once; a healthy one turns unhealthy only after
``spec.healthCheck.failureThreshold`` failures in a row, probed again soon after each.
Probes run when the Provider or its Secret changes and every ``interval`` otherwise;
deliveries in between (usage changes, the echo of our own status write) reuse the last
outcome, so they cost no hypervisor call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from virtrigaud.api.common import parse_duration
from virtrigaud.api.provider import ProviderHealthCheck
from virtrigaud.controllers.virtualmachine.memory import backoff
from virtrigaud.providers.base import EndpointInfo, ProviderError, RetryableError

PROBE_FAILED = "ProbeFailed"  # a failure the provider could not attribute
RETRY_FIRST = 2.0  # seconds before the first re-probe after a failure
MIN_INTERVAL = 1.0


@dataclass
class HealthPolicy:
    enabled: bool
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int

    @staticmethod
    def of(check: ProviderHealthCheck | None) -> HealthPolicy:
        check = check or ProviderHealthCheck()
        return HealthPolicy(
            enabled=check.enabled,
            interval=max(MIN_INTERVAL, parse_duration(check.interval).total_seconds()),
            timeout=max(MIN_INTERVAL, parse_duration(check.timeout).total_seconds()),
            failure_threshold=check.failure_threshold,
            success_threshold=check.success_threshold,
        )


@dataclass
class Outcome:
    """One probe: the endpoint's answer, or why it failed."""

    at: float  # monotonic
    info: EndpointInfo | None = None
    error: ProviderError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> str:
        if self.error is None:
            return "ProbeSucceeded"
        return self.error.cause.value if self.error.cause is not None else PROBE_FAILED


@dataclass
class ProbeMemory:
    """What one Provider key's last probes were (per shard process; status survives)."""

    fingerprint: str = ""
    last: Outcome | None = None
    failures: int = 0
    successes: int = 0
    secrets: frozenset[str] = frozenset()  # the Secret keys the last pass read

    def due(self, fingerprint: str, policy: HealthPolicy, now: float | None = None) -> bool:
        """Whether this pass must probe (config changed, or the interval passed)."""
        if self.last is None or fingerprint != self.fingerprint:
            return True
        if not policy.enabled and self.last.ok:
            return False  # checks are off: only a changed Provider or Secret is probed
        return (now or time.monotonic()) >= self.last.at + self.next_delay(policy)

    def record(self, fingerprint: str, outcome: Outcome) -> None:
        if fingerprint != self.fingerprint:
            self.failures = self.successes = 0
        self.fingerprint = fingerprint
        self.last = outcome
        if outcome.ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0

    def healthy(self, was_healthy: bool | None, policy: HealthPolicy) -> bool:
        """The health to report after the last outcome, given what status said before."""
        last = self.last
        assert last is not None
        if last.ok:
            return was_healthy is True or self.successes >= policy.success_threshold
        if was_healthy is not True or not isinstance(last.error, RetryableError):
            return False
        return self.failures < policy.failure_threshold

    def next_delay(self, policy: HealthPolicy) -> float:
        """Seconds from the last probe to the next one."""
        if self.last is None or self.last.ok or not policy.enabled:
            return policy.interval
        return min(policy.interval, backoff(RETRY_FIRST, policy.interval, self.failures - 1))
