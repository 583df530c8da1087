"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

One elector per `virtrigaud run` process. The holder renews the Lease every retry period;
a candidate takes it over once it has seen the same record unchanged for a whole lease
duration, measured on its own monotonic clock (so wall-clock skew between machines does not
matter, only clock rate). Every write carries the Lease's resourceVersion, so two candidates
racing for an expired Lease cannot both win: the loser gets 409 Conflict.

The leader stops leading (cancels the leading work and calls `on_stopped_leading`) as soon
as it has not renewed for `renew_deadline`, which is shorter than the lease duration: it
gives up before any standby may take over. On a graceful exit it releases the Lease
(empty holder, 1 s duration) so a standby takes over at its next retry instead of waiting
for expiry.

`leaseTransitions` counts acquisitions of leadership (including a holder that lost the
Lease and took it back), so `term` is unique and increasing across leaders; the
coordinator derives its ring epochs from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import LEASES

log = logging.getLogger("virtrigaud.leader.election")

JSON = dict[str, Any]


@dataclass(frozen=True)
class LeaseTimings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # client-go's rule: a renewal attempt must fit in the deadline with jitter to spare,
        # and the leader must give up before a standby may take over.
        if not self.retry_period * 1.2 < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election timings need retry_period * 1.2 < renew_deadline < "
                f"lease_duration, got retry {self.retry_period}s, renew deadline "
                f"{self.renew_deadline}s, lease {self.lease_duration}s: lengthen the lease "
                "or shorten the retry period"
            )


def micro_time(now: datetime | None = None) -> str:
    """A metav1.MicroTime string."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


StartedLeading = Callable[[int], Coroutine[Any, Any, None]]


class LeaderElector:
    """Campaigns for one Lease and runs `on_started_leading(term)` while it holds it."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        on_started_leading: StartedLeading,
        on_stopped_leading: Callable[[], None] | None = None,
        timings: LeaseTimings | None = None,
    ) -> None:
        if not identity:
            raise ValueError(f"Lease {namespace}/{name}: the elector needs a non-empty identity")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._observed: tuple[str, str, int] | None = None  # holder, renewTime, transitions
        self._observed_at = 0.0
        self._leading = False
        self.term = 0
        self.leading_changed = asyncio.Event()
        # Monotonic time taken *before* the last successful acquire/renew request was sent:
        # the Lease's renewTime is no earlier, so leadership surely holds until this plus
        # the renew deadline (the elector steps down then at the latest).
        self._renewed_at = 0.0
        self.took_over = False  # the current term began by taking over an expired Lease

    @property
    def is_leader(self) -> bool:
        return self._leading

    def valid_until(self) -> float:
        """Monotonic time until which this process surely leads (0 when it does not)."""
        if not self._leading:
            return 0.0
        return self._renewed_at + self.timings.renew_deadline

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign, lead, and campaign again after losing, until `stop` is set.

        An exception from the leading work is re-raised after the Lease is released.
        """
        while not stop.is_set():
            if not await self._acquire(stop):
                return
            log.info(
                "started leading",
                extra={"lease": f"{self.namespace}/{self.name}", "term": self.term},
            )
            self._set_leading(True)
            work: asyncio.Task[None] = asyncio.create_task(
                self._on_started(self.term), name="leading"
            )
            try:
                lost = await self._hold(stop, work)
            finally:
                if not work.done():
                    work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(work, return_exceptions=True)
                self._set_leading(False)
                if self._on_stopped is not None:
                    self._on_stopped()
            if not lost:
                await self.release()
                failure = work.exception() if work.done() and not work.cancelled() else None
                if failure is not None:
                    raise failure
                if stop.is_set():
                    return
                # The leading work ended by itself (it found a newer leader's epoch, say):
                # step down and campaign again.
                log.warning(
                    "stepped down: the leading work ended",
                    extra={"lease": f"{self.namespace}/{self.name}", "term": self.term},
                )
                if await _wait(stop, self.timings.retry_period):
                    return
                continue
            log.warning(
                "stopped leading: the Lease was not renewed within the renew deadline",
                extra={"lease": f"{self.namespace}/{self.name}", "term": self.term},
            )

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        self.leading_changed.set()
        self.leading_changed = asyncio.Event()

    async def _acquire(self, stop: asyncio.Event) -> bool:
        """Retry every retry period until we hold the Lease (True) or stop is set (False)."""
        while not stop.is_set():
            if await self._attempt(self.timings.renew_deadline):
                return True
            if await _wait(stop, self.timings.retry_period):
                return False
        return False

    async def _hold(self, stop: asyncio.Event, work: asyncio.Task[None]) -> bool:
        """Renew until stop (False) or the renew deadline passes without a renewal (True)."""
        while True:
            sleeper = asyncio.create_task(_wait(stop, self.timings.retry_period))
            await asyncio.wait({sleeper, work}, return_when=asyncio.FIRST_COMPLETED)
            if work.done() or stop.is_set():
                sleeper.cancel()
                return False
            remaining = self._renewed_at + self.timings.renew_deadline - time.monotonic()
            if remaining > 0:
                await self._attempt(remaining)
            if time.monotonic() - self._renewed_at >= self.timings.renew_deadline:
                return True

    # -- one try ---------------------------------------------------------------------------

    async def _attempt(self, budget: float) -> bool:
        sent_at = time.monotonic()
        try:
            if await asyncio.wait_for(self._try_acquire_or_renew(), timeout=budget):
                self._renewed_at = sent_at
                return True
            return False
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            log.warning(
                "Lease %s/%s: could not reach the API server: %s", self.namespace, self.name, e
            )
        except ApiError as e:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, e)
        return False

    async def _try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = await self.kube.get(LEASES, self.name, self.namespace)
        except ApiError as e:
            if not e.not_found:
                raise
            return await self._create(now)
        spec: JSON = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        transitions = int(spec.get("leaseTransitions") or 0)
        record = (holder, str(spec.get("renewTime") or ""), transitions)
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.timings.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > time.monotonic():
            return False
        renewing = holder == self.identity and self._leading
        if not renewing:
            transitions += 1
            # Taking over a Lease another process held and did not release: that process
            # may have led (and granted shard leases) until its renew deadline.
            self.took_over = bool(holder) and holder != self.identity
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self.timings.lease_duration),
            "acquireTime": spec.get("acquireTime") if renewing else micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }
        lease["spec"] = new_spec
        try:
            updated = await self.kube.replace(LEASES, lease)
        except ApiError as e:
            if e.conflict:
                return False  # someone else wrote first: they won this round
            raise
        self._observe_own(updated)
        self.term = transitions
        return True

    async def _create(self, now: datetime) -> bool:
        lease = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": round(self.timings.lease_duration),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 1,
            },
        }
        try:
            created = await self.kube.create(LEASES, lease, self.namespace)
        except ApiError as e:
            if e.conflict:
                return False
            raise
        self._observe_own(created)
        self.term = 1
        self.took_over = False
        return True

    def _observe_own(self, lease: JSON) -> None:
        spec = lease.get("spec") or {}
        self._observed = (
            str(spec.get("holderIdentity") or ""),
            str(spec.get("renewTime") or ""),
            int(spec.get("leaseTransitions") or 0),
        )
        self._observed_at = time.monotonic()

    async def release(self) -> bool:
        """Give the Lease up if we hold it, so a standby takes over at its next retry."""
        try:
            lease = await self.kube.get(LEASES, self.name, self.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return False
            now = micro_time()
            lease["spec"] = {
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            await self.kube.replace(LEASES, lease)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("Lease %s/%s: release failed: %s", self.namespace, self.name, e)
            return False
        log.info("released the Lease", extra={"lease": f"{self.namespace}/{self.name}"})
        return True


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
