"""How probe outcomes become a Provider's health (pure logic of controllers/provider/health.py)."""

from __future__ import annotations

import time

from virtrigaud.api.provider import ProviderHealthCheck
from virtrigaud.controllers.provider.health import HealthPolicy, Outcome, ProbeMemory
from virtrigaud.providers.base import Cause, EndpointInfo, RetryableError, TerminalError

POLICY = HealthPolicy.of(ProviderHealthCheck())  # 30 s, 3 failures, 1 success


def ok() -> Outcome:
    return Outcome(at=time.monotonic(), info=EndpointInfo(version="8.0"))


def unreachable() -> Outcome:
    return Outcome(at=time.monotonic(), error=RetryableError("down", cause=Cause.UNREACHABLE))


def refused() -> Outcome:
    return Outcome(at=time.monotonic(), error=TerminalError("no", cause=Cause.AUTHENTICATION))


def test_a_healthy_provider_survives_failures_below_the_threshold() -> None:
    m = ProbeMemory()
    m.record("f", ok())
    assert m.healthy(None, POLICY) is True
    for failures in (1, 2):
        m.record("f", unreachable())
        assert m.healthy(True, POLICY) is True, failures
        assert m.last is not None and m.last.reason == "Unreachable"
        assert m.next_delay(POLICY) < POLICY.interval  # looked at again soon
    m.record("f", unreachable())
    assert m.healthy(True, POLICY) is False


def test_refused_credentials_and_a_first_failure_count_at_once() -> None:
    m = ProbeMemory()
    m.record("f", unreachable())
    assert m.healthy(None, POLICY) is False  # never healthy: no grace
    m = ProbeMemory()
    m.record("f", ok())
    m.record("f", refused())
    assert m.healthy(True, POLICY) is False
    assert m.last is not None and m.last.reason == "AuthenticationFailed"


def test_probes_are_due_on_change_and_after_the_interval_only() -> None:
    m = ProbeMemory()
    assert m.due("f", POLICY)
    m.record("f", ok())
    assert not m.due("f", POLICY)
    assert m.due("g", POLICY)  # the Provider or its Secret changed
    assert m.due("f", POLICY, now=time.monotonic() + POLICY.interval + 1)
    off = HealthPolicy.of(ProviderHealthCheck(enabled=False))
    assert not m.due("f", off, now=time.monotonic() + 10 * POLICY.interval)
