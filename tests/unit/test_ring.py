"""The hash ring and the bounded-load key table."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtrigaud.leader.ring import HashRing, Moves, RingState, load_cap, stable_hash

KEYS_10K = [f"ns-{i % 50}/vm-{i}" for i in range(10_000)]


def shard_names(n: int) -> list[str]:
    return [f"shard-{i}" for i in range(n)]


def check_invariants(state: RingState) -> None:
    table = state.assignment()
    if state.shards:
        assert len(table) == len(state)
        assert set(table.values()) <= set(state.shards)
        assert max(state.loads().values()) <= state.cap
    else:
        assert len(table) == 0
    # Members index agrees with the table: each key is in exactly one shard's set.
    seen: dict[str, str] = {}
    for shard in state.shards:
        for key in state.keys_of(shard):
            assert key not in seen, f"{key} owned by {seen[key]} and {shard}"
            seen[key] = shard
    assert seen == dict(table)


def serial_dictatorship(
    shards: Iterable[str], keys: Iterable[str], vnodes: int, load_factor: float = 1.25
) -> dict[str, str]:
    """The specified table, computed the slow obvious way: in (hash, key) order each key
    takes the first shard on its walk that is under the cap."""
    ring = HashRing(shards, vnodes)
    keys = sorted(set(keys), key=lambda k: (stable_hash(k), k))
    if not ring.shards:
        return {}
    cap = load_cap(len(keys), len(ring.shards), load_factor)
    load = dict.fromkeys(ring.shards, 0)
    table = {}
    for key in keys:
        shard = next(s for s in ring.walk(key) if load[s] < cap)
        load[shard] += 1
        table[key] = shard
    return table


def apply(before: dict[str, str], moves: Moves) -> dict[str, str]:
    after = dict(before)
    for move in moves:
        assert after[move.key] == move.source
        after[move.key] = move.target
    for key, _ in moves.orphaned:
        del after[key]
    return after


# -- HashRing ------------------------------------------------------------------------------


def test_stable_hash_is_pinned_and_not_python_hash() -> None:
    # Pinned so a change of hash function (which would reshuffle every fleet) fails here.
    assert stable_hash("default/vm-1") == int.from_bytes(
        hashlib.blake2b(b"default/vm-1", digest_size=8).digest(), "big"
    )
    assert stable_hash("a") != stable_hash("b")
    assert 0 <= stable_hash("x") < 2**64


def test_ring_is_independent_of_shard_order() -> None:
    a = HashRing(["s1", "s2", "s3"])
    b = HashRing(["s3", "s1", "s2", "s1"])
    assert a.shards == b.shards == ("s1", "s2", "s3")
    assert [a.preferred(k) for k in KEYS_10K[:500]] == [b.preferred(k) for k in KEYS_10K[:500]]


def test_walk_visits_every_shard_once_starting_at_preferred() -> None:
    ring = HashRing(shard_names(7), vnodes=16)
    for key in KEYS_10K[:200]:
        walk = list(ring.walk(key))
        assert sorted(walk) == sorted(ring.shards)
        assert walk[0] == ring.preferred(key)


def test_empty_ring_refuses_lookups_and_walks_nothing() -> None:
    ring = HashRing([])
    with pytest.raises(LookupError, match="no shards"):
        ring.preferred("k")
    assert list(ring.walk("k")) == []


def test_ring_spreads_keys_evenly_enough() -> None:
    ring = HashRing(shard_names(8))
    counts: dict[str, int] = {}
    for key in KEYS_10K:
        shard = ring.preferred(key)
        counts[shard] = counts.get(shard, 0) + 1
    # 128 virtual nodes: the largest share stays within the 1.25 load cap here.
    assert max(counts.values()) <= 1.25 * len(KEYS_10K) / 8
    assert min(counts.values()) >= 0.75 * len(KEYS_10K) / 8


def test_ring_rejects_zero_vnodes() -> None:
    with pytest.raises(ValueError, match="vnodes"):
        HashRing(["a"], vnodes=0)


def test_lookup_takes_microseconds() -> None:
    ring = HashRing(shard_names(16))
    start = time.perf_counter()
    for key in KEYS_10K:
        ring.preferred(key)
    per_lookup = (time.perf_counter() - start) / len(KEYS_10K)
    assert per_lookup < 50e-6


# -- RingState: bounded loads --------------------------------------------------------------


def test_load_cap_is_ceil_of_125_percent_of_average() -> None:
    assert load_cap(10, 3) == 5  # ceil(4.1667)
    assert load_cap(8, 8) == 2  # ceil(1.25)
    assert load_cap(0, 3) == 0
    assert load_cap(5, 0) == 0


def test_cap_forces_keys_off_a_hot_shard() -> None:
    # One virtual node per shard makes the ring lopsided, so the cap must bite.
    keys = [f"k{i}" for i in range(400)]
    ring = HashRing(shard_names(4), vnodes=1)
    preferred_max = max(sum(1 for k in keys if ring.preferred(k) == s) for s in ring.shards)
    state = RingState(shard_names(4), keys, vnodes=1)
    assert preferred_max > state.cap
    assert max(state.loads().values()) <= state.cap == 125
    check_invariants(state)


def test_table_matches_the_serial_dictatorship_definition_at_scale() -> None:
    for shards, vnodes in ((shard_names(9), 128), (shard_names(5), 3), (shard_names(24), 16)):
        state = RingState(shards, KEYS_10K, vnodes=vnodes)
        assert dict(state.assignment()) == serial_dictatorship(shards, KEYS_10K, vnodes)


def test_table_is_independent_of_key_order() -> None:
    keys = [f"k{i}" for i in range(600)]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    a = RingState(shard_names(5), keys, vnodes=2)
    b = RingState(shard_names(5)[::-1], shuffled, vnodes=2)
    assert dict(a.assignment()) == dict(b.assignment())


def test_incremental_adds_equal_a_fresh_build() -> None:
    keys = [f"k{i}" for i in range(600)]
    order = keys[:]
    random.Random(3).shuffle(order)
    state = RingState(shard_names(5), vnodes=2)
    for key in order:
        before = dict(state.assignment())
        moves = state.add_key(key)
        assert apply(before, moves) == {k: v for k, v in state.assignment().items() if k != key}
    assert dict(state.assignment()) == dict(RingState(shard_names(5), keys, vnodes=2).assignment())


def test_adding_one_shard_moves_about_one_nth_mostly_to_it() -> None:
    for n in (2, 4, 8, 16):
        state = RingState(shard_names(n), KEYS_10K)
        before = dict(state.assignment())
        moves = state.rebalance([*shard_names(n), "new"])
        assert apply(before, moves) == dict(state.assignment())
        fraction = len(moves) / len(KEYS_10K)
        assert fraction <= 1.5 / (n + 1) + 0.01, (n, fraction)
        assert fraction >= 0.5 / (n + 1), (n, fraction)
        to_new = len(moves.by_target().get("new", []))
        assert to_new / len(moves) >= 0.95, (n, to_new, len(moves))
        check_invariants(state)


def test_removing_a_dead_shard_moves_its_keys_plus_what_the_cap_forces() -> None:
    for n in (3, 8, 16):
        state = RingState(shard_names(n), KEYS_10K)
        dead = "shard-1"
        owned_by_dead = state.keys_of(dead)
        before = dict(state.assignment())
        moves = state.rebalance([s for s in shard_names(n) if s != dead])
        assert apply(before, moves) == dict(state.assignment())
        moved = {m.key for m in moves}
        assert owned_by_dead <= moved
        others = moved - owned_by_dead
        # Others move only when the larger cap lets a displaced key return to its
        # preferred shard; that is a small share.
        assert len(others) <= 0.02 * len(KEYS_10K), (n, len(others))
        for m in moves:
            if m.key not in owned_by_dead:
                assert m.target == state.ring.preferred(m.key)
        assert len(moves) / len(KEYS_10K) <= 1.5 / n + 0.02
        check_invariants(state)


def test_epoch_bumps_on_membership_change_only() -> None:
    state = RingState(["a", "b"], ["k1", "k2"], epoch=41)
    assert state.epoch == 41
    state.add_key("k3")
    state.remove_key("k1")
    assert state.epoch == 41
    moves = state.rebalance(["a", "b", "c"])
    assert state.epoch == moves.epoch == 42
    state.rebalance(["a", "b", "c"])
    assert state.epoch == 43


def test_losing_every_shard_orphans_every_key_and_gaining_one_restores_them() -> None:
    state = RingState(["a", "b"], ["k1", "k2", "k3"])
    before = dict(state.assignment())
    moves = state.rebalance([])
    assert len(moves) == 0
    assert dict(moves.orphaned) == before
    assert state.owner("k1") is None
    state.add_key("k4")  # tracked while no shard exists
    assert state.owner("k4") is None
    moves = state.rebalance(["c"])
    assert dict(state.assignment()) == {k: "c" for k in ("k1", "k2", "k3", "k4")}
    assert dict(moves.adopted) == dict(state.assignment())
    assert len(moves) == 0 and not moves.orphaned


def test_unknown_key_and_duplicate_operations() -> None:
    state = RingState(["a", "b"], ["k1"])
    assert state.owner("nope") is None
    assert len(state.add_key("k1")) == 0
    assert len(state.remove_key("nope")) == 0
    assert len(state) == 1
    assert "k1" in state


def test_rebalance_of_10k_keys_is_well_under_a_second() -> None:
    state = RingState(shard_names(8), KEYS_10K)
    start = time.perf_counter()
    state.rebalance(shard_names(9))
    assert time.perf_counter() - start < 0.5


def test_bulk_add_and_remove_match_fresh_builds() -> None:
    state = RingState(shard_names(4), [f"k{i}" for i in range(100)], vnodes=2)
    state.add_keys([f"k{i}" for i in range(100, 300)])
    assert dict(state.assignment()) == dict(
        RingState(shard_names(4), [f"k{i}" for i in range(300)], vnodes=2).assignment()
    )
    state.remove_keys([f"k{i}" for i in range(0, 300, 2)])
    assert dict(state.assignment()) == dict(
        RingState(shard_names(4), [f"k{i}" for i in range(1, 300, 2)], vnodes=2).assignment()
    )


# -- properties ----------------------------------------------------------------------------

key_names = st.text(alphabet="abcdefghij/-0123456789", min_size=1, max_size=8)
shard_sets = st.sets(st.sampled_from([f"s{i}" for i in range(8)]), max_size=6)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), key_names),
        st.tuples(st.just("remove"), key_names),
        st.tuples(st.just("members"), shard_sets),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    shards=shard_sets,
    keys=st.sets(key_names, max_size=80),
    ops=operations,
    vnodes=st.integers(1, 8),
    load_factor=st.sampled_from([1.0, 1.1, 1.25, 2.0]),
)
def test_any_history_equals_a_fresh_build(
    shards: set[str],
    keys: set[str],
    ops: list[tuple[str, object]],
    vnodes: int,
    load_factor: float,
) -> None:
    state = RingState(shards, keys, vnodes=vnodes, load_factor=load_factor)
    live_keys = set(keys)
    for op, arg in ops:
        before = dict(state.assignment())
        if op == "add":
            assert isinstance(arg, str)
            moves = state.add_key(arg)
            live_keys.add(arg)
            before_known = before
        elif op == "remove":
            assert isinstance(arg, str)
            moves = state.remove_key(arg)
            live_keys.discard(arg)
            before_known = {k: v for k, v in before.items() if k != arg}
        else:
            assert isinstance(arg, set)
            moves = state.rebalance(arg)
            before_known = before
        after = dict(state.assignment())
        # Moves describe exactly the owner changes of keys that had an owner before.
        expected = {k: v for k, v in apply(before_known, moves).items() if k in after}
        assert expected == {k: v for k, v in after.items() if k in before_known}
        check_invariants(state)
        fresh = RingState(state.shards, live_keys, vnodes=vnodes, load_factor=load_factor)
        assert after == dict(fresh.assignment())
        assert after == serial_dictatorship(state.shards, live_keys, vnodes, load_factor)


@settings(max_examples=100, deadline=None)
@given(
    shards=st.sets(st.sampled_from([f"s{i}" for i in range(8)]), min_size=1, max_size=6),
    keys=st.lists(key_names, max_size=100, unique=True),
    seed=st.integers(0, 1000),
    vnodes=st.integers(1, 8),
)
def test_every_key_has_one_owner_under_the_cap_in_any_order(
    shards: set[str], keys: list[str], seed: int, vnodes: int
) -> None:
    shuffled = keys[:]
    random.Random(seed).shuffle(shuffled)
    a = RingState(shards, keys, vnodes=vnodes)
    b = RingState(sorted(shards, reverse=True), vnodes=vnodes)
    for key in shuffled:
        b.add_key(key)
    check_invariants(a)
    assert dict(a.assignment()) == dict(b.assignment())
    assert dict(a.assignment()) == serial_dictatorship(shards, keys, vnodes)
    assert set(a.assignment()) == set(keys)
