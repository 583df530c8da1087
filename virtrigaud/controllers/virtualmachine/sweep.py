"""The sweep: which owned VMs need a pass, found with one batched listing per Provider.

An idle, converged fleet should cost almost nothing. Instead of a per-VM describe every few
minutes, the shard asks each Provider once for the state of all its VMs
(``Provider.observe_all``) and compares it with what the last pass of each key recorded in
status. Only keys whose VM is gone, differs (power, CPU, memory), or whose last pass did not
end Ready at the current generation are returned (a VM waiting for its user's power cycle
counts as Ready until the listing shows one); the runtime queues them.

A sweep reads the API server (through the resolver's cache) and the hypervisor, nothing
else: mutations stay inside per-key passes, so ownership and audit invariants are untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.controllers.common.resolve import Resolver
from virtrigaud.controllers.virtualmachine.memory import KeyMemory
from virtrigaud.controllers.virtualmachine.status import READY, RECONFIGURING
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.providers.base import Observed, PowerState, Provider
from virtrigaud.shards.reconciler import ShardContext

log = logging.getLogger(__name__)

JSON = dict[str, Any]


@dataclass
class _Group:
    """The keys of one Provider, each with the status its last pass left."""

    provider: Provider
    keys: list[tuple[str, JSON]] = field(default_factory=list)


def settled(obj: JSON) -> bool:
    """The last pass left the VM Ready at the current generation, nothing in flight."""
    meta = obj.get("metadata", {})
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("id"):
        return False
    if status.get("lastTaskRef") or status.get("reconfigureTaskRef"):
        return False
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    conditions = status.get("conditions") or []
    ready = _condition(conditions, READY)
    if ready is None or ready.get("status") != "True":
        return False
    reconfiguring = _condition(conditions, RECONFIGURING)
    if reconfiguring is None or reconfiguring.get("status") != "True":
        return True
    # Waiting for the user's power cycle: the listing shows when it happens (the power
    # state or the hardware then differs from what status recorded), so a pass before
    # that would learn nothing. A reconfigure to retry (NotApplied) is its pass's to make.
    return bool(
        reconfiguring.get("reason") == "PowerCycleRequired"
        and reconfiguring.get("observedGeneration") == meta.get("generation")
    )


def _condition(conditions: list[JSON], type_: str) -> JSON | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def matches(status: JSON, seen: Observed | None) -> bool:
    """What the hypervisor lists is what the last pass recorded."""
    if seen is None:
        return False  # gone behind the controller's back
    power = None if seen.power_state is PowerState.UNKNOWN else seen.power_state.value
    current = status.get("currentResources") or {}
    return (
        status.get("powerState") == power
        and current.get("cpu") == seen.cpu
        and current.get("memoryMiB") == seen.memory_mib
    )


class Sweep:
    def __init__(self, ctx: ShardContext, resolver: Resolver, memory: KeyMemory) -> None:
        self.ctx = ctx
        self.resolver = resolver
        self.memory = memory

    async def due(self, keys: Collection[str]) -> set[str]:
        due: set[str] = set()
        groups: dict[str, _Group] = {}
        for key in keys:
            if self.memory.follow_up_scheduled(key):
                continue  # a pass is already on its way
            obj = self.memory.latest(key)
            if obj is None or not settled(obj):
                due.add(key)
                continue
            try:
                config_key, provider = await self._provider(key, obj)
            except Exception as e:
                # The pass reports why (a missing Provider, a grant, a Secret...).
                log.debug("sweep: provider of %s not resolved: %s", key, e)
                due.add(key)
                continue
            group = groups.setdefault(config_key, _Group(provider))
            group.keys.append((key, obj["status"]))
        listings = await asyncio.gather(
            *(
                group.provider.observe_all({status["id"] for _key, status in group.keys})
                for group in groups.values()
            ),
            return_exceptions=True,
        )
        for (config_key, group), listing in zip(groups.items(), listings, strict=True):
            if isinstance(listing, BaseException):
                if isinstance(listing, asyncio.CancelledError):
                    raise listing
                # Queuing every VM of an unreachable endpoint would only multiply the
                # failing calls; the next sweep (or the per-key resync) looks again.
                log.warning(
                    "sweep: listing the VMs of Provider %s failed: %s; its %d VMs are "
                    "looked at again at the next sweep",
                    config_key,
                    listing,
                    len(group.keys),
                )
                continue
            for key, status in group.keys:
                if not matches(status, listing.get(status["id"])):
                    due.add(key)
        return due

    async def _provider(self, key: str, obj: JSON) -> tuple[str, Provider]:
        namespace = obj["metadata"].get("namespace") or ObjectKey.parse(key).namespace
        ref = obj.get("spec", {}).get("providerRef") or {}
        provider_obj = await self.resolver.provider(namespace, ref)
        config = await self.resolver.provider_config(provider_obj)
        return config.key, await self.ctx.providers.get(config)
