"""One pooled proxmoxer session per Proxmox VE endpoint.

Authentication is either an API token (``token_id`` ``user@realm!name`` plus
``token_secret``: stateless, never expires) or a password login ticket (``username``,
``password``). Tickets live two hours; the session renews one after ``renew_after``
seconds, through the call gate like every other call (proxmoxer's own silent renewal
is switched off so it cannot bypass the gate), and a request refused with 401 (ticket
expired or revoked behind our back, or the server restarted) logs in again once and
repeats the call.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests.adapters
from proxmoxer import ProxmoxAPI

from virtrigaud.providers.base import Cause, ProviderError, TerminalError
from virtrigaud.providers.calls import CallGate
from virtrigaud.providers.proxmox.errors import auth_failed

T = TypeVar("T")

DEFAULT_PORT = 8006
TICKET_RENEW_AFTER = 3600.0  # PVE tickets expire after 7200 s


@dataclass(frozen=True)
class Credentials:
    token_id: str | None = None
    token_secret: str | None = None
    username: str | None = None
    password: str | None = None

    @staticmethod
    def from_secret(data: dict[str, str], provider_key: str) -> Credentials:
        if data.get("token_id") and data.get("token_secret"):
            if "!" not in data["token_id"]:
                raise TerminalError(
                    f"Provider {provider_key}: token_id {data['token_id']!r} must look like "
                    "user@realm!tokenname",
                    field="credentials.token_id",
                    cause=Cause.INVALID_SPEC,
                )
            return Credentials(token_id=data["token_id"], token_secret=data["token_secret"])
        if data.get("username") and data.get("password"):
            user = data["username"] if "@" in data["username"] else data["username"] + "@pam"
            return Credentials(username=user, password=data["password"])
        raise TerminalError(
            f"Provider {provider_key}: the credentials Secret needs token_id and token_secret "
            "(API token) or username and password",
            field="credentials",
            cause=Cause.INVALID_SPEC,
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.token_secret, self.password) if s)

    @property
    def is_token(self) -> bool:
        return self.token_id is not None


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) from ``https://host:port``, ``host:port`` or ``host``."""
    url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if url.scheme != "https" or not url.hostname:
        raise TerminalError(
            f"Proxmox endpoint {endpoint!r} must be https://host[:port]",
            field="spec.endpoint",
            cause=Cause.INVALID_SPEC,
        )
    return url.hostname, url.port or DEFAULT_PORT


class PveSession:
    def __init__(
        self,
        *,
        endpoint: str,
        credentials: Credentials,
        verify_ssl: bool,
        gate: CallGate,
        timeout: float = 30.0,
        max_connections: int = 8,
        renew_after: float = TICKET_RENEW_AFTER,
    ) -> None:
        self.endpoint = endpoint
        self.host, self.port = parse_endpoint(endpoint)
        self.credentials = credentials
        self.verify_ssl = verify_ssl
        self.gate = gate
        self.timeout = timeout
        self.max_connections = max_connections
        self.renew_after = renew_after
        self._api: Any = None
        self._born = 0.0
        self._login_lock = asyncio.Lock()

    def _connect(self) -> Any:
        """Build the client; for a password this is the login request itself."""
        c = self.credentials
        kwargs: dict[str, Any] = dict(
            port=self.port, verify_ssl=self.verify_ssl, timeout=self.timeout, backend="https"
        )
        if c.is_token:
            assert c.token_id is not None
            user, _, name = c.token_id.partition("!")
            api = ProxmoxAPI(
                self.host, user=user, token_name=name, token_value=c.token_secret, **kwargs
            )
        else:
            api = ProxmoxAPI(self.host, user=c.username, password=c.password, **kwargs)
            # Renewal is ours (through the gate); proxmoxer would otherwise renew silently.
            api._store["session"].auth.renew_age = float("inf")
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=self.max_connections
        )
        api._store["session"].mount("https://", adapter)
        return api

    async def _login(self, failed: Any = None) -> None:
        """Log in (or build the token client) unless a concurrent caller just did."""
        async with self._login_lock:
            if self._api is None or self._api is failed or self._stale():
                old = self._api
                self._api = await self.gate.call("login", self._connect, mutating=False)
                self._born = time.monotonic()
                if old is not None:
                    old._store["session"].close()

    def _stale(self) -> bool:
        return not self.credentials.is_token and time.monotonic() - self._born >= self.renew_after

    async def api(self) -> Any:
        if self._api is None or self._stale():
            await self._login()
        return self._api

    async def call(self, method: str, fn: Callable[[Any], T], *, mutating: bool = True) -> T:
        """Run fn(ProxmoxAPI) through the gate; a 401 logs in again once (tickets only)."""
        api = await self.api()
        try:
            return await self.gate.call(method, lambda: fn(api), mutating=mutating)
        except ProviderError as e:
            if self.credentials.is_token or not auth_failed(e):
                raise
        await self._login(failed=api)
        api = self._api
        return await self.gate.call(method, lambda: fn(api), mutating=mutating)

    def force_expire(self) -> None:
        """Forget the ticket locally (tests: the next call meets a 401 and logs in again)."""
        if self._api is not None and not self.credentials.is_token:
            self._api._store["session"].auth.pve_auth_ticket = "PVE:expired::0"

    async def close(self) -> None:
        # PVE has no logout: a ticket just expires. Closing drops the pooled connections.
        if self._api is not None:
            self._api._store["session"].close()
            self._api = None
