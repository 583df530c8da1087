"""Which port a shard's /metrics takes (virtrigaud/shards/metrics_port.py), with real
sockets on loopback: index mode, the first free slot of a node, and the error when a node
holds more shards than it has slots."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from virtrigaud.netports import free_ports
from virtrigaud.shards import metrics_port
from virtrigaud.shards.metrics_port import serve_shard_metrics


def consecutive(count: int) -> int:
    for _ in range(50):
        (base,) = free_ports(1)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no consecutive free ports")


@pytest.fixture
def taken() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def hold(port: int, held: list[socket.socket]) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    held.append(s)


def serves(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.status == 200


async def test_index_mode_puts_shard_i_on_base_plus_i() -> None:
    base = consecutive(4)
    assert await serve_shard_metrics(3, base, 0, "127.0.0.1") == base + 3
    assert serves(base + 3)


async def test_slot_mode_takes_the_first_free_slot_of_the_node(
    taken: list[socket.socket],
) -> None:
    base = consecutive(3)
    hold(base, taken)  # another shard of this node
    # Shard 7 of a node with 3 slots: not base + 7, the first free slot.
    assert await serve_shard_metrics(7, base, 3, "127.0.0.1") == base + 1
    assert serves(base + 1)


async def test_a_node_with_every_slot_taken_fails_and_names_the_fix(
    taken: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_port, "SLOT_WAIT_S", 0.3)
    base = consecutive(2)
    hold(base, taken)
    hold(base + 1, taken)
    with pytest.raises(
        OSError, match=r"shard-5: every shard metrics port .* --shard-metrics-slots"
    ):
        await serve_shard_metrics(5, base, 2, "127.0.0.1")
