"""VMSet expectations (controllers/vmset/expectations.py): a backlog pass plans from what
the last pass left instead of listing, only while nothing it was made from changed."""

from __future__ import annotations

from virtrigaud.controllers.vmset.expectations import MAX_AGE, Expectations
from virtrigaud.controllers.vmset.plan import Pace, Replica, plan


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_backlog_is_worked_through_without_listing_and_without_duplicates() -> None:
    expectations = Expectations(Clock())
    pace = Pace(desired=1000)
    replicas: list[Replica] = []  # the one LIST: an empty set
    made: list[str] = []
    for _ in range(4):
        todo = plan(replicas, pace, "a", None)
        batch = todo.create[:250]
        created = [Replica(f"s-{o}-{r}", o, r, False) for o, r in batch]
        made.extend(c.name for c in created)
        expectations.expect("VMSet/ns/s", "u1", 1, "a", replicas, created, [])
        taken = expectations.take("VMSet/ns/s", "u1", 1, "a")
        assert taken is not None
        replicas = taken
    assert len(made) == len(set(made)) == 1000
    assert not plan(replicas, pace, "a", None).create


def test_deleted_replicas_count_as_being_deleted() -> None:
    expectations = Expectations(Clock())
    listed = [Replica(f"s-{o}-a", o, "a", True) for o in range(3)]
    expectations.expect("k", "u", 1, "a", listed, [], ["s-2-a"])
    taken = expectations.take("k", "u", 1, "a")
    assert taken is not None
    assert [r.deleting for r in taken] == [False, False, True]


def test_a_changed_set_or_an_old_record_is_listed_again() -> None:
    clock = Clock()
    expectations = Expectations(clock)
    for uid, generation, revision in (("u2", 1, "a"), ("u1", 2, "a"), ("u1", 1, "b")):
        expectations.expect("k", "u1", 1, "a", [], [], [])
        assert expectations.take("k", uid, generation, revision) is None
    expectations.expect("k", "u1", 1, "a", [], [], [])
    clock.now += MAX_AGE + 1
    assert expectations.take("k", "u1", 1, "a") is None
    expectations.expect("k", "u1", 1, "a", [], [], [])
    expectations.forget("k")
    assert expectations.take("k", "u1", 1, "a") is None


def test_a_record_serves_one_pass_only() -> None:
    expectations = Expectations(Clock())
    expectations.expect("k", "u1", 1, "a", [], [], [])
    assert expectations.take("k", "u1", 1, "a") == []
    assert expectations.take("k", "u1", 1, "a") is None
