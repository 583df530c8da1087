"""One gRPC channel per remote endpoint and TLS material, shared inside a process.

A channel multiplexes every concurrent call over one HTTP/2 connection, so all Providers
and reconciles of a shard that reach the same provider server share it. A channel whose
last user released it closes after a grace period (calls still running on it finish).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc

from virtrigaud.providers.remote.tls import TLSMaterial

CLOSE_GRACE = 30.0

_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 << 20),
    # Reconnect quickly after a provider server restarts (the default backoff reaches 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


@dataclass(frozen=True)
class ChannelKey:
    address: str
    server_name: str | None
    fingerprint: str


@dataclass
class _Entry:
    channel: grpc.aio.Channel
    users: int
    loop: asyncio.AbstractEventLoop


class ChannelPool:
    def __init__(self) -> None:
        self._entries: dict[tuple[ChannelKey, int], _Entry] = {}

    @staticmethod
    def _slot(key: ChannelKey) -> tuple[ChannelKey, int]:
        # Channels belong to the event loop that made them.
        return key, id(asyncio.get_running_loop())

    def acquire(self, key: ChannelKey, material: TLSMaterial | None) -> grpc.aio.Channel:
        slot = self._slot(key)
        entry = self._entries.get(slot)
        if entry is None:
            entry = _Entry(_new_channel(key, material), 0, asyncio.get_running_loop())
            self._entries[slot] = entry
        entry.users += 1
        return entry.channel

    def get(self, key: ChannelKey) -> grpc.aio.Channel:
        return self._entries[self._slot(key)].channel

    def release(self, key: ChannelKey, grace: float = CLOSE_GRACE) -> None:
        with contextlib.suppress(RuntimeError):
            slot = self._slot(key)
            entry = self._entries.get(slot)
            if entry is None:
                return
            entry.users -= 1
            if entry.users <= 0:
                del self._entries[slot]
                entry.loop.create_task(entry.channel.close(grace))

    def __len__(self) -> int:
        return len(self._entries)


def _new_channel(key: ChannelKey, material: TLSMaterial | None) -> grpc.aio.Channel:
    options = list(_OPTIONS)
    if material is None:
        return grpc.aio.insecure_channel(key.address, options=options)
    if key.server_name:
        options.append(("grpc.ssl_target_name_override", key.server_name))
    creds = grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )
    return grpc.aio.secure_channel(key.address, creds, options=options)


CHANNELS = ChannelPool()
