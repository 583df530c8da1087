"""Hold one connection to the stack's libvirtd open so the test driver's state persists.

Run as ``python -m virtrigaud.dev.libvirt_keeper URI``. Prints ``KEEPER_READY`` once
connected; exits (non-zero) when the connection closes, so a dead daemon shows up as a
dead keeper in `dev status`.
"""

from __future__ import annotations

import sys
from typing import Any

import libvirt


def main(uri: str) -> int:
    # The event loop answers libvirtd's keepalive pings, so the daemon never drops us.
    libvirt.virEventRegisterDefaultImpl()
    conn = libvirt.open(uri)
    closed: list[int] = []

    def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
        closed.append(reason)

    conn.registerCloseCallback(on_close, None)
    conn.setKeepAlive(5, 3)
    print(f"KEEPER_READY domains={len(conn.listAllDomains())}", flush=True)
    while not closed:
        libvirt.virEventRunDefaultImpl()
    print(f"connection closed (reason {closed[0]})", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
