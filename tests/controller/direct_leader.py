"""A stand-in leader for tests that drive a `ShardRuntime` directly, without Ray: it
speaks the shard protocol (token, incarnation, stamps, a lease) the way the coordinator
does, one message at a time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from virtrigaud.fence import join_stamp
from virtrigaud.shards.runtime import Ack, ShardRuntime


class DirectLeader:
    def __init__(self, runtime: ShardRuntime, token: int = 1, lease: float = 3600.0) -> None:
        self.runtime = runtime
        self.token = token
        self.lease = lease
        self._sequence = 0
        self._request = 0

    def stamp(self) -> int:
        self._sequence += 1
        return join_stamp(self.token, self._sequence)

    async def lead(self) -> Ack:
        """Retain nothing, then grant the lease: the shard reconciles from now on."""
        ack = await self.runtime.retain(self.token, self.runtime.incarnation, [], self.stamp())
        self._request = ack.request
        self.renew()
        return ack

    def renew(self, duration: float | None = None) -> Ack:
        ack = self.runtime.heartbeat(
            self.token,
            self.runtime.incarnation,
            self._request,
            self.lease if duration is None else duration,
            0,
        )
        self._request = ack.request
        return ack

    def accept(self, items: Iterable[tuple[str, Any]]) -> Ack:
        return self.runtime.accept(self.token, self.runtime.incarnation, self.stamp(), list(items))

    def deliver(self, items: Iterable[tuple[str, Any]]) -> Ack:
        return self.runtime.deliver(self.token, self.runtime.incarnation, self.stamp(), list(items))

    async def release(self, keys: Iterable[str], wait: float = 5.0) -> Ack:
        return await self.runtime.release(
            self.token, self.runtime.incarnation, self.stamp(), list(keys), wait
        )

    def touch(self, changed: Iterable[str]) -> Ack:
        """Objects others depend on changed (what the coordinator broadcasts)."""
        return self.runtime.touch(self.token, self.runtime.incarnation, list(changed))
