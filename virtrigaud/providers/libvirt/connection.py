"""Pooled libvirt connections, each capped at the daemon's per-connection request limit.

libvirtd serves at most ``max_client_requests`` (default 5) RPCs of one connection at a
time and queues the rest, so a single connection is a hidden bottleneck. The pool keeps
several connections, each behind its own call gate with ``max_in_flight=5``; all gates
share one bounded thread pool and the Provider's rate-limit bucket. A call goes to the
least busy connection.

A connection that breaks (daemon restart, closed socket, keepalive timeout) is reopened
on the next call. A request found to be unsendable (the connection was already dead) is
resent once on the new connection; a request that may have reached the daemon is resent
only when the caller says it is safe to repeat (reads).

Keepalive needs libvirt's event loop: one daemon thread per process runs it. It also
delivers the close callback, which marks a connection broken as soon as the client
library notices, instead of on the next failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from virtrigaud.providers.base import RetryableError
from virtrigaud.providers.calls import CallGate, RateLimit, TokenLimiter
from virtrigaud.providers.libvirt.errors import (
    ConnectionLost,
    ErrorMapper,
    error_code,
    is_connection_error,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CLIENT_REQUESTS = 5
"""libvirtd.conf ``max_client_requests`` default: concurrent RPCs served per connection."""

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 5

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _quiet_error_handler(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised and mapped instead."""


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process)."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(_quiet_error_handler, None)
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        thread.start()
        _event_loop_started = True


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # the loop must outlive one bad callback
            log.exception("libvirt event loop iteration failed")


class Channel:
    """One libvirt connection and the gate that caps its in-flight requests."""

    def __init__(self, index: int, gate: CallGate) -> None:
        self.index = index
        self.gate = gate
        self.conn: Any = None
        self.broken = False
        self.in_flight = 0
        self.opened = 0
        """How many times this channel has opened a connection (1 + reconnects)."""
        self.lock = asyncio.Lock()

    def on_close(self, _conn: object, reason: int, _opaque: object) -> None:
        # Runs on the event-loop thread; a bool store is atomic under the GIL.
        self.broken = True
        log.info(
            "libvirt connection %d closed by the client library (reason %d)", self.index, reason
        )


class ConnectionPool:
    def __init__(
        self,
        uri: str,
        *,
        provider_key: str,
        rate: RateLimit,
        limiter: TokenLimiter,
        credentials: Mapping[str, str],
        size: int = 2,
        per_connection: int = MAX_CLIENT_REQUESTS,
        max_workers: int | None = None,
        provider_type: str = "libvirt",
    ) -> None:
        if size < 1:
            raise ValueError(f"libvirt connection pool size is {size}; use at least 1")
        if per_connection < 1:
            raise ValueError(f"libvirt in-flight cap is {per_connection}; use at least 1")
        ensure_event_loop()
        self.uri = uri
        self._credentials = dict(credentials)
        self.map_error = ErrorMapper(uri, self._credentials.values())
        self.executor = ThreadPoolExecutor(
            max_workers=max_workers or size * per_connection,
            thread_name_prefix=f"libvirt-{provider_key.replace('/', '.')}",
        )
        self.channels = [
            Channel(
                i,
                CallGate(
                    provider_type=provider_type,
                    provider_key=provider_key,
                    rate=rate,
                    limiter=limiter,
                    executor=self.executor,
                    map_error=self.map_error,
                    max_in_flight=per_connection,
                ),
            )
            for i in range(size)
        ]
        self.driver: str | None = None
        """``virConnectGetType`` of the endpoint (``TEST``, ``QEMU``, ...), once connected."""
        self._closed = False

    @property
    def safe_uri(self) -> str:
        return self.map_error.uri

    async def call(
        self,
        method: str,
        fn: Callable[[Any], T],
        *,
        cost: int = 1,
        repeatable: bool = False,
        pin: Any = None,
    ) -> T:
        """Run ``fn(conn)`` on the least busy connection through its gate.

        ``cost`` is the number of RPCs fn makes (one token each). ``repeatable`` marks fn
        as safe to run twice (reads), so it is resent after a mid-request disconnect.
        ``pin`` is a libvirt object (domain, volume, snapshot) from an earlier call: fn
        then runs on the connection that object belongs to, without reconnecting.
        """
        channel = self._channel_of(pin) if pin is not None else self._least_busy()
        channel.in_flight += 1
        try:
            for attempt in range(2):
                conn = pin.connect() if pin is not None else await self._connected(channel)
                try:
                    return await channel.gate.call(
                        method, _alive_then(conn, fn), cost=cost, mutating=not repeatable
                    )
                except RetryableError as e:
                    if not is_connection_error(e.__cause__):
                        raise
                    if channel.conn is conn:
                        channel.broken = True
                    cause = e.__cause__
                    unsent = isinstance(cause, ConnectionLost) or (
                        cause is not None and error_code(cause) == libvirt.VIR_ERR_INVALID_CONN
                    )
                    if pin is not None or attempt == 1 or not (unsent or repeatable):
                        raise
                    log.info("libvirt %s: %s; reconnecting and resending", method, e.message)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            channel.in_flight -= 1

    def usable(self, obj: Any) -> bool:
        """Whether a handle from an earlier call can still be used (its connection is one
        of the pool's and not known to be broken)."""
        conn = obj.connect()  # a Python attribute of the object, not an RPC
        return any(c.conn is conn and not c.broken for c in self.channels)

    def _least_busy(self) -> Channel:
        return min(self.channels, key=lambda c: c.in_flight)

    def _channel_of(self, obj: Any) -> Channel:
        conn = obj.connect()  # a Python attribute of the object, not an RPC
        for channel in self.channels:
            if channel.conn is conn:
                return channel
        raise RetryableError(
            f"libvirt at {self.safe_uri}: the connection was reopened during the operation; "
            "it is retried on the next attempt"
        )

    async def _connected(self, channel: Channel) -> Any:
        if channel.conn is not None and not channel.broken:
            return channel.conn
        async with channel.lock:
            if self._closed:
                raise RetryableError(
                    f"libvirt at {self.safe_uri}: this provider session is closed; "
                    "the session pool builds a new one"
                )
            if channel.conn is not None and not channel.broken:
                return channel.conn
            old, channel.conn = channel.conn, None
            conn, driver = await channel.gate.call(
                "open", lambda: self._open(channel, old), cost=2, mutating=False
            )
            channel.conn = conn
            channel.broken = False
            channel.opened += 1
            self.driver = driver
            return conn

    def _open(self, channel: Channel, old: Any) -> tuple[Any, str]:
        if old is not None:
            _close_quietly(old)
        auth = [
            [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE],
            self._answer_credentials,
            None,
        ]
        conn = libvirt.openAuth(self.uri, auth, 0)
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
            conn.registerCloseCallback(channel.on_close, None)
        except libvirt.libvirtError as e:
            # In-process drivers (test:///, ...) have no socket to keep alive or close.
            if error_code(e) != libvirt.VIR_ERR_NO_SUPPORT:
                _close_quietly(conn)
                raise
        return conn, str(conn.getType())

    def _answer_credentials(self, creds: list[list[Any]], _opaque: object) -> int:
        for cred in creds:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = self._credentials.get("username", "")
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                cred[4] = self._credentials.get("password", "")
        return 0

    async def close(self) -> None:
        """Close every connection (through its gate) and stop the thread pool."""
        self._closed = True
        for channel in self.channels:
            async with channel.lock:
                conn, channel.conn = channel.conn, None
                if conn is None:
                    continue
                try:
                    await channel.gate.call(
                        "close", functools.partial(_close_quietly, conn), mutating=False
                    )
                except Exception as e:  # a failed close must not keep the others open
                    log.warning("closing libvirt connection to %s failed: %s", self.safe_uri, e)
        # Not waiting: a call stuck on a dead socket must not block the event loop; its
        # thread ends when the (now closed) connection fails it.
        self.executor.shutdown(wait=False, cancel_futures=True)


def _alive_then(conn: Any, fn: Callable[[Any], T]) -> Callable[[], T]:
    def run() -> T:
        # isAlive is local (no RPC): it tells an unsendable request from a lost reply.
        try:
            alive = conn.isAlive()
        except libvirt.libvirtError as e:
            raise ConnectionLost(str(e)) from e
        if not alive:
            raise ConnectionLost("the connection is no longer alive")
        return fn(conn)

    return run


def _close_quietly(conn: Any) -> None:
    # The connection may already be dead or closed behind our back: closing is best effort.
    with contextlib.suppress(Exception):
        conn.unregisterCloseCallback()
    with contextlib.suppress(Exception):
        conn.close()
