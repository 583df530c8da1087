"""The pooled provider of a Provider named by key, for controllers that check something on
each Provider their VMs use (images, networks). A Provider that is missing, unhealthy or
without its Secret is reported, not called."""

from __future__ import annotations

from virtrigaud.controllers.common.resolve import MissingDependency, Resolver
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.kube.resources import PROVIDERS
from virtrigaud.providers.base import Provider
from virtrigaud.shards.reconciler import ShardContext


class TargetUnavailable(Exception):
    """The Provider cannot be asked now; the message says why."""


async def pooled_provider(ctx: ShardContext, resolver: Resolver, provider_key: str) -> Provider:
    ref = ObjectKey.parse(provider_key)
    where = f"Provider {ref.namespace}/{ref.name}"
    obj = await resolver.get(PROVIDERS, ref.namespace, ref.name)
    if obj is None:
        raise TargetUnavailable(f"{where} does not exist")
    status = obj.get("status") or {}
    if status.get("healthy") is False:
        healthy = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Healthy"), None
        )
        reason = healthy.get("reason") if healthy else "Unhealthy"
        raise TargetUnavailable(f"{where} failed its health check ({reason}); not checked there")
    try:
        config = await resolver.provider_config(obj)
    except MissingDependency as e:
        raise TargetUnavailable(str(e)) from e
    return await ctx.providers.get(config)
