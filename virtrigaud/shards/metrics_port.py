"""The port a shard serves /metrics on, chosen so that Prometheus can list every shard.

Index mode (one process hosts every shard, as a private Ray does): shard i takes
`base + i`. Slot mode (`slots` > 0, a Ray cluster whose nodes hold up to `slots` shards
each): a shard takes the first free port of `base .. base + slots - 1` on its node, so
every node serves its shards on the same `slots` known ports whichever shards land there,
and one PodMonitor over the worker pods lists exactly those ports. A node that holds more
shards than it has ports is a misconfiguration: the shard fails to start and says so.
"""

from __future__ import annotations

import asyncio
import time

from virtrigaud.metrics_server import serve_metrics

NODE_ADDRESS = "node"
"""--shard-metrics-address value: bind the address of the Ray node the shard runs on (its
pod's address on KubeRay; each node's own loopback address in the dev stack, where
several nodes share one machine and 0.0.0.0 would make them take each other's ports)."""

SLOT_WAIT_S = 5.0
"""How long a shard waits for a slot to free up: a fenced earlier incarnation on the
same node may hold its port for 1-3 s after the new one starts (research/ray-multinode)."""


def bind_address(address: str) -> str:
    if address != NODE_ADDRESS:
        return address
    import ray

    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


async def serve_shard_metrics(index: int, base: int, slots: int, address: str) -> int:
    """Serve this shard's /metrics; return the bound port (see the module doc)."""
    host = bind_address(address)
    if not base:
        return serve_metrics(0, host)
    if not slots:
        return serve_metrics(base + index, host)
    deadline = time.monotonic() + SLOT_WAIT_S
    while True:
        for port in range(base, base + slots):
            try:
                return serve_metrics(port, host)
            except OSError:
                continue
        if time.monotonic() >= deadline:
            raise OSError(
                f"shard-{index}: every shard metrics port of this node "
                f"({host}:{base}-{base + slots - 1}) stayed taken for {SLOT_WAIT_S:.0f} s; a "
                "node must hold at most --shard-metrics-slots shards (the chart passes "
                "ray.shardsPerWorker, the worker pods' `virtrigaud_shard` resource)"
            )
        await asyncio.sleep(0.5)
