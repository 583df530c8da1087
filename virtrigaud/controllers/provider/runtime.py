"""What a remote Provider's status says about its provider server: ``status.runtime``
(address, phase, message, the circuit breaker's state; for a server the controller runs,
its Deployment's and Service's names and replica counts) and the ``CircuitClosed``
condition.

The breaker is the one in front of the server in this Provider's shard (each shard process
has its own; every shard's state is the metric ``virtrigaud_remote_provider_circuit_state``).
It is read after the pass's health check, which goes through it: an open circuit fails the
check at once, so the Provider turns unhealthy with reason Unreachable and its VMs wait.
"""

from __future__ import annotations

from typing import Any

from virtrigaud.api.corev1 import KubeLocalObjectReference
from virtrigaud.api.provider import ProviderRuntimeStatus
from virtrigaud.controllers.provider.managed import PROGRESSING, RuntimeState
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
    obj: JSON,
    pooled: Provider | None,
    ok: bool,
    error: ProviderError | None,
    managed: RuntimeState | None = None,
) -> ProviderRuntimeStatus | None:
    """status.runtime for a remote Provider after this pass (managed: what the pass found of
    the Deployment and Service it runs the server in); None for an in-process one."""
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
    status = ProviderRuntimeStatus(
        mode=REMOTE, endpoint=endpoint, phase=phase, circuit=circuit, managed=managed is not None
    )
    if managed is None:
        message += "; not managed: no spec.runtime.image, the provider server runs elsewhere"
    else:
        ref = KubeLocalObjectReference(name=managed.name)
        status.deployment_ref = status.service_ref = ref
        status.replicas = managed.replicas
        status.ready_replicas = managed.ready_replicas
        status.available_replicas = managed.available_replicas
        if not managed.ready and not ok:
            # The server cannot answer before its pods run: Starting, not Failed, meanwhile.
            status.phase = "Starting" if managed.reason == PROGRESSING else "Failed"
        message = f"{message}; {managed.message.removeprefix(f'{where}: ')}"
    status.message = message[:4096]
    return status


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
