"""Proxmox VE provider (proxmoxer over HTTPS, one session per endpoint)."""

from __future__ import annotations

from virtrigaud.providers.calls import TokenLimiter
from virtrigaud.providers.proxmox.errors import map_pve_error
from virtrigaud.providers.proxmox.provider import ProxmoxProvider
from virtrigaud.providers.proxmox.session import Credentials, PveSession
from virtrigaud.providers.registry import ProviderConfig, new_gate

__all__ = ["ProxmoxProvider", "create_provider"]

DEFAULT_TIMEOUT = 30.0


def create_provider(config: ProviderConfig, limiter: TokenLimiter) -> ProxmoxProvider:
    """The provider for one Provider object of type proxmox.

    Credentials: ``token_id`` (``user@realm!name``) and ``token_secret``, or ``username``
    and ``password``. Defaults understood: ``node``, ``storage`` (the CRD's
    ``storagePool``), ``pool`` (``resourcePool``), ``cloneMode`` (full|linked),
    ``cicustom``, ``request_timeout`` (seconds).
    """
    credentials = Credentials.from_secret(dict(config.credentials), config.key)
    gate = new_gate(
        config,
        limiter,
        lambda e: map_pve_error(e, config.endpoint, credentials.secrets),
        max_in_flight=config.max_workers,
    )
    timeout = float(config.defaults.get("request_timeout") or DEFAULT_TIMEOUT)
    session = PveSession(
        endpoint=config.endpoint,
        credentials=credentials,
        verify_ssl=not config.insecure_skip_verify,
        gate=gate,
        timeout=timeout,
        max_connections=config.max_workers,
    )
    defaults = {k: v for k, v in config.defaults.items() if k != "request_timeout"}
    # Provider.spec.defaults arrive in snake_case under the CRD's hypervisor-neutral names
    # (storagePool, resourcePool); the Proxmox placement keys are storage, pool, cloneMode.
    for crd_key, pve_key in (
        ("clone_mode", "cloneMode"),
        ("storage_pool", "storage"),
        ("resource_pool", "pool"),
    ):
        if crd_key in defaults:
            defaults.setdefault(pve_key, defaults.pop(crd_key))
    return ProxmoxProvider(session=session, gate=gate, defaults=defaults)
