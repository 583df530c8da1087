"""A circuit breaker per remote Provider: stop calling a provider server that keeps failing.

Only transport failures count (server down, deadline exceeded, refused handshake, garbage):
a hypervisor error that the server reports is an answer, not a failure of the server.
After ``failure_threshold`` consecutive failures the circuit opens and calls fail at once
with a RetryableError for ``reset_timeout`` seconds; then up to ``half_open_probes`` calls
go through, and the first success closes it (a failure opens it again).

The state is exported as a metric and through ``snapshot()``, which the Provider's status
reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from virtrigaud.providers.base import RetryableError
from virtrigaud.providers.remote.metrics import (
    CIRCUIT_REJECTED,
    CIRCUIT_STATE,
    CIRCUIT_TRANSITIONS,
)

CLOSED, HALF_OPEN, OPEN = "Closed", "HalfOpen", "Open"
_GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(frozen=True)
class BreakerState:
    """What the Provider's status shows about the remote provider's circuit."""

    state: str
    consecutive_failures: int
    last_failure: str | None
    since: datetime


class CircuitBreaker:
    def __init__(
        self,
        provider_type: str,
        provider_key: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.labels = (provider_type, provider_key)
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._last_failure: str | None = None
        self._since = datetime.now(UTC)
        CIRCUIT_STATE.labels(*self.labels).set(0)

    @property
    def state(self) -> str:
        return self._state

    def snapshot(self) -> BreakerState:
        return BreakerState(self._state, self._failures, self._last_failure, self._since)

    def _move(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._since = datetime.now(UTC)
            CIRCUIT_STATE.labels(*self.labels).set(_GAUGE[state])
            CIRCUIT_TRANSITIONS.labels(*self.labels, state).inc()

    def before_call(self) -> None:
        """Let the call through, or raise a RetryableError while the circuit is open."""
        if self._state == OPEN:
            waited = self._clock() - self._opened_at
            if waited < self.reset_timeout:
                CIRCUIT_REJECTED.labels(*self.labels).inc()
                raise RetryableError(
                    f"the remote provider's circuit is open after {self._failures} consecutive "
                    f"failures (last: {self._last_failure}); next try in "
                    f"{self.reset_timeout - waited:.0f} s",
                    retry_after=self.reset_timeout - waited,
                )
            self._move(HALF_OPEN)
            self._probes = 0
        if self._state == HALF_OPEN:
            if self._probes >= self.half_open_probes:
                CIRCUIT_REJECTED.labels(*self.labels).inc()
                raise RetryableError(
                    "the remote provider's circuit is half-open and its probe call is running",
                    retry_after=1.0,
                )
            self._probes += 1

    def on_success(self) -> None:
        self._failures = 0
        self._move(CLOSED)

    def on_failure(self, what: str) -> None:
        self._failures += 1
        self._last_failure = what
        if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._move(OPEN)

    def on_neutral(self) -> None:
        """The call ended without saying anything about the server (e.g. cancelled)."""
        if self._state == HALF_OPEN:
            self._probes = max(0, self._probes - 1)
