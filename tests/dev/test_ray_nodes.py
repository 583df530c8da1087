"""The dev stack's multi-node Ray: a head with no CPUs and worker nodes, each a separate
`ray start` (own session, own loopback address, own temp dir, own worker ports), seen by
Ray as separate nodes; `down` stops every one of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtrigaud.dev.cli import dev_app
from virtrigaud.dev.config import RayOptions, StackConfig
from virtrigaud.dev.info import RayInfo
from virtrigaud.dev.process import session_members
from virtrigaud.dev.stack import DevStack
from virtrigaud.raynode import SHARD_RESOURCE

pytestmark = pytest.mark.stack


@pytest.fixture
def cluster_stack(tmp_path: Path) -> Iterator[DevStack]:
    config = StackConfig(ray=RayOptions(worker_nodes=2, shards_per_node=3, node_memory_mb=700))
    stack = DevStack(tmp_path / "stack", config)
    yield stack
    stack.down()


def _flag(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_head_and_worker_nodes_are_separate_ray_nodes(cluster_stack: DevStack) -> None:
    from ray.util.state import list_nodes

    info = cluster_stack.ensure("ray")
    assert isinstance(info, RayInfo)
    assert [n.name for n in info.nodes] == ["head", "worker-1", "worker-2"]
    ips = [n.ip for n in info.nodes]
    assert len(set(ips)) == 3 and all(ip.startswith("127.") and ip != "127.0.0.1" for ip in ips)
    assert info.address.startswith(f"{ips[0]}:")
    assert not set(info.controller_ips) & set(ips)

    # Each node is its own session with its own temp dir and worker-port range.
    sessions = [set(session_members(rec.pid)) for rec in info.processes]
    assert all(sessions) and not sessions[0] & sessions[1] and not sessions[1] & sessions[2]
    argvs = [_cmdline(rec.pid) for rec in info.processes]
    assert len({_flag(a, "temp-dir") for a in argvs}) == 3
    ranges = [range(int(_flag(a, "min-worker-port")), int(_flag(a, "max-worker-port")) + 1)
              for a in argvs]  # fmt: skip
    assert not set(ranges[0]) & set(ranges[1]) and not set(ranges[1]) & set(ranges[2])

    # What Ray itself reports: the head offers no CPU and no shard slot, workers do.
    nodes = {n.node_ip: n for n in list_nodes(address=info.dashboard_url, detail=True)}
    assert set(nodes) == set(ips) and all(n.state == "ALIVE" for n in nodes.values())
    head = nodes[ips[0]].resources_total
    assert head.get("CPU", 0) == 0 and SHARD_RESOURCE not in head
    for ip in ips[1:]:
        assert nodes[ip].resources_total[SHARD_RESOURCE] == 3
        assert nodes[ip].resources_total["memory"] == 700 * 2**20

    # `dev env` hands a controller its own address to join from.
    result = CliRunner().invoke(dev_app, ["env", "--state-dir", str(cluster_stack.state_dir)])
    assert result.exit_code == 0, result.output
    assert f"export VIRTRIGAUD_RAY_NODE_IP={info.controller_ips[0]}" in result.output
    assert "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1" in result.output

    pids = [pid for s in sessions for pid in s]
    cluster_stack.down()
    assert [p for p in pids if Path(f"/proc/{p}").exists() and session_members(p)] == []
    assert not any(Path(n.temp_dir).exists() for n in info.nodes)
