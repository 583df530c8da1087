"""Free TCP ports for servers this project starts on one machine."""

from __future__ import annotations

import socket
from collections.abc import Collection


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """count distinct ports free on every interface, none of them in avoid.

    Every probe socket stays bound until all are picked: a port released at once can be
    handed out again by the next probe, and Ray refuses to start a node whose components
    were given the same port.
    """
    held: list[socket.socket] = []
    picked: list[int] = []
    try:
        while len(picked) < count:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(probe)
            probe.bind(("", 0))
            port = int(probe.getsockname()[1])
            if port not in avoid:
                picked.append(port)
    finally:
        for probe in held:
            probe.close()
    return picked
