"""The libvirt/KVM provider (libvirt-python over pooled connections)."""

from __future__ import annotations

from virtrigaud.providers.calls import TokenLimiter
from virtrigaud.providers.libvirt.connection import MAX_CLIENT_REQUESTS
from virtrigaud.providers.libvirt.provider import LibvirtProvider
from virtrigaud.providers.registry import ProviderConfig

__all__ = ["LibvirtProvider", "create_provider"]


def create_provider(config: ProviderConfig, limiter: TokenLimiter) -> LibvirtProvider:
    """The registry's factory: ``spec.endpoint`` is the libvirt URI.

    The session's ``max_workers`` threads are served by enough connections that none
    carries more than ``MAX_CLIENT_REQUESTS`` calls at once (libvirtd's default
    per-connection limit).
    """
    connections = max(1, -(-config.max_workers // MAX_CLIENT_REQUESTS))
    return LibvirtProvider(
        config.endpoint,
        insecure_skip_verify=config.insecure_skip_verify,
        provider_key=config.key,
        limiter=limiter,
        rate=config.rate,
        credentials=config.credentials,
        defaults=config.defaults,
        connections=connections,
        max_workers=config.max_workers,
    )
