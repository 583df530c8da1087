"""How a Provider object says it runs remotely, read from its JSON (no typed model needed).

Field names follow the Go project's ProviderRuntimeSpec: ``spec.runtime.mode: Remote``,
``spec.runtime.service.{port, tls: {enabled, secretRef: {name}, insecureSkipVerify}}``.
The address is what the Provider controller publishes once the Service exists:
``status.runtime.endpoint`` (host:port). A remote Provider without a ``tls`` block is an
error, never a plaintext connection; ``tls.enabled: false`` is the explicit insecure flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtrigaud.providers.base import Cause, RetryableError, TerminalError

JSON = dict[str, Any]
REMOTE = "Remote"


@dataclass(frozen=True)
class RuntimeRef:
    """What the shard needs to reach a remote Provider, before the TLS Secret is read."""

    address: str
    tls_secret: str | None
    """The TLS Secret's name (tls.crt, tls.key, ca.crt), in the Provider's namespace."""
    insecure: bool


def runtime_of(provider: JSON) -> RuntimeRef | None:
    """None for an in-process Provider; a RuntimeRef, or a clear error, for a remote one."""
    spec = provider.get("spec") or {}
    runtime = spec.get("runtime") or {}
    if runtime.get("mode") != REMOTE:
        return None
    meta = provider.get("metadata") or {}
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    tls = (runtime.get("service") or {}).get("tls")
    if tls is None:
        raise TerminalError(
            f"Provider {key} runs remotely but spec.runtime.service.tls is missing; set "
            "tls.secretRef to a Secret with tls.crt, tls.key and ca.crt (or tls.enabled: false "
            "to run plaintext on purpose)",
            field="spec.runtime.service.tls",
            cause=Cause.INVALID_SPEC,
        )
    insecure = tls.get("enabled") is False
    secret = (tls.get("secretRef") or {}).get("name")
    if not insecure and not secret:
        raise TerminalError(
            f"Provider {key}: spec.runtime.service.tls.secretRef.name is empty; name the TLS "
            "Secret (tls.crt, tls.key, ca.crt)",
            field="spec.runtime.service.tls.secretRef",
            cause=Cause.INVALID_SPEC,
        )
    endpoint = ((provider.get("status") or {}).get("runtime") or {}).get("endpoint")
    if not endpoint:
        raise RetryableError(
            f"Provider {key} runs remotely but has no status.runtime.endpoint yet; it appears "
            "once the remote provider's Service exists",
            field="status.runtime.endpoint",
        )
    # The server certificate must name the host of the endpoint (the Service's DNS name).
    return RuntimeRef(address=endpoint, tls_secret=None if insecure else secret, insecure=insecure)
