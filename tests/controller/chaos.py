"""Fault injection between the coordinator and its shards, for the one-owner tests.

`ChaosCoordinator` builds `ChaosLink`s instead of plain links: every protocol message to a
shard is held back by a random delay drawn from a seeded generator (so two messages to
one shard often run in the other order), a link can be *cut* (every call hangs until
the caller's timeout: the shard process is alive, its leader cannot reach it), and a link
can *lie* about the lease it grants (the shard is told a far longer lease than the
leader reckons with), which breaks self-fencing on purpose.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from virtrigaud.leader.coordinator import Coordinator
from virtrigaud.leader.links import ShardLink
from virtrigaud.shards.actor import shard_name

# Only protocol messages are delayed; probes and stats are not part of the race.
DELAYED = {"accept", "deliver", "release", "retain", "reset", "heartbeat"}


class ChaosLink(ShardLink):
    rnd: random.Random
    max_delay: float = 0.0
    cut: bool = False
    granted_duration: float | None = None  # what the shard is told, if lying

    async def invoke(self, method: str, *args: Any) -> Any:
        if self.cut:
            await asyncio.Event().wait()  # never answers; the caller's timeout fires
        if method in DELAYED and self.max_delay:
            await asyncio.sleep(self.rnd.uniform(0, self.max_delay))
            if self.cut:
                await asyncio.Event().wait()
        if method == "heartbeat" and self.granted_duration is not None:
            token, incarnation, grant, _duration, floor = args
            args = (token, incarnation, grant, self.granted_duration, floor)
        return await super().invoke(method, *args)


class ChaosCoordinator(Coordinator):
    def __init__(self, *args: Any, seed: int = 0, max_delay: float = 0.0, **kwargs: Any) -> None:
        self.chaos = random.Random(seed)
        self.max_delay = max_delay
        self.lie_about_leases: float | None = None
        super().__init__(*args, **kwargs)

    def _link(self, index: int, actor: Any) -> ShardLink:
        link = ChaosLink(index, shard_name(index), actor)
        link.rnd = random.Random(self.chaos.random())
        link.max_delay = self.max_delay
        link.granted_duration = self.lie_about_leases
        return link

    def cut(self, name: str, cut: bool = True) -> None:
        for link in (self.shards.get(name), self.dead.get(name)):
            if isinstance(link, ChaosLink):
                link.cut = cut
