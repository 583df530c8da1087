"""The shard's lease: its permission to reconcile, renewed by its leader's heartbeats.

A shard acts only while it holds a lease, and it measures the lease from a moment the
leader cannot misjudge: when the shard itself *made* a renewal request. Each heartbeat
from the leader carries a grant for the request the shard handed out in its previous
answer, and asks for a new one. The grant extends the lease to ``request time +
duration`` on the shard's clock. The leader received that request after the shard made
it, so from the leader's side the lease ends no later than ``when I received request n +
duration``: once that has passed (plus a margin for clock rate), the leader may give the
shard's keys away even if it never hears from the shard again. A grant that is delayed in
the network only ever grants a lease that started in the past.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Requests kept for granting: a grant names one of the last few requests; older ones
# could only grant a lease that has already run out.
KEPT_REQUESTS = 32


class ShardLease:
    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._requests: dict[int, float] = {}
        self._next = 1
        self.until = 0.0  # on this shard's monotonic clock; 0: never granted
        self.granted = 0  # how many grants extended the lease

    def request(self) -> int:
        """A new renewal request; its number goes to the leader in the answer."""
        n = self._next
        self._next += 1
        self._requests[n] = self._now()
        if len(self._requests) > KEPT_REQUESTS:
            del self._requests[min(self._requests)]
        return n

    def grant(self, request: int, duration: float) -> bool:
        """Apply the leader's grant for `request`; True if it extended the lease."""
        made = self._requests.get(request)
        if made is None:
            return False
        for n in [n for n in self._requests if n <= request]:
            del self._requests[n]
        until = made + duration
        if until <= self.until:
            return False
        self.until = until
        self.granted += 1
        return True

    def forget_requests(self) -> None:
        """Requests made so far can no longer be granted (the shard was reset)."""
        self._requests.clear()

    def revoke(self) -> None:
        self.until = 0.0
        self._requests.clear()

    def valid(self) -> bool:
        return self._now() < self.until

    def remaining(self) -> float:
        return max(0.0, self.until - self._now())
