"""Proxmox VE failures mapped to the provider error kinds.

PVE reports most failures as HTTP 500 with a one-line message (a Perl ``die``), so the
kind is read from the message: a missing config file is NotFound, a held config lock or
lost quorum is Retryable. 400 carries per-parameter errors and is Terminal: the request
itself is wrong. Every message names the endpoint; none may carry a credential, so the
caller's secrets are scrubbed from every text that reaches an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import requests
from proxmoxer import AuthenticationError, ResourceException

from virtrigaud.providers.base import (
    Cause,
    NotFoundError,
    ProviderError,
    RetryableError,
    TerminalError,
)

# Messages of conditions that pass on their own: locks held by other tasks, a busy or
# partitioned cluster, a VMID taken by a concurrent create.
_RETRYABLE = re.compile(
    r"can't lock file|got timeout|VM is locked|is locked \(|no quorum|cluster not ready|"
    r"already exists|already used|No route to host|timed out|Connection refused|"
    r"temporarily unavailable|try again",
    re.IGNORECASE,
)
# 500s that no retry can fix: the request does not fit the cluster's layout.
_TERMINAL_500 = re.compile(
    r"non-shared storage|not allowed for linked clones|Linked clone feature is not supported|"
    r"does not support vm images|no such cluster node|protection mode enabled|"
    r"you can't (?:start|convert|take|delete|rollback)|reserved name",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"does not exist|no such (?:VM|snapshot|file)|not found", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret replaced, so no error ever carries one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def classify_message(message: str, endpoint: str, *, field: str | None = None) -> ProviderError:
    """The error kind a PVE failure message (HTTP 500 or a task exit status) stands for."""
    text = f"Proxmox VE at {endpoint}: {message}"
    if _TERMINAL_500.search(message):
        return TerminalError(text, field=field)
    if _NOT_FOUND.search(message):
        return NotFoundError(text, field=field)
    if _RETRYABLE.search(message):
        return RetryableError(text, field=field)
    return TerminalError(text, field=field)


def _pve_message(e: ResourceException) -> str:
    # proxmoxer puts PVE's reason line into `content`; the status line alone says nothing.
    return str(e.content or e.status_message or "").strip()


def map_pve_error(e: BaseException, endpoint: str, secrets: Iterable[str] = ()) -> ProviderError:
    """Map a proxmoxer/requests exception to Retryable, Terminal or NotFound."""
    secrets = tuple(secrets)
    if isinstance(e, ProviderError):
        return e
    if isinstance(e, ResourceException):
        status = int(e.status_code)
        message = scrub(_pve_message(e), secrets)
        if status == 400:
            errors = e.errors if isinstance(e.errors, dict) else {}
            if errors:
                name = next(iter(errors))
                detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
                return TerminalError(
                    scrub(
                        f"Proxmox VE at {endpoint} rejected parameter {name!r}: {detail}. "
                        "Fix the value in the VirtualMachine, VMClass or Provider defaults.",
                        secrets,
                    ),
                    field=str(name),
                )
            return TerminalError(f"Proxmox VE at {endpoint} rejected the request: {message}")
        if status == 401:
            return TerminalError(
                f"Proxmox VE at {endpoint} refused the credentials ({message}): check the token "
                "(token_id/token_secret) or username/password in the Provider's credentials "
                "Secret, and that the token is not expired or revoked.",
                field="spec.credentialSecretRef",
                cause=Cause.AUTHENTICATION,
            )
        if status == 403:
            return TerminalError(
                f"Proxmox VE at {endpoint} denied the request ({message}): grant the token's "
                "user (or the token, if privilege separation is on) this privilege."
            )
        if status == 501:
            return TerminalError(f"Proxmox VE at {endpoint} does not implement this: {message}")
        if status >= 500 or status in (408, 429):
            if _TERMINAL_500.search(message):
                return TerminalError(f"Proxmox VE at {endpoint} refused: {message}")
            if _NOT_FOUND.search(message):
                return NotFoundError(f"Proxmox VE at {endpoint}: {message}")
            return RetryableError(f"Proxmox VE at {endpoint} failed ({status}): {message}")
        if status == 404:
            return NotFoundError(f"Proxmox VE at {endpoint}: {message or 'not found'}")
        return TerminalError(f"Proxmox VE at {endpoint} answered {status}: {message}")
    if isinstance(e, AuthenticationError):
        return TerminalError(
            f"Proxmox VE at {endpoint} refused the login: check the username and password "
            "(or use an API token) in the Provider's credentials Secret.",
            field="spec.credentialSecretRef",
            cause=Cause.AUTHENTICATION,
        )
    if isinstance(e, requests.exceptions.SSLError):
        return TerminalError(
            f"TLS verification of Proxmox VE at {endpoint} failed: install a certificate the "
            "operator trusts, or set insecureSkipVerify on the Provider for a self-signed one. "
            f"({scrub(type(e).__name__, secrets)})",
            field="spec.insecureSkipVerify",
            cause=Cause.TLS,
        )
    if isinstance(e, requests.exceptions.Timeout):
        return RetryableError(
            f"Proxmox VE at {endpoint} did not answer in time", cause=Cause.UNREACHABLE
        )
    if isinstance(e, (requests.exceptions.ConnectionError, ConnectionError)):
        return RetryableError(
            f"Proxmox VE at {endpoint} is unreachable ({type(e).__name__}); "
            "check the endpoint and that pveproxy is running",
            cause=Cause.UNREACHABLE,
        )
    if isinstance(e, requests.exceptions.RequestException):
        return RetryableError(f"request to Proxmox VE at {endpoint} failed: {type(e).__name__}")
    return RetryableError(
        scrub(f"unexpected {type(e).__name__} talking to Proxmox VE at {endpoint}: {e}", secrets)
    )


def auth_failed(e: BaseException) -> bool:
    """True for the failure an expired or revoked login ticket produces."""
    cause = e.__cause__ if isinstance(e, ProviderError) else e
    return isinstance(cause, ResourceException) and int(cause.status_code) == 401
