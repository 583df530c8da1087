"""Fencing at the point of mutation: a hypervisor call that changes something is sent only
while the caller's claim on the object it acts for still holds.

The shard runtime sets a ``Claim`` for the duration of each reconcile (a context
variable, so it follows the reconcile into every await). The call gate checks it twice
for every mutating call: before paying the token (and, where the bucket lives in Redis,
inside the same atomic script, against the owner stamp the leader recorded for the key)
and again in the worker thread right before the SDK call. A stale owner (a shard that
lost its lease, or whose key was handed to another shard) gets ``Fenced`` and sends
nothing. Calls made without a claim (tools, tests, the sweep's reads) are not fenced.
"""

from __future__ import annotations

import contextvars
from typing import Protocol

OWNER_REGISTRY = "virtrigaud:owners"
"""The Redis hash of owner stamps (key -> "token:sequence") the leader writes before it
hands a key to a shard; the token bucket's script refuses mutations of older owners."""

STAMP_LOW_BITS = 40
"""A stamp is (leader token << 40) | sequence; Redis compares the two halves (Lua numbers
are doubles, exact only to 2**53)."""


class Fenced(Exception):
    """This process may no longer act for the key: nothing was sent to the hypervisor."""


class Claim(Protocol):
    key: str  # the object's key, e.g. "namespace/name"

    @property
    def stamp(self) -> int:
        """The grant under which this shard owns the key now."""
        ...

    def check(self) -> None:
        """Raise Fenced if the claim no longer holds."""
        ...


CLAIM: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "virtrigaud_claim", default=None
)


def split_stamp(stamp: int) -> tuple[int, int]:
    return stamp >> STAMP_LOW_BITS, stamp & ((1 << STAMP_LOW_BITS) - 1)


def join_stamp(token: int, sequence: int) -> int:
    return (token << STAMP_LOW_BITS) | sequence
