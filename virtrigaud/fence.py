"""Fencing: a shard sends a hypervisor call only while it may still act.

Two layers, both checked where a call is paid for (virtrigaud.providers.calls):

* the *claim*: the shard runtime sets a ``Claim`` for the duration of each reconcile (a
  context variable, so it follows the reconcile into every await). A mutating call checks
  it before it takes its token and again in the worker thread right before the SDK call:
  a shard whose lease ran out, or whose key was released, gets ``Fenced`` and sends
  nothing. Calls made without a claim (tools, tests, the sweep's reads) are not fenced.
* the *incarnation fence*: when the leader gives up a shard incarnation (it died,
  restarted or stayed unreachable past its lease) it sets that incarnation's fence key in
  Redis before it hands the keys to other shards. From then on the token bucket refuses
  that incarnation every token, so a shard that misjudged its own lease (a frozen process
  that resumed, a skewed clock) cannot pay for a call either, beyond the tokens it was
  lent for at most a lease (ratelimit/shared.py). Without Redis the claim alone fences.
"""

from __future__ import annotations

import contextvars
from typing import Protocol

from virtrigaud.instance import RedisKeys

FENCE_PREFIX = RedisKeys().fenced
"""Redis key prefix of fenced shard incarnations (the value is the shard's name)."""
FENCE_TTL_SECONDS = 7 * 24 * 3600
"""An incarnation id is never reused; its fence outlives any process that could hold it."""

STAMP_LOW_BITS = 40
"""A stamp is (leader token << 40) | sequence."""


class Fenced(Exception):
    """This process may no longer act for the key: nothing was sent to the hypervisor."""


class Claim(Protocol):
    key: str  # the object's key, Kind/namespace/name

    def check(self) -> None:
        """Raise Fenced if the claim no longer holds."""
        ...


CLAIM: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "virtrigaud_claim", default=None
)


def fence_key(incarnation: str, prefix: str = FENCE_PREFIX) -> str:
    return f"{prefix}{incarnation}"


def split_stamp(stamp: int) -> tuple[int, int]:
    return stamp >> STAMP_LOW_BITS, stamp & ((1 << STAMP_LOW_BITS) - 1)


def join_stamp(token: int, sequence: int) -> int:
    return (token << STAMP_LOW_BITS) | sequence
