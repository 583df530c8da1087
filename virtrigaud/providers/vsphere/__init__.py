"""vSphere (vCenter) provider on pyVmomi."""

from __future__ import annotations

from virtrigaud.providers.calls import TokenLimiter
from virtrigaud.providers.registry import ProviderConfig, new_gate
from virtrigaud.providers.vsphere.errors import error_mapper
from virtrigaud.providers.vsphere.provider import VSphereProvider

__all__ = ["VSphereProvider", "create_provider"]


def create_provider(config: ProviderConfig, limiter: TokenLimiter) -> VSphereProvider:
    """The registry's factory: credentials keys ``username`` and ``password``."""
    username = config.credential("username")
    password = config.credential("password")
    gate = new_gate(config, limiter, error_mapper(config.endpoint, username, (password,)))
    return VSphereProvider(
        endpoint=config.endpoint,
        username=username,
        password=password,
        insecure=config.insecure_skip_verify,
        gate=gate,
        defaults=config.defaults,
    )
