"""VMSet pacing (controllers/vmset/plan.py), simulated pass by pass."""

from __future__ import annotations

import random

from virtrigaud.controllers.vmset.plan import Pace, Plan, Replica, count_of, plan


def fleet(n: int, revision: str = "a", available: bool = True) -> list[Replica]:
    return [Replica(f"s-{o}-{revision}", o, revision, available) for o in range(n)]


def apply(replicas: list[Replica], p: Plan, *, ready: set[str]) -> list[Replica]:
    """One round of the world: deletes happen, creates appear (not available until a
    later round makes them so)."""
    kept = [r for r in replicas if r.name not in p.delete]
    made = [Replica(f"s-{o}-{rev}", o, rev, False) for o, rev in p.create]
    out = kept + made
    return [Replica(r.name, r.ordinal, r.revision, r.available or r.name in ready) for r in out]


def test_count_of() -> None:
    assert count_of("25%", 10, round_up=True) == 3
    assert count_of("25%", 10, round_up=False) == 2
    assert count_of(2, 10, round_up=False) == 2


def test_scale_up_and_down() -> None:
    p = plan([], Pace(desired=10), "a", None)
    assert sorted(o for o, _ in p.create) == list(range(10)) and not p.delete
    p = plan(fleet(10), Pace(desired=3), "a", "a")
    assert sorted(p.delete) == sorted(f"s-{o}-a" for o in range(3, 10)) and not p.create


def test_ordered_scale_creates_one_at_a_time_after_the_lower_ones() -> None:
    pace = Pace(desired=3, ordered=True)
    assert plan([], pace, "a", None).create == [(0, "a")]
    not_ready = [Replica("s-0-a", 0, "a", False)]
    assert plan(not_ready, pace, "a", None).create == []
    assert plan(fleet(1), pace, "a", None).create == [(1, "a")]
    assert plan(fleet(3), Pace(desired=1, ordered=True), "a", "a").delete == ["s-2-a"]


def rolling(pace: Pace, seed: int) -> tuple[int, int, list[Replica]]:
    """Roll 10 replicas from a to b; new VMs become available at random rounds. Returns the
    worst unavailability and surge seen, and the end state."""
    rng = random.Random(seed)
    replicas = fleet(10)
    worst_unavailable = worst_surge = 0
    for _ in range(200):
        p = plan(replicas, pace, "b", "a")
        pending = [r.name for r in replicas if not r.available]
        ready = {n for n in pending if rng.random() < 0.4}
        replicas = apply(replicas, p, ready=set())
        unavailable = sum(
            1 for o in range(10) if not any(r.available for r in replicas if r.ordinal == o)
        )
        surge = len(replicas) - 10
        worst_unavailable = max(worst_unavailable, unavailable)
        worst_surge = max(worst_surge, surge)
        replicas = [
            Replica(r.name, r.ordinal, r.revision, r.available or r.name in ready) for r in replicas
        ]
        if all(r.revision == "b" and r.available for r in replicas) and len(replicas) == 10:
            break
    return worst_unavailable, worst_surge, replicas


def test_rolling_update_never_exceeds_max_unavailable() -> None:
    for seed in range(20):
        unavailable, surge, end = rolling(Pace(desired=10, max_unavailable=2), seed)
        assert unavailable <= 2 and surge == 0
        assert sorted(r.name for r in end) == sorted(f"s-{o}-b" for o in range(10))


def test_rolling_update_with_surge_keeps_everything_available() -> None:
    for seed in range(20):
        unavailable, surge, end = rolling(Pace(desired=10, max_surge=3, max_unavailable=0), seed)
        assert unavailable == 0 and surge <= 3
        assert all(r.revision == "b" for r in end) and len(end) == 10


def test_partition_keeps_lower_ordinals() -> None:
    pace = Pace(desired=10, max_unavailable=10, partition=7)
    p = plan(fleet(10), pace, "b", "a")
    assert sorted(p.delete) == ["s-7-a", "s-8-a", "s-9-a"]
    assert sorted(p.create) == [(7, "b"), (8, "b"), (9, "b")]


def test_recreate_deletes_all_before_creating() -> None:
    pace = Pace(desired=3, strategy="Recreate")
    p = plan(fleet(3), pace, "b", "a")
    assert len(p.delete) == 3 and p.create == []
    deleting = [Replica(r.name, r.ordinal, r.revision, False, True) for r in fleet(3)]
    assert plan(deleting, pace, "b", "a").create == []
    assert len(plan([], pace, "b", "a").create) == 3


def test_on_delete_replaces_only_deleted_vms() -> None:
    pace = Pace(desired=3, strategy="OnDelete")
    assert plan(fleet(3), pace, "b", "a").delete == []
    p = plan(fleet(3)[:2], pace, "b", "a")
    assert p.create == [(2, "b")]  # the one deleted comes back at the new revision


def test_selector_string_and_matching() -> None:
    from virtrigaud.api.corev1 import LabelSelector
    from virtrigaud.controllers.vmset.reconciler import selector_string, selects

    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector_string(selector) == "app=web,tier in (a,b),!legacy"
    assert selects(selector, {"app": "web", "tier": "a"})
    assert not selects(selector, {"app": "web", "tier": "c"})
    assert not selects(selector, {"app": "web", "tier": "a", "legacy": "1"})
    assert not selects(selector, {"app": "db", "tier": "a"})
