"""One shard as the leader sees it: its actor handle, the incarnation it talks to, the lease
it has granted, and the messages it has in flight.

Every coordinator message to a shard goes through ``ShardLink.call``, which keeps two
things the protocol needs (protocol.md in virtrigaud/shards/):

* the *floor*: the lowest stamp drawn for a message to this shard that has not been
  answered yet. A stamp is held from the moment it is drawn, so a heartbeat sent while
  the message still waits to go out cannot raise the floor past it. The heartbeat
  carries the floor; the shard forgets what it remembered only to order messages below
  it, and refuses anything that still arrives below it. A message whose call failed or
  timed out counts as answered: the leader has already decided anew (resent with a
  fresh stamp, or moved the keys), and a late copy is refused as stale.
* the *lease bound*: when the leader sends a grant for request n it assumes the grant
  arrives, so the shard's lease surely ends by ``when n was received + duration``,
  stretched by ``drift`` and a ``margin``. Only after that may its keys go elsewhere
  without the shard's own word.

``invoke`` is the one place a call reaches Ray; tests override it to delay, reorder and
drop messages.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LeaseTerms:
    duration: float = 4.0  # the shard's lease per grant, on the shard's clock
    heartbeat: float = 1.0  # how often the leader renews it
    drift: float = 0.05  # clocks may run this much slower or faster than each other
    margin: float = 0.5  # seconds on top, for scheduling delays in the shard's fence

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat * 2 < self.duration:
            raise ValueError(
                f"shard lease {self.duration}s must be more than twice the heartbeat period "
                f"{self.heartbeat}s, so one lost heartbeat does not fence a shard; lengthen "
                "the lease or shorten the heartbeat"
            )

    @property
    def bound(self) -> float:
        """From receiving a request to the moment its grant has surely run out."""
        return self.duration * (1 + self.drift) + self.margin


@dataclass
class ShardLink:
    index: int
    name: str
    actor: Any
    incarnation: str = ""
    metrics_port: int = 0
    lease_end: float = 0.0  # monotonic: the shard's lease has surely run out by then
    request: int = 0  # lease request received in the last answer, granted next
    request_at: float = 0.0
    alive_since: float | None = None  # while out of the ring: first answer of this run
    audit_closed: bool = False  # the audit knows this incarnation is gone
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _open: dict[int, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def floor(self, next_stamp: int) -> int:
        return min(self._open.values(), default=next_stamp)

    def note_request(self, request: int) -> None:
        if request:
            self.request = request
            self.request_at = time.monotonic()

    def granting(self, terms: LeaseTerms) -> int:
        """The request to grant in the next heartbeat; moves the lease bound first (the
        grant may arrive even if the answer never does)."""
        if self.request:
            self.lease_end = max(self.lease_end, self.request_at + terms.bound)
        return self.request

    def fenced_by(self, now: float | None = None) -> bool:
        """True once the shard's lease has surely run out."""
        return (now if now is not None else time.monotonic()) >= self.lease_end

    def hold(self, stamp: int) -> int:
        """Keep the floor at or below `stamp` until `call(..., held=<this>)` is answered."""
        mid = next(self._ids)
        self._open[mid] = stamp
        return mid

    async def call(
        self, method: str, *args: Any, held: int | None = None, timeout: float | None = None
    ) -> Any:
        """Send one message; a `held` stamp stops holding the floor once it is answered."""
        try:
            if timeout is None:
                return await self.invoke(method, *args)
            return await asyncio.wait_for(self.invoke(method, *args), timeout)
        finally:
            if held is not None:
                self._open.pop(held, None)

    async def invoke(self, method: str, *args: Any) -> Any:
        return await getattr(self.actor, method).remote(*args)

    def cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.tasks = [t for t in self.tasks if t is current]
