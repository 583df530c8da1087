"""What a running dev stack is: addresses, credentials and pids, persisted as stack.json.

Any process (a test, a shard actor, `virtrigaud dev env`) reads the same file to find the
servers; the stack writes it atomically after every change.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from virtrigaud.dev.process import ProcessRecord

PARTS = ("kube", "vcsim", "libvirt", "proxmox", "redis", "ray")
"""Every part, in start order."""

SIMULATORS = ("vcsim", "libvirt", "proxmox")

STATE_FILE = "stack.json"


class PartInfo(BaseModel):
    processes: list[ProcessRecord]
    version: str
    address: str
    """The one address a person would type to reach the part (shown by `dev up`)."""
    started_at: float
    """Unix time the part became ready."""
    start_seconds: float
    """Seconds from spawning the first process to ready."""


class KubeInfo(PartInfo):
    server: str
    kubeconfig: str
    """The admin kubeconfig (full access in every mode)."""
    etcd_url: str
    token: str = "dev"
    """The admin kubeconfig's bearer token."""
    rbac: bool = False
    """Requests are authenticated by token_file and authorized by RBAC."""
    token_file: str = ""
    authz_log: str = ""
    """With RBAC: every authorization decision, one JSON object per line."""
    crds: list[str] = Field(default_factory=list)
    crd_note: str = ""
    """Why no CRDs were applied, when none were."""


class VcsimInventory(BaseModel):
    """vcsim's model size flags (per datacenter / cluster / pool, as vcsim counts them)."""

    datacenters: int = 1
    clusters: int = 1
    hosts_per_cluster: int = 3
    standalone_hosts: int = 1
    datastores: int = 1
    vms_per_pool: int = 2
    pools: int = 1
    delay_ms: int = 0
    method_delay: dict[str, int] = Field(default_factory=dict)

    def flags(self) -> list[str]:
        out = [
            f"-dc={self.datacenters}",
            f"-cluster={self.clusters}",
            f"-host={self.hosts_per_cluster}",
            f"-standalone-host={self.standalone_hosts}",
            f"-ds={self.datastores}",
            f"-vm={self.vms_per_pool}",
            f"-pool={self.pools}",
            f"-delay={self.delay_ms}",
        ]
        if self.method_delay:
            out.append(
                "-method-delay=" + ",".join(f"{k}:{v}" for k, v in self.method_delay.items())
            )
        return out


class VcsimInfo(PartInfo):
    url: str
    """The SDK endpoint, https://127.0.0.1:PORT/sdk (no credentials in it)."""
    host: str
    port: int
    username: str
    password: str
    inventory: VcsimInventory


class LibvirtInfo(PartInfo):
    uri: str
    """test+unix:///default?socket=...: every process that opens it shares one state."""
    socket: str


class ProxmoxInfo(PartInfo):
    url: str
    host: str
    port: int
    user: str
    password: str
    token_id: str
    """Full token id, user@realm!name (what the PVEAPIToken header carries)."""
    token_name: str
    """Just the name part, what proxmoxer's token_name wants."""
    token_secret: str
    nodes: list[str]
    templates: list[int]
    time_scale: float


class RedisInfo(PartInfo):
    url: str
    port: int


class RayNode(BaseModel):
    name: str
    """head, worker-1, worker-2, ... (also the name of its process record)."""
    ip: str
    temp_dir: str
    resources: dict[str, float] = Field(default_factory=dict)


class RayInfo(PartInfo):
    address: str
    """host:port of the GCS, for ray.init(address=...)."""
    temp_dir: str
    env: dict[str, str]
    """Environment a client process needs before ray.init (keeps Ray on loopback)."""
    nodes: list[RayNode] = Field(default_factory=list)
    """One per process record, in the same order (the head first)."""
    dashboard_url: str = ""
    """http://host:port of the dashboard, for Ray's state API (multi-node clusters)."""
    controller_ips: list[str] = Field(default_factory=list)
    """Loopback addresses kept free for controllers that join as nodes of their own
    (`virtrigaud run --ray-node-ip`); empty for a single-node cluster, which drivers
    attach to directly."""
    client_address: str = ""
    """ray://host:port of the head's Ray Client server."""

    def worker_nodes(self) -> list[tuple[RayNode, ProcessRecord]]:
        return [(n, p) for n, p in zip(self.nodes, self.processes, strict=True) if n.name != "head"]


class StackInfo(BaseModel):
    state_dir: str
    kube: KubeInfo | None = None
    vcsim: VcsimInfo | None = None
    libvirt: LibvirtInfo | None = None
    proxmox: ProxmoxInfo | None = None
    redis: RedisInfo | None = None
    ray: RayInfo | None = None
    secrets: list[str] = Field(default_factory=list)
    """Credential Secrets created in namespace default, one per running simulator."""

    def part(self, name: str) -> PartInfo | None:
        value = getattr(self, name)
        assert value is None or isinstance(value, PartInfo)
        return value

    def running_parts(self) -> dict[str, PartInfo]:
        return {name: info for name in PARTS if (info := self.part(name)) is not None}

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        # Credentials live in here: readable by the owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.model_dump_json(indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> StackInfo:
        path = state_dir / STATE_FILE
        if not path.exists():
            return cls(state_dir=str(state_dir))
        return cls.model_validate_json(path.read_text())
