"""A Ray node's ports are distinct: Ray refuses to start a node whose components share one."""

from __future__ import annotations

import re

from virtrigaud.netports import free_ports
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
