"""Where shard actors may run: only on Ray nodes that offer the shard resource.

Worker nodes offer `virtrigaud_shard: N` (N shards fit); the head and a controller's own
node offer none, so no shard lands there. Each shard also reserves memory, so a node
never takes more shards than its memory holds, and SPREAD puts each new shard on the
least-loaded node that fits (4 shards over 2 nodes: 2 + 2, not 4 + 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtrigaud.raynode import SHARD_RESOURCE

DEFAULT_SHARD_MEMORY_MB = 512
"""A shard holding 2,700 VMs measured 253 MB (README, fleet scenario); the request
leaves room for that, and for the libvirt/pyvmomi/proxmoxer sessions it pools."""


@dataclass(frozen=True)
class ShardPlacement:
    resource: str = SHARD_RESOURCE
    memory_mb: int = DEFAULT_SHARD_MEMORY_MB
    spread: bool = True

    def __post_init__(self) -> None:
        if not self.resource:
            raise ValueError("the shard resource name must not be empty")
        if self.memory_mb < 0:
            raise ValueError(f"shard memory must be >= 0 MiB, got {self.memory_mb}")

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"resources": {self.resource: 1}}
        if self.memory_mb:
            options["memory"] = self.memory_mb * 2**20
        if self.spread:
            options["scheduling_strategy"] = "SPREAD"
        return options


def placement_options(placement: ShardPlacement | None) -> dict[str, Any]:
    """Ray actor options for a shard; none (anywhere) when no placement is configured."""
    return placement.actor_options() if placement is not None else {}
