"""A Ray node's ports are distinct: Ray refuses to start a node whose components share one."""

from __future__ import annotations

import random
import re
from pathlib import Path

from virtrigaud.netports import free_ports, server_port_band
from virtrigaud.raynode import NodePorts, NodeSpec


def _ports_in(argv: list[str]) -> list[int]:
    found = []
    for arg in argv:
        m = re.fullmatch(r"--(?!min-worker|max-worker)[a-z-]*port=(\d+)", arg)
        if m:
            found.append(int(m.group(1)))
    return found


def test_free_ports_are_distinct_and_skip_the_ones_to_avoid() -> None:
    first = free_ports(50)
    assert len(set(first)) == 50
    avoid = set(first[:25])
    again = free_ports(50, avoid=avoid)
    assert len(set(again)) == 50
    assert not avoid & set(again)


def test_a_head_node_gets_one_port_per_component() -> None:
    for _ in range(50):
        argv = NodeSpec(
            ip="127.0.0.1", temp_dir="/tmp/x", head=True, gcs_port=free_ports(1)[0]
        ).argv()
        ports = _ports_in(argv)
        assert len(ports) == 9, argv
        assert len(set(ports)) == len(ports), argv


def test_ports_chosen_for_the_head_are_never_picked_again_for_its_components() -> None:
    chosen = set(free_ports(3))
    gcs, dashboard, client = sorted(chosen)
    ports = NodePorts.pick(avoid=chosen)
    assert not chosen & ports.taken()
    argv = NodeSpec(
        ip="127.0.0.1",
        temp_dir="/tmp/x",
        head=True,
        gcs_port=gcs,
        dashboard_port=dashboard,
        client_server_port=client,
    ).argv(ports)
    found = _ports_in(argv)
    assert len(set(found)) == len(found) == 9


def _overlaps(nodes: list[NodePorts]) -> int:
    spans = [set(range(n.min_worker, n.max_worker + 1)) for n in nodes]
    return sum(1 for i, a in enumerate(spans) for b in spans[i + 1 :] if a & b)


def test_nodes_picked_with_the_ports_given_before_get_disjoint_worker_ranges() -> None:
    # Worker ranges are bound only as workers start, so the free-port probe cannot see
    # the range an earlier node was given: passing it in avoid is what keeps them apart.
    random.seed(7)
    used: set[int] = set()
    nodes = []
    for _ in range(30):
        ports = NodePorts.pick(avoid=used)
        assert not used & ports.all_ports()
        used |= ports.all_ports()
        nodes.append(ports)
    assert _overlaps(nodes) == 0
    # The same 30 picks without avoid do overlap: the check above can fail.
    random.seed(7)
    assert _overlaps([NodePorts.pick() for _ in range(30)]) > 0


def test_server_ports_come_from_outside_the_kernels_ephemeral_range() -> None:
    # A port from the ephemeral range can be handed to an outgoing connection between the
    # pick and the server's bind (a raylet then aborts: "Failed to start the grpc server").
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    low, high = server_port_band()
    assert high <= ephemeral_low and high <= 10000
    ports = free_ports(200)
    assert len(set(ports)) == 200
    assert all(low <= p < high for p in ports)
    # ... and from outside every node's worker range.
    assert all(not 20000 <= p < 32000 for p in ports)
