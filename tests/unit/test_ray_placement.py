"""Pure logic: how `virtrigaud run` picks its way into Ray, and the shard actors' options."""

from __future__ import annotations

import pytest

from virtrigaud.ray_connect import RayConnectError, mode_for
from virtrigaud.raynode import SHARD_RESOURCE, NodePorts, NodeSpec
from virtrigaud.shards.placement import ShardPlacement, placement_options


@pytest.mark.parametrize(
    ("address", "node_ip", "mode"),
    [
        (None, None, "embedded"),
        ("10.0.0.5:6379", None, "driver"),
        ("ray-head:6379", "10.1.2.3", "node"),
        ("[fd00::5]:6379", "fd00::9", "node"),
        ("ray://ray-head:10001", None, "client"),
    ],
)
def test_mode_follows_the_address_and_the_node_ip(
    address: str | None, node_ip: str | None, mode: str
) -> None:
    assert mode_for(address, node_ip) == mode


@pytest.mark.parametrize(
    ("address", "node_ip", "says"),
    [
        (None, "10.1.2.3", "needs --ray-address"),
        ("ray://head:10001", "10.1.2.3", "no effect with a Ray Client address"),
        ("http://head:8265", None, "neither host:port"),
        ("head", None, "neither host:port"),
    ],
)
def test_contradictory_options_are_refused_with_the_fix(
    address: str | None, node_ip: str | None, says: str
) -> None:
    with pytest.raises(RayConnectError) as err:
        mode_for(address, node_ip)
    assert says in str(err.value)


def test_shards_need_the_shard_resource_memory_and_spread() -> None:
    assert placement_options(None) == {}
    assert placement_options(ShardPlacement(memory_mb=300)) == {
        "resources": {SHARD_RESOURCE: 1},
        "memory": 300 * 2**20,
        "scheduling_strategy": "SPREAD",
    }
    assert "memory" not in ShardPlacement(memory_mb=0).actor_options()
    with pytest.raises(ValueError):
        ShardPlacement(resource="")


def test_a_joining_node_offers_no_cpu_and_no_shard_slot() -> None:
    argv = NodeSpec(ip="127.0.9.40", temp_dir="/tmp/x", address="127.0.9.10:6379").argv(
        NodePorts(1, 2, 3, 4, 5, 6, 20000, 20199)
    )
    assert "--num-cpus=0" in argv and "--address=127.0.9.10:6379" in argv
    assert not any(a.startswith("--resources") for a in argv)
    assert "--head" not in argv
    assert "--min-worker-port=20000" in argv and "--max-worker-port=20199" in argv
