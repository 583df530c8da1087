"""The per-process Prometheus endpoint (coordinator and every shard process have one)."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger("virtrigaud.metrics")

_started: dict[tuple[str, int], int] = {}


def serve_metrics(port: int, address: str = "127.0.0.1") -> int:
    """Serve /metrics on `address`:`port` (0 picks a free port); return the bound port.

    Loopback by default; in a pod the chart sets 0.0.0.0 so Prometheus can scrape it.

    Idempotent per requested port within a process, so a restarted component in the same
    process does not fail on a port it already serves.
    """
    if port < 0:
        raise ValueError(f"metrics port must be 0 (any free port) or positive, got {port}")
    if (address, port) in _started and port != 0:
        return _started[(address, port)]
    try:
        server, _thread = start_http_server(port, addr=address)
    except OSError as e:
        raise OSError(
            f"metrics endpoint {address}:{port}: {e.strerror}; choose another --metrics-port "
            "or 0 for any free port"
        ) from e
    bound = int(server.server_port)
    _started[(address, port)] = bound
    log.info("serving metrics", extra={"port": bound})
    return bound
