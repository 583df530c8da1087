"""The call gate: the one choke point every hypervisor call goes through.

It waits for a free slot (the endpoint's in-flight cap, never more than the session
pool's threads), then takes a token from the Provider's shared bucket, then runs the
blocking SDK call in that pool, maps SDK exceptions to the three error kinds, and counts
the call. Providers never call an SDK any other way, so "every call pays a token" holds by
construction; and because the token is taken only once a thread is free, a call is sent
right after it was paid for: calls reach the hypervisor at the pace tokens are granted,
not in bunches released by a queue.

Calls are mutations unless a provider marks them ``mutating=False`` (reads): a mutation
made under a shard's claim on a key (virtrigaud.fence) is fenced, checked before the token
and again in the worker thread just before the SDK call, so a shard that lost the key
sends nothing. A fenced shard incarnation gets no token at all (ratelimit/shared.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from virtrigaud.fence import CLAIM, Claim, Fenced
from virtrigaud.providers.base import ProviderError
from virtrigaud.providers.metrics import (
    FENCED_CALLS,
    HYPERVISOR_CALL_SECONDS,
    HYPERVISOR_CALLS,
    RATE_LIMIT_WAIT_SECONDS,
)

T = TypeVar("T")


class TokenLimiter(Protocol):
    """A shared token bucket (Redis, a Ray actor, or the local fallback share)."""

    async def acquire(self, bucket_key: str, qps: float, burst: int, cost: int = 1) -> float:
        """Wait until cost tokens are granted; return the seconds waited (Fenced when this
        shard incarnation may no longer call)."""
        ...


@dataclass(frozen=True)
class RateLimit:
    qps: float = 10.0
    burst: int = 20


ErrorMapper = Callable[[BaseException], ProviderError]


class CallCount:
    """Tokens paid by the calls made inside one ``counting_calls()`` block."""

    def __init__(self) -> None:
        self.tokens = 0


_COUNTING: contextvars.ContextVar[CallCount | None] = contextvars.ContextVar(
    "virtrigaud_call_count", default=None
)


@contextlib.contextmanager
def counting_calls() -> Iterator[CallCount]:
    """Count the tokens every gate pays inside this block (and the tasks it starts).

    A remote provider server reports the count to its caller, which pays the same number of
    tokens from the shared bucket, so a hypervisor behind a server is held to the same budget.
    """
    count = CallCount()
    reset = _COUNTING.set(count)
    try:
        yield count
    finally:
        _COUNTING.reset(reset)


class CallGate:
    def __init__(
        self,
        *,
        provider_type: str,
        provider_key: str,
        rate: RateLimit,
        limiter: TokenLimiter,
        executor: ThreadPoolExecutor,
        map_error: ErrorMapper,
        max_in_flight: int | None = None,
    ) -> None:
        self.provider_type = provider_type
        self.provider_key = provider_key
        self.rate = rate
        self.limiter = limiter
        self.executor = executor
        self.map_error = map_error
        threads: int = getattr(executor, "_max_workers", max_in_flight or 1)
        self._slots = asyncio.Semaphore(min(max_in_flight or threads, threads))

    @property
    def bucket_key(self) -> str:
        return f"provider:{self.provider_key}"

    def _check(self, claim: Claim, method: str) -> None:
        try:
            claim.check()
        except Fenced:
            FENCED_CALLS.labels(self.provider_type, self.provider_key, method).inc()
            raise

    async def pay(self, cost: int = 1, *, method: str = "", mutating: bool = False) -> float:
        """Take cost tokens from the Provider's bucket; return the seconds waited.

        A mutation made under a claim (virtrigaud.fence) checks the claim first."""
        claim = CLAIM.get() if mutating else None
        if claim is not None:
            self._check(claim, method)
        try:
            waited = await self.limiter.acquire(
                self.bucket_key, self.rate.qps, self.rate.burst, cost
            )
        except Fenced:
            FENCED_CALLS.labels(self.provider_type, self.provider_key, method).inc()
            raise
        RATE_LIMIT_WAIT_SECONDS.labels(self.provider_type, self.provider_key).observe(waited)
        count = _COUNTING.get()
        if count is not None:
            count.tokens += cost
        return waited

    async def call(
        self, method: str, fn: Callable[[], T], *, cost: int = 1, mutating: bool = True
    ) -> T:
        """Pay for and run one hypervisor call; raise ProviderError on failure, Fenced when
        a mutation's claim no longer holds."""
        claim = CLAIM.get() if mutating else None
        run = fn if claim is None else _guarded(claim, fn)
        loop = asyncio.get_running_loop()
        async with self._slots:
            await self.pay(cost, method=method, mutating=mutating)
            start = time.perf_counter()
            outcome = "ok"
            try:
                return await loop.run_in_executor(self.executor, run)
            except Fenced:
                outcome = "fenced"
                FENCED_CALLS.labels(self.provider_type, self.provider_key, method).inc()
                raise
            except ProviderError as e:
                outcome = e.kind.value
                raise
            except Exception as e:
                mapped = self.map_error(e)
                outcome = mapped.kind.value
                raise mapped from e
            finally:
                HYPERVISOR_CALLS.labels(
                    self.provider_type, self.provider_key, method, outcome
                ).inc()
                HYPERVISOR_CALL_SECONDS.labels(
                    self.provider_type, self.provider_key, method
                ).observe(time.perf_counter() - start)


def _guarded(claim: Claim, fn: Callable[[], T]) -> Callable[[], T]:
    """fn, preceded by a last look at the claim in the worker thread: the executor's queue
    and the in-flight cap may have held the call for a while."""

    def run() -> T:
        claim.check()
        return fn()

    return run
