"""Loaded into shard processes by the harness's "arrival order" runs: the shard applies
ownership messages in the order they arrive, without stamps, as the protocol did before
stamps. The one-owner harness must find an overlap against it (proving it can fail)."""

from __future__ import annotations

from typing import Any

import runtime_recorder

from virtrigaud.shards import runtime
from virtrigaud.shards.ownership import Held, OwnershipTable
from virtrigaud.shards.reconciler import ShardContext


class ArrivalOrderTable(OwnershipTable):
    def accept(self, key: str, stamp: int, obj: dict[str, Any] | None) -> bool:
        if key in self.owned:
            self.owned[key].obj = obj
            return False
        self.owned[key] = Held(stamp, stamp, obj)
        return True

    def deliver(self, key: str, stamp: int, obj: dict[str, Any]) -> bool:
        held = self.owned.get(key)
        if held is None:
            return False
        held.obj = obj
        return True

    def release(self, key: str, stamp: int) -> bool:
        return self.owned.pop(key, None) is not None

    def raise_floor(self, floor: int) -> int:
        return 0


def factory(ctx: ShardContext) -> runtime_recorder.RecordingReconciler:
    runtime.OwnershipTable = ArrivalOrderTable  # type: ignore[misc]
    return runtime_recorder.RecordingReconciler(ctx)
