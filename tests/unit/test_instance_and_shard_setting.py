"""What one installation names its shared state, and which shard count is in effect when
the chart and `virtrigaud shards set` both wrote one."""

from __future__ import annotations

import pytest

from virtrigaud.instance import MAX_NAME, Instance, RedisKeys
from virtrigaud.leader.shard_count import (
    OVERRIDE_FIELD,
    OVERRIDE_OF_FIELD,
    SHARDS_FIELD,
    ShardSetting,
    shard_setting,
)


def test_without_a_name_the_names_are_the_single_installations() -> None:
    plain = Instance()
    assert (plain.lease, plain.config_map) == ("virtrigaud-leader", "virtrigaud-config")
    assert plain.redis == RedisKeys("virtrigaud:")
    assert (plain.redis.ratelimit, plain.redis.fenced, plain.redis.audit) == (
        "virtrigaud:ratelimit:",
        "virtrigaud:fenced:",
        "virtrigaud:audit",
    )


def test_named_installations_share_nothing_even_with_one_name_in_two_namespaces() -> None:
    a, b, a_elsewhere = Instance("ops", "a"), Instance("ops", "b"), Instance("dev", "a")
    assert (a.lease, a.config_map) == ("a-leader", "a-config")
    assert a.redis.prefix == "virtrigaud:ops/a:"
    keys = [
        {i.redis.ratelimit, i.redis.fenced, i.redis.audit} for i in (a, b, a_elsewhere, Instance())
    ]
    for i, mine in enumerate(keys):
        for theirs in keys[i + 1 :]:
            assert mine.isdisjoint(theirs)
    # One prefix is never the start of another's key space.
    assert not any(
        x.redis.prefix.startswith(y.redis.prefix)
        for x in (a, b, a_elsewhere)
        for y in (a, b, a_elsewhere)
        if x is not y
    )


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "x" * (MAX_NAME + 1), ""])
def test_an_instance_name_must_make_valid_object_names(name: str) -> None:
    with pytest.raises(ValueError, match="--instance"):
        Instance("ops", name)


def setting(**data: str) -> ShardSetting:
    return shard_setting(data, "ConfigMap ops/a-config")


def test_the_installed_count_alone() -> None:
    assert setting(shards="3") == ShardSetting(3, 3, None, None)
    assert setting(shards="3").describe() == "3 (installed)"
    assert setting().count is None


def test_an_override_wins_while_the_installed_count_is_the_one_it_overrode() -> None:
    live = setting(**{SHARDS_FIELD: "3", OVERRIDE_FIELD: "5", OVERRIDE_OF_FIELD: "3"})
    assert live.count == 5
    assert live.describe() == "5 (virtrigaud shards set, over the installed 3)"
    # The chart's count changed after the override: the newer decision wins.
    later = setting(**{SHARDS_FIELD: "4", OVERRIDE_FIELD: "5", OVERRIDE_OF_FIELD: "3"})
    assert later.count == 4 and later.stale_override == 5
    assert "replaced by a later change of the installed count" in later.describe()
    # Set where nothing was installed: it holds until something is.
    assert setting(**{OVERRIDE_FIELD: "2", OVERRIDE_OF_FIELD: ""}).count == 2
    assert setting(**{SHARDS_FIELD: "3", OVERRIDE_FIELD: "2", OVERRIDE_OF_FIELD: ""}).count == 3


def test_a_bad_override_names_its_key() -> None:
    with pytest.raises(ValueError, match=r"ConfigMap ops/a-config: data.shardsOverride must be"):
        setting(**{SHARDS_FIELD: "3", OVERRIDE_FIELD: "0", OVERRIDE_OF_FIELD: "3"})
