"""The ownership table under every message order: a randomized model check.

A model leader decides moves the way the coordinator does (a key is accepted by a shard
only when no shard holds it: it is new, or its holder answered a release) and stamps every
message from one counter. Its messages reach each shard in a random order, some are lost
(the leader then decides anew with a fresh stamp, while the lost copy may still arrive
much later), and heartbeats carry the floor. After every step no key may be owned by two
shards; when everything is delivered each shard owns exactly what the leader thinks it
holds. The same check against a table that applies messages in arrival order (the old
protocol) finds a second owner, so the check can fail.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from virtrigaud.shards.ownership import OwnershipTable


@dataclass
class Msg:
    shard: int
    kind: str  # accept, deliver, release, floor
    key: str
    stamp: int
    mid: int


@dataclass
class NaiveTable:
    """Applies messages in arrival order, with no stamps: what Ray ordering broke."""

    owned: set[str] = field(default_factory=set)

    def accept(self, key: str, stamp: int, obj: object) -> bool:
        self.owned.add(key)
        return True

    def deliver(self, key: str, stamp: int, obj: object) -> bool:
        return key in self.owned

    def release(self, key: str, stamp: int) -> bool:
        was = key in self.owned
        self.owned.discard(key)
        return was

    def raise_floor(self, floor: int) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return key in self.owned


class Model:
    def __init__(self, seed: int, shards: int, keys: int, naive: bool = False) -> None:
        self.rnd = random.Random(seed)
        self.tables: list[OwnershipTable | NaiveTable] = [
            NaiveTable() if naive else OwnershipTable() for _ in range(shards)
        ]
        self.keys = [f"k{i}" for i in range(keys)]
        self.stamp = 0
        self.mid = 0
        self.holder: dict[str, int] = {}
        self.releasing: dict[str, tuple[int, int]] = {}  # key -> (shard, mid of the release)
        self.flight: list[Msg] = []
        self.open: dict[int, dict[int, int]] = {s: {} for s in range(shards)}  # mid -> stamp

    def send(self, shard: int, kind: str, key: str) -> Msg:
        self.stamp += 1
        self.mid += 1
        msg = Msg(shard, kind, key, self.stamp, self.mid)
        if kind != "floor":
            self.open[shard][msg.mid] = msg.stamp
        self.flight.append(msg)
        return msg

    def floor(self, shard: int) -> int:
        return min(self.open[shard].values(), default=self.stamp + 1)

    def answered(self, msg: Msg) -> None:
        self.open[msg.shard].pop(msg.mid, None)

    def decide(self) -> None:
        rnd = self.rnd
        key = rnd.choice(self.keys)
        shards = len(self.tables)
        if key in self.releasing:
            return
        holder = self.holder.get(key)
        roll = rnd.random()
        if holder is None:
            target = rnd.randrange(shards)
            self.holder[key] = target
            self.send(target, "accept", key)
        elif roll < 0.5:
            self.send(holder, "deliver", key)
        elif roll < 0.9:
            msg = self.send(holder, "release", key)
            self.releasing[key] = (holder, msg.mid)
        else:
            self.send(rnd.randrange(shards), "floor", "")

    def deliver_one(self) -> None:
        rnd = self.rnd
        msg = self.flight.pop(rnd.randrange(len(self.flight)))
        if rnd.random() < 0.1 and msg.kind != "floor":
            # The call fails at the leader; the message may still arrive much later.
            self.answered(msg)
            self.flight.insert(0, msg)  # delivered at some later point
            self.recover(msg)
            return
        table = self.tables[msg.shard]
        if msg.kind == "accept":
            table.accept(msg.key, msg.stamp, {})
        elif msg.kind == "deliver":
            table.deliver(msg.key, msg.stamp, {})
        elif msg.kind == "release":
            table.release(msg.key, msg.stamp)
        else:
            table.raise_floor(self.floor(msg.shard))
        self.answered(msg)
        if msg.kind == "release" and self.releasing.get(msg.key) == (msg.shard, msg.mid):
            # Answered: the holder gave it up; only now may another shard accept it.
            del self.releasing[msg.key]
            self.holder.pop(msg.key, None)

    def recover(self, msg: Msg) -> None:
        """What the leader does when a call fails: decide anew, with a fresh stamp."""
        if msg.kind == "accept" and self.holder.get(msg.key) == msg.shard:
            if msg.key not in self.releasing:
                self.send(msg.shard, "accept", msg.key)
        elif msg.kind == "release" and self.releasing.get(msg.key, (None, None))[1] == msg.mid:
            retry = self.send(msg.shard, "release", msg.key)
            self.releasing[msg.key] = (msg.shard, retry.mid)

    def owners(self, key: str) -> list[int]:
        return [i for i, t in enumerate(self.tables) if key in t]

    def run(self, steps: int) -> str | None:
        """None if the invariant held throughout, else a description of the violation."""
        for step in range(steps):
            if self.flight and self.rnd.random() < 0.55:
                self.deliver_one()
            else:
                self.decide()
            for key in self.keys:
                owners = self.owners(key)
                if len(owners) > 1:
                    return f"step {step}: {key} owned by shards {owners}"
        # Quiesce: answer everything, the lost copies included.
        while self.flight:
            msg = self.flight.pop(0)
            table = self.tables[msg.shard]
            if msg.kind == "accept":
                table.accept(msg.key, msg.stamp, {})
            elif msg.kind == "release":
                table.release(msg.key, msg.stamp)
            self.answered(msg)
            if msg.kind == "release" and self.releasing.get(msg.key) == (msg.shard, msg.mid):
                del self.releasing[msg.key]
                self.holder.pop(msg.key, None)
            for key in self.keys:
                if len(self.owners(key)) > 1:
                    return f"quiescing: {key} owned by shards {self.owners(key)}"
        for key in self.keys:
            expected = [self.holder[key]] if key in self.holder else []
            if self.owners(key) != expected:
                return f"{key}: leader thinks {expected}, shards own {self.owners(key)}"
        return None


@pytest.mark.parametrize("seed", range(300))
def test_one_owner_under_any_message_order(seed: int) -> None:
    model = Model(seed, shards=3, keys=6)
    assert model.run(400) is None


def test_arrival_order_finds_a_second_owner() -> None:
    """The check can fail: without stamps, some order of the same histories breaks it."""
    failures = [s for s in range(300) if Model(s, shards=3, keys=6, naive=True).run(400)]
    assert failures, "the model check never caught the arrival-order table"


def test_marks_are_bounded_by_the_floor() -> None:
    table = OwnershipTable()
    for i in range(1000):
        table.accept(f"k{i}", 2 * i, None)
        table.release(f"k{i}", 2 * i + 1)
    assert len(table.marks) == 1000 and not table.owned
    table.raise_floor(2001)
    assert not table.marks and not table.parked
    # Anything stamped below the floor is refused now.
    assert not table.accept("k1", 5, None)


def test_delivery_before_its_accept_is_kept_and_newer_objects_win() -> None:
    table = OwnershipTable()
    assert not table.deliver("k", 7, {"v": 7})  # arrived before accept 5
    assert table.accept("k", 5, {"v": 5})
    assert table.obj("k") == {"v": 7}
    assert not table.deliver("k", 6, {"v": 6})  # older than what we have
    assert table.deliver("k", 8, {"v": 8}) and table.obj("k") == {"v": 8}


def test_release_overtaking_its_accept_wins() -> None:
    table = OwnershipTable()
    assert not table.release("k", 10)  # the release of accept 4 arrives first
    assert not table.accept("k", 4, {})
    assert "k" not in table
    assert table.accept("k", 11, {})  # a later accept is fine
    assert not table.release("k", 9)  # a stale release does not take it away
    assert "k" in table
