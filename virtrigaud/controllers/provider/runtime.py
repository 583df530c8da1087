"""What a remote Provider's status says about its provider server: ``status.runtime``
(address, phase, message, the circuit breaker's state) and the ``CircuitClosed`` condition.

The breaker is the one in front of the server in this Provider's shard (each shard process
has its own; every shard's state is the metric ``virtrigaud_remote_provider_circuit_state``).
It is read after the pass's health check, which goes through it: an open circuit fails the
check at once, so the Provider turns unhealthy with reason Unreachable and its VMs wait.
"""

from __future__ import annotations

from typing import Any

from virtrigaud.api.provider import ProviderRuntimeStatus
from virtrigaud.providers.base import Provider, ProviderError
from virtrigaud.providers.remote.breaker import CLOSED, OPEN
from virtrigaud.providers.remote.client import RemoteProvider
from virtrigaud.providers.remote.runtime import ENDPOINT_ANNOTATION, REMOTE, endpoint_of

JSON = dict[str, Any]

CIRCUIT_CLOSED = "CircuitClosed"

__all__ = ["CIRCUIT_CLOSED", "CLOSED", "circuit_message", "runtime_status"]


def _describe_tls(obj: JSON) -> str:
    tls = ((obj["spec"].get("runtime") or {}).get("service") or {}).get("tls") or {}
    if tls.get("enabled") is False:
        return (
            "PLAINTEXT: spec.runtime.service.tls.enabled is false, calls and their answers "
            "travel unencrypted and unauthenticated"
        )
    secret = (tls.get("secretRef") or {}).get("name")
    return f"mTLS with the client certificate of Secret {secret}" if secret else "mTLS"


def runtime_status(
    obj: JSON, pooled: Provider | None, ok: bool, error: ProviderError | None
) -> ProviderRuntimeStatus | None:
    """status.runtime for a remote Provider after this pass; None for an in-process one."""
    runtime = (obj.get("spec") or {}).get("runtime") or {}
    if runtime.get("mode") != REMOTE:
        return None
    meta = obj["metadata"]
    where = f"Provider {meta.get('namespace')}/{meta['name']}"
    try:
        endpoint: str | None = endpoint_of(obj, where)
    except ProviderError:
        endpoint = None
    how = (
        "annotation " + ENDPOINT_ANNOTATION
        if ENDPOINT_ANNOTATION in (meta.get("annotations") or {})
        else "its Service"
    )
    circuit = pooled.circuit().state if isinstance(pooled, RemoteProvider) else None
    if ok:
        phase = "Running"
        message = f"provider server at {endpoint} (from {how}) answers; {_describe_tls(obj)}"
    elif error is None:
        phase, message = "Pending", "waiting for what the Provider names (see Ready)"
    else:
        phase, message = "Failed", str(error).removeprefix(f"{where}: ")
    return ProviderRuntimeStatus(
        mode=REMOTE, endpoint=endpoint, phase=phase, message=message[:4096], circuit=circuit
    )


def circuit_message(ref: str, provider: RemoteProvider) -> str:
    state = provider.circuit()
    settings = provider.settings
    if state.state == CLOSED:
        return (
            f"{ref}: calls go to the provider server at {provider.endpoint.address} (the circuit "
            f"opens after {settings.failure_threshold} consecutive transport failures)"
        )
    last = f"; last: {state.last_failure}" if state.last_failure else ""
    if state.state == OPEN:
        return (
            f"{ref}: calls to the provider server at {provider.endpoint.address} fail at once "
            f"after {state.consecutive_failures} consecutive transport failures{last}; one call "
            f"tries it again {settings.reset_timeout:g} s after it opened "
            "(spec.healthCheck.interval); check that the server runs and answers"
        )
    return (
        f"{ref}: one trial call goes to the provider server at {provider.endpoint.address} "
        f"after {state.consecutive_failures} consecutive transport failures{last}"
    )
