"""Which Ray node each shard actor runs on, from Ray's state API (needs the dashboard)."""

from __future__ import annotations

from dataclasses import dataclass

from virtrigaud.shards.actor import ACTOR_PREFIX, RAY_NAMESPACE, shard_name


@dataclass(frozen=True)
class ShardLocation:
    shard: str
    node_ip: str
    node_id: str
    pid: int


def shard_locations(dashboard_url: str) -> dict[str, ShardLocation]:
    """Live shard actors by shard name. `dashboard_url` is http://host:port of the head's
    dashboard, passed explicitly so another Ray cluster on the machine is never asked."""
    from ray.util.state import list_actors, list_nodes

    ips = {
        n.node_id: n.node_ip
        for n in list_nodes(address=dashboard_url, raise_on_missing_output=False)
    }
    found: dict[str, ShardLocation] = {}
    for actor in list_actors(
        address=dashboard_url,
        filters=[("state", "=", "ALIVE"), ("ray_namespace", "=", RAY_NAMESPACE)],
        raise_on_missing_output=False,
    ):
        name = actor.name or ""
        suffix = name[len(ACTOR_PREFIX) :]
        if not name.startswith(ACTOR_PREFIX) or not suffix.isdigit():
            continue
        shard = shard_name(int(suffix))
        node = actor.node_id or ""
        found[shard] = ShardLocation(shard, ips.get(node, "?"), node, actor.pid or 0)
    return found
