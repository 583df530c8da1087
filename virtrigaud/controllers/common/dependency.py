"""The shape shared by controllers of objects VMs depend on (VMClass, VMImage,
VMNetworkAttachment): the object arrives with its usage (leader/usage.py), a GET when the
runtime has none, and the last usage is remembered for passes that come without one."""

from __future__ import annotations

import abc
from collections.abc import Collection
from typing import Any

from virtrigaud.controllers.common.latest import LatestWrites
from virtrigaud.controllers.common.objects import read_object
from virtrigaud.controllers.common.perprovider import PerProviderMemory
from virtrigaud.controllers.common.resolve import Resolver
from virtrigaud.controllers.common.usage import Usage, take_usage
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import Resource
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

JSON = dict[str, Any]


class DependencyController(abc.ABC):
    resource: Resource

    def __init__(self, ctx: ShardContext, *, resolver: Resolver | None = None) -> None:
        self.ctx = ctx
        self.resolver = resolver or Resolver(ctx.kube)
        self.usage: dict[str, Usage] = {}
        self.latest = LatestWrites()

    async def forget(self, key: str) -> None:
        self.usage.pop(key, None)
        self.latest.forget(key)

    async def reconcile(self, key: str, obj: JSON | None) -> ReconcileResult:
        if obj is None:
            obj = await read_object(self.ctx.kube, self.resource, key)
            if obj is None:
                await self.forget(key)
                return ReconcileResult()
        obj = self.latest.freshest(key, obj)
        bare, usage = take_usage(self.usage, key, obj)
        return await self.run(key, bare, usage)

    @abc.abstractmethod
    async def run(self, key: str, obj: JSON, usage: Usage | None) -> ReconcileResult: ...

    async def save(self, obj: JSON, draft: Any) -> JSON:
        """Write the draft's status (a StatusDraft) when it differs; an object deleted
        meanwhile is left alone."""
        try:
            stored: JSON = await draft.write(self.ctx.kube, self.resource, obj)
            meta = stored.get("metadata") or {}
            self.latest.remember(
                f"{self.resource.kind}/{meta.get('namespace')}/{meta.get('name')}", stored
            )
            return stored
        except ApiError as e:
            if e.not_found:
                return obj
            raise


class PerProviderController(DependencyController):
    """A dependency checked on each Provider its VMs use (images, networks): what each
    check found is remembered per Provider, and a changed Provider requeues the objects
    whose check waits for it."""

    def __init__(self, ctx: ShardContext, **kwargs: Any) -> None:
        super().__init__(ctx, **kwargs)
        self.checks = PerProviderMemory()

    async def forget(self, key: str) -> None:
        await super().forget(key)
        self.checks.forget(key)

    def dependents(self, changed: Collection[str]) -> set[str]:
        return self.checks.waiting_for(changed)
