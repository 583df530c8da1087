"""How a Provider object says it runs remotely, read from its JSON (no typed model needed).

Field names follow the Go project's ProviderRuntimeSpec: ``spec.runtime.mode: Remote``,
``spec.runtime.service.{port, tls: {enabled, secretRef: {name}, insecureSkipVerify}}``.

The provider server is reached at the Service the Go project names
``virtrigaud-provider-<namespace>-<name>`` in the Provider's namespace, on
``service.port``, unless the annotation ``provider.virtrigaud.io/endpoint`` gives a
``host:port`` (a server outside the cluster, or on loopback in the dev stack). Both the
shards and the Provider controller compute the address from the object itself, so a VM
never waits for a status write; the Provider controller publishes it as
``status.runtime.endpoint``.

A remote Provider without a ``tls`` block is an error, never a plaintext connection;
``tls.enabled: false`` is the explicit insecure flag. Each error names the field and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from virtrigaud.providers.base import Cause, TerminalError

JSON = dict[str, Any]
REMOTE = "Remote"
ENDPOINT_ANNOTATION = "provider.virtrigaud.io/endpoint"
DEFAULT_PORT = 9443
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class RuntimeRef:
    """What the shard needs to reach a remote Provider, before the TLS Secret is read."""

    address: str
    tls_secret: str | None
    """The TLS Secret's name (tls.crt, tls.key, ca.crt), in the Provider's namespace."""
    insecure: bool


def service_name(namespace: str, name: str) -> str:
    """The Service in front of a Provider's remote provider server (the Go project's name)."""
    return f"virtrigaud-provider-{namespace}-{name}"


def _invalid(message: str, field: str) -> TerminalError:
    return TerminalError(message, field=field, cause=Cause.INVALID_SPEC)


def endpoint_of(provider: JSON, key: str) -> str:
    """host:port of the provider server: the annotation's, else the Service's DNS name."""
    meta = provider.get("metadata") or {}
    annotated = (meta.get("annotations") or {}).get(ENDPOINT_ANNOTATION)
    if annotated is not None:
        match = _HOST_PORT.match(annotated.strip())
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise _invalid(
                f"Provider {key}: annotation {ENDPOINT_ANNOTATION}={annotated!r} is not a "
                "host:port (e.g. 10.0.0.7:9443 or provider.example.com:9443); correct or "
                "remove it (without it the Service "
                f"{service_name(meta.get('namespace', ''), meta.get('name', ''))} is used)",
                f"metadata.annotations[{ENDPOINT_ANNOTATION}]",
            )
        return str(annotated).strip()
    runtime = (provider.get("spec") or {}).get("runtime") or {}
    port = int((runtime.get("service") or {}).get("port") or DEFAULT_PORT)
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    return f"{service_name(namespace, name)}.{namespace}.svc:{port}"


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
        raise _invalid(
            f"Provider {key} runs remotely but spec.runtime.service.tls is missing; set "
            "tls.secretRef to a Secret with tls.crt, tls.key and ca.crt (or tls.enabled: false "
            "to run plaintext on purpose)",
            "spec.runtime.service.tls",
        )
    insecure = tls.get("enabled") is False
    if tls.get("insecureSkipVerify") and not insecure:
        raise _invalid(
            f"Provider {key}: spec.runtime.service.tls.insecureSkipVerify is not supported "
            "(the provider server's certificate is always verified); remove it and put the CA "
            "that signed the server's certificate in the TLS Secret's ca.crt",
            "spec.runtime.service.tls.insecureSkipVerify",
        )
    secret = (tls.get("secretRef") or {}).get("name")
    if not insecure and not secret:
        raise _invalid(
            f"Provider {key}: spec.runtime.service.tls.secretRef.name is empty; name the TLS "
            "Secret (tls.crt, tls.key, ca.crt)",
            "spec.runtime.service.tls.secretRef",
        )
    # The server certificate must name the host of the address (the Service's DNS name,
    # or the annotation's host).
    return RuntimeRef(
        address=endpoint_of(provider, key),
        tls_secret=None if insecure else secret,
        insecure=insecure,
    )
