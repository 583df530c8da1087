"""The one vCenter session of a provider: login, keep-alive, re-login, logout.

Every SOAP request runs through the call gate; a request that finds the session expired
(``NotAuthenticated``: idle timeout, an admin terminating it, vCenter restarting) logs in
again once and is retried once. Concurrent callers that all see the expiry share one
re-login.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from virtrigaud.providers.base import Cause, ProviderError, RetryableError, TerminalError
from virtrigaud.providers.calls import CallGate
from virtrigaud.providers.vsphere.errors import SessionExpiredError
from virtrigaud.providers.vsphere.sdk import smart_connect

log = logging.getLogger(__name__)

T = TypeVar("T")

KEEPALIVE_SECONDS = 300.0
"""A cheap call this often keeps an idle session from expiring (vCenter's default idle
timeout is 30 min); each one costs a rate-limit token, so it stays infrequent."""

HTTP_TIMEOUT_SECONDS = 60
DROPPED_RETRIES = 2
LOGIN_COST = 4  # version probe + RetrieveServiceContent + Login + RetrieveServiceContent


@dataclass(frozen=True)
class Connection:
    """A logged-in ServiceInstance and its ServiceContent (read once per login)."""

    si: Any
    content: Any
    cache: dict[str, Any] = field(default_factory=dict, compare=False)
    """Server objects bound to this session (views, the inventory index)."""

    @property
    def stub(self) -> Any:
        return self.si._stub


def _dropped(e: BaseException) -> bool:
    cause = e.__cause__
    return isinstance(
        cause, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
    )


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str

    @staticmethod
    def parse(endpoint: str) -> Endpoint:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if url.scheme not in ("https", "http") or not url.hostname:
            raise TerminalError(
                f"{endpoint!r} is not a vCenter URL; write it as https://HOST[:PORT]/sdk",
                field="spec.endpoint",
                cause=Cause.INVALID_SPEC,
            )
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError as e:
            raise TerminalError(
                f"{endpoint!r} has an invalid port; write it as https://HOST[:PORT]/sdk",
                field="spec.endpoint",
                cause=Cause.INVALID_SPEC,
            ) from e
        return Endpoint(url.hostname, port, url.path or "/sdk")


class VSphereSession:
    def __init__(
        self,
        *,
        endpoint: str,
        username: str,
        password: str,
        insecure: bool,
        gate: CallGate,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.endpoint = endpoint
        self._address = Endpoint.parse(endpoint)
        self._username = username
        self._password = password
        self._insecure = insecure
        self.gate = gate
        self._keepalive_seconds = keepalive_seconds
        self._conn: Connection | None = None
        self.generation = 0
        """Bumped on every login: objects bound to a session (views) belong to one."""
        self._login_lock = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None
        self._closed = False

    async def connection(self) -> tuple[Connection, int]:
        """The logged-in connection and its generation (logging in on first use)."""
        conn = self._conn
        if conn is None:
            await self._login(stale_generation=self.generation)
            conn = self._conn
            assert conn is not None
        return conn, self.generation

    async def call(
        self,
        method: str,
        fn: Callable[[Connection], T],
        *,
        cost: int = 1,
        idempotent: bool = False,
    ) -> T:
        """Run fn(connection) through the gate; re-login and retry once on expiry.

        An idempotent call (a read) is also retried when the connection drops without an
        answer: a pooled HTTP connection the server closed while idle fails exactly so (and
        vcsim drops the connection when a handler panics).
        """
        attempts = DROPPED_RETRIES + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                return await self._call_once(method, fn, cost, mutating=not idempotent)
            except RetryableError as e:
                if attempt == attempts - 1 or not _dropped(e):
                    raise
                await asyncio.sleep(0.05 * 4**attempt)
        raise AssertionError("unreachable")

    async def _call_once(
        self, method: str, fn: Callable[[Connection], T], cost: int, *, mutating: bool
    ) -> T:
        conn, generation = await self.connection()
        try:
            return await self.gate.call(method, lambda: fn(conn), cost=cost, mutating=mutating)
        except SessionExpiredError:
            log.info("vCenter %s session expired; logging in again", self.endpoint)
            await self._login(stale_generation=generation)
            conn, _ = await self.connection()
            return await self.gate.call(method, lambda: fn(conn), cost=cost, mutating=mutating)

    async def relogin(self) -> None:
        """Force a new session (after the current one was found dead another way)."""
        await self._login(stale_generation=self.generation)

    async def _login(self, *, stale_generation: int) -> None:
        async with self._login_lock:
            if self._closed:
                raise RetryableError(
                    f"the session with vCenter {self.endpoint} was closed (its Provider changed "
                    "or the process is stopping); the next attempt uses the current session"
                )
            if self._conn is not None and self.generation != stale_generation:
                return  # another caller already logged in again
            self._conn = None
            self._conn = await self.gate.call(
                "Login", self._connect, cost=LOGIN_COST, mutating=False
            )
            self.generation += 1
            if self._keepalive is None and self._keepalive_seconds > 0:
                self._keepalive = asyncio.create_task(
                    self._keep_alive(), name=f"vsphere-keepalive-{self.gate.provider_key}"
                )

    def _connect(self) -> Connection:
        si = smart_connect(
            protocol="https",
            host=self._address.host,
            port=self._address.port,
            path=self._address.path,
            user=self._username,
            pwd=self._password,
            disableSslCertValidation=self._insecure,
            # pyVmomi skips verification for localhost and 127.0.0.1 unless it is handed a
            # context: insecureSkipVerify false means verified, whatever the address.
            sslContext=None if self._insecure else ssl.create_default_context(),
            httpConnectionTimeout=HTTP_TIMEOUT_SECONDS,
        )
        return Connection(si, si.RetrieveContent())

    async def _keep_alive(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._keepalive_seconds)
            try:
                await self.call("CurrentTime", lambda c: c.si.CurrentTime())
            except ProviderError as e:
                log.warning("keep-alive of the vCenter %s session failed: %s", self.endpoint, e)

    async def close(self) -> None:
        """Log out (through the gate) and stop the keep-alive."""
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        async with self._login_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self.gate.call(
                    "Logout", lambda: conn.content.sessionManager.Logout(), mutating=False
                )
            except ProviderError as e:
                # The session may already be gone; vCenter expires it on its own.
                log.info("logout from vCenter %s: %s", self.endpoint, e)
