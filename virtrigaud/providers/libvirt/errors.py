"""libvirt errors in the contract's three kinds, worded for the person who must act.

Every message names the endpoint by its URI with the user part and the query removed
(except ``socket``, which says which daemon), and no credential value ever reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

import libvirt

from virtrigaud.providers.base import (
    Cause,
    NotFoundError,
    ProviderError,
    RetryableError,
    TerminalError,
)

NOT_FOUND_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_STORAGE_VOL,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_NETWORK,
        libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
        libvirt.VIR_ERR_NO_DOMAIN_METADATA,
    }
)

# The connection itself is gone or unusable: reconnect and try again.
CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
    }
)

# The daemon is busy or the guest did not answer in time: the same call can work later.
BUSY_CODES = frozenset(
    {
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
        libvirt.VIR_ERR_OPERATION_ABORTED,
        libvirt.VIR_ERR_RESOURCE_BUSY,
        libvirt.VIR_ERR_OPERATION_INVALID,  # wrong state now (e.g. not running); may change
        libvirt.VIR_ERR_OPERATION_FAILED,
        libvirt.VIR_ERR_INTERNAL_ERROR,
    }
)

AUTH_CODES = frozenset({libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED})

# The request can never work as written: bad XML, unsupported by this driver, bad argument.
CONFIG_CODES = frozenset(
    {
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_XML_DETAIL,
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_STORAGE_VOL_EXIST,
        libvirt.VIR_ERR_DOM_EXIST,
        libvirt.VIR_ERR_OPERATION_DENIED,
    }
)

# Error messages of a connection that the client closed (libvirt reports these as
# VIR_ERR_INTERNAL_ERROR, not as an RPC error).
_CLOSED_MARKERS = ("client socket is closed", "connection closed", "end of file while reading")


class ConnectionLost(Exception):
    """The connection was found dead before the request was sent (safe to resend)."""


def safe_uri(uri: str) -> str:
    """The URI without a user part and without query parameters other than ``socket``."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "&".join(f"{k}={v}" for k, v in parse_qsl(parts.query) if k == "socket")
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{query}" if query else "")


def error_code(exc: BaseException | None) -> int | None:
    if isinstance(exc, libvirt.libvirtError):
        code = exc.get_error_code()
        return int(code) if code is not None else None
    return None


def is_connection_error(exc: BaseException | None) -> bool:
    """True when exc means the connection (not the request) failed."""
    if exc is None:
        return False
    if isinstance(exc, ConnectionLost):
        return True
    code = error_code(exc)
    if code in CONNECTION_CODES:
        return True
    text = str(exc).lower()
    return code == libvirt.VIR_ERR_INTERNAL_ERROR and any(m in text for m in _CLOSED_MARKERS)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class ErrorMapper:
    """Maps one endpoint's libvirt exceptions to ProviderError kinds."""

    def __init__(self, uri: str, secrets: Iterable[str] = ()) -> None:
        self.uri = safe_uri(uri)
        # Short values (a one-letter user name) would mangle messages without protecting
        # anything; passwords and keys are longer.
        self._secrets = tuple(s for s in secrets if len(s) >= 4)

    def __call__(self, exc: BaseException) -> ProviderError:
        text = scrub(str(exc).strip() or type(exc).__name__, self._secrets)
        where = f"libvirt at {self.uri}"
        if isinstance(exc, ConnectionLost) or is_connection_error(exc):
            return RetryableError(
                f"{where}: the connection failed ({text}); it is reopened on the next call. "
                "If this persists, check that libvirtd runs and the endpoint is reachable",
                cause=Cause.UNREACHABLE,
            )
        code = error_code(exc)
        if code is None:
            return RetryableError(f"{where}: {type(exc).__name__}: {text}")
        if code in NOT_FOUND_CODES:
            return NotFoundError(f"{where}: {text}")
        if code in AUTH_CODES:
            return TerminalError(
                f"{where}: authentication failed ({text}); fix the username/password in the "
                "Provider's credentials Secret",
                field="spec.credentialSecretRef",
                cause=Cause.AUTHENTICATION,
            )
        if code in CONFIG_CODES:
            return TerminalError(f"{where}: {text}")
        if code in BUSY_CODES:
            return RetryableError(f"{where}: {text}")
        return RetryableError(f"{where}: libvirt error {code}: {text}")
