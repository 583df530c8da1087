"""The dev stack sized for a scenario, and the processes of it worth watching."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from virtrigaud.dev.config import Progress as StackProgress
from virtrigaud.dev.config import ProxmoxOptions, RayOptions, StackConfig
from virtrigaud.dev.info import PARTS, StackInfo, VcsimInventory
from virtrigaud.dev.process import session_members, stop
from virtrigaud.dev.stack import DevStack
from vrscale.sampler import Finder, Watched, cmdline

SHARD_ACTOR_MARK = "ShardActor"
"""Ray titles an actor's worker process ray::<Class>[.<method>]."""

ROLE_OF_PART = {
    "kube": "kube",
    "vcsim": "simulator",
    "libvirt": "simulator",
    "proxmox": "simulator",
    "redis": "redis",
}


@dataclass(frozen=True)
class Sizing:
    """How big the simulators must be for a run."""

    vms: int
    vcsim_delay_ms: int = 0
    pve_time_scale: float = 0.0
    redis_port: int | None = None
    """A fixed port, so Redis restarted mid-run comes back at the same URL."""

    def config(self) -> StackConfig:
        per_sim = math.ceil(self.vms / 3)
        # vcsim places new VMs on cluster hosts; a few hundred per host keeps its
        # inventory walks short. Proxmox: about 1,000 guests per node, as in practice.
        hosts = max(3, math.ceil(per_sim / 500))
        nodes = max(3, math.ceil(per_sim / 1000))
        return StackConfig(
            redis_port=self.redis_port,
            vcsim=VcsimInventory(hosts_per_cluster=hosts, delay_ms=self.vcsim_delay_ms),
            proxmox=ProxmoxOptions(nodes=nodes, time_scale=self.pve_time_scale),
            ray=RayOptions(num_cpus=2),
        )


def new_state_dir(scenario: str) -> Path:
    # Short, under /tmp: libvirtd's socket path lives in here (108-byte limit).
    return Path(tempfile.mkdtemp(prefix=f"vrs-{scenario}-", dir="/tmp"))


class ScaleStack:
    """A private dev stack for one scenario run, stopped when the run ends."""

    def __init__(self, state_dir: Path, sizing: Sizing, parts: tuple[str, ...] = PARTS):
        self.sizing = sizing
        self.parts = parts
        self.stack = DevStack(state_dir, sizing.config())

    @property
    def state_dir(self) -> Path:
        return self.stack.state_dir

    def up(self, progress: StackProgress | None = None) -> StackInfo:
        return self.stack.up(self.parts, progress)

    def info(self) -> StackInfo:
        return self.stack.info()

    def stop_part(self, name: str) -> None:
        """Stop one running part's processes (as a crash would; its record stays)."""
        part = self.info().part(name)
        if part is not None:
            for rec in reversed(part.processes):
                stop(rec, grace=2.0)

    def restart_part(self, name: str) -> None:
        """Start a stopped part again (same fixed port when the sizing gave one)."""
        self.stack.ensure(name)

    def down(self) -> None:
        self.stack.down()

    def versions(self) -> dict[str, str]:
        return {name: part.version for name, part in self.info().running_parts().items()}

    def ray_env(self) -> dict[str, str]:
        ray = self.info().ray
        return dict(ray.env) if ray else {}

    def finders(self) -> list[Finder]:
        return [self._stack_processes, self._ray_processes]

    def _stack_processes(self) -> list[Watched]:
        out = []
        for name, part in self.info().running_parts().items():
            if name == "ray":
                continue
            for rec in part.processes:
                out.append(Watched(f"{name}:{rec.name}", ROLE_OF_PART.get(name, name), rec.pid))
        return out

    def _ray_processes(self) -> list[Watched]:
        ray = self.info().ray
        if ray is None or not ray.processes:
            return []
        out = []
        for pid in session_members(ray.processes[0].pid):
            if SHARD_ACTOR_MARK in cmdline(pid):
                out.append(Watched(f"shard@{pid}", "shard", pid))
            else:
                out.append(Watched("ray-base", "ray-base", pid))
        return out


def env_with(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
