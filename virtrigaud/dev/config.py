"""How to start the dev stack: fixed ports (normally none: free ones are picked) and sizes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from virtrigaud.dev.info import VcsimInventory

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total); total 0 means unknown. The same shape gobuild uses."""


class ProxmoxOptions(BaseModel):
    nodes: int = 3
    time_scale: float = 0.0
    """Real seconds per PVE second; 0 finishes tasks before the request returns."""
    token_user: str = "root@pam"
    token_name: str = "virtrigaud"


class RayOptions(BaseModel):
    num_cpus: int = 2
    """CPUs of the single-node head (with worker nodes the head offers none)."""
    object_store_mb: int = 200
    worker_nodes: int = Field(default=0, ge=0, le=16)
    """0: one node (the head) runs everything. N: a head with no CPUs plus N worker nodes,
    each its own `ray start` on its own loopback address, offering the shard resource."""
    shards_per_node: int = Field(default=4, ge=1)
    """Shard actors a worker node may host (its `virtrigaud_shard` resource)."""
    node_memory_mb: int = Field(default=2048, ge=64)
    """Memory a worker node offers to actors' memory requests (Ray's `memory` resource)."""
    fast_health_checks: bool = True
    """Worker nodes only: the GCS declares a dead node dead after ~3 s instead of ~65 s."""
    node_env: dict[str, str] = Field(default_factory=dict)
    """Extra environment of the worker nodes (what a pod would have, e.g. in-cluster
    Kubernetes settings); their actors inherit it."""


class StackConfig(BaseModel):
    kube_port: int | None = None
    kube_rbac: bool = False
    """Start the API server with token authentication and RBAC (see virtrigaud.dev.kubeauth)."""
    vcsim_port: int | None = None
    proxmox_port: int | None = None
    redis_port: int | None = None
    ray_port: int | None = None
    vcsim: VcsimInventory = Field(default_factory=VcsimInventory)
    proxmox: ProxmoxOptions = Field(default_factory=ProxmoxOptions)
    ray: RayOptions = Field(default_factory=RayOptions)


@dataclass(frozen=True)
class StartContext:
    """What a part's start function gets: where to put its files, and the options."""

    state_dir: str
    config: StackConfig
    progress: Progress | None = None

    def part_dir(self, part: str) -> Path:
        path = Path(self.state_dir) / part
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, name: str) -> Path:
        path = Path(self.state_dir) / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh log per start, so a ready line from an earlier run never matches.
        path.unlink(missing_ok=True)
        return path

    def report(self, stage: str) -> None:
        if self.progress is not None:
            self.progress(stage, 0, 0)
