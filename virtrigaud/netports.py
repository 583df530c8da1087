"""Free TCP ports for servers this project starts on one machine."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

SERVER_PORTS = (1025, 10000)
"""Where server ports are picked: below Ray's default worker ports (10002-19999), the
worker-port ranges our Ray nodes get (20000-32000, raynode.py) and the kernel's ephemeral
range (32768+ here). A port from the ephemeral range can be handed to any outgoing
connection between the pick and the server's bind, and a Ray raylet that cannot bind its
port aborts the node's start."""

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def server_port_band() -> tuple[int, int]:
    """[low, high) of the ports free_ports picks from: SERVER_PORTS, cut below the kernel's
    ephemeral range where that starts lower."""
    low, high = SERVER_PORTS
    try:
        ephemeral_low = int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return low, high
    return low, max(low + 1, min(high, ephemeral_low))


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """count distinct ports free on every interface, none of them in avoid, from
    server_port_band() (random, so servers started at once rarely pick the same).

    Every probe socket stays bound until all are picked: a port released at once could be
    picked again by the next probe, and Ray refuses to start a node whose components were
    given the same port.
    """
    low, high = server_port_band()
    held: list[socket.socket] = []
    picked: list[int] = []
    try:
        for _ in range(200 * count):
            if len(picked) == count:
                break
            port = random.randrange(low, high)
            if port in avoid or port in picked:
                continue
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind(("", port))
            except OSError:
                probe.close()
                continue
            held.append(probe)
            picked.append(port)
    finally:
        for probe in held:
            probe.close()
    if len(picked) < count:
        raise RuntimeError(f"no {count} free ports between {low} and {high}")
    return picked
