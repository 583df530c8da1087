"""Memory of the dev stack's Ray nodes and of the shard actors on them (PSS, from /proc).

PSS (proportional set size) splits pages shared between processes (Python's libraries,
Ray's shared object store mappings) among them, so the figures add up to what the node
really costs. A node's processes are the members of its `ray start` session; a shard is
the worker process Ray titles `ray::ShardActor`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from virtrigaud.dev.info import RayInfo
from virtrigaud.dev.process import is_alive, session_members

SHARD_TITLE = "ShardActor"


def pss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@dataclass
class NodeMemory:
    name: str
    ip: str
    base_bytes: int = 0
    """Everything of the node but its shards: raylet, agents, idle workers (and on a
    head, the GCS and dashboard)."""
    shards: dict[int, int] = field(default_factory=dict)
    """pid -> PSS of each shard actor process on the node."""


def node_memory(info: RayInfo) -> list[NodeMemory]:
    out = []
    # A stack.json written before nodes were recorded: one node per process.
    nodes = [(n.name, n.ip) for n in info.nodes] or [(r.name, "") for r in info.processes]
    for (name, ip), rec in zip(nodes, info.processes, strict=True):
        mem = NodeMemory(name, ip)
        if is_alive(rec) or session_members(rec.pid):
            for pid in session_members(rec.pid):
                size = pss_bytes(pid)
                if SHARD_TITLE in _cmdline(pid):
                    mem.shards[pid] = size
                else:
                    mem.base_bytes += size
        out.append(mem)
    return out


def tree_pss_bytes(root: int) -> int:
    """PSS of a process and all its descendants (a controller and the Ray node it
    started, whose processes live in a session of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += pss_bytes(pid)
        todo.extend(children.get(pid, []))
    return total
