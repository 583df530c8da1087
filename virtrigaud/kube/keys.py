"""Object keys: how every routed object is named across the system.

``Kind/namespace/name`` (e.g. ``VirtualMachine/demo/web-1``): the coordinator's store,
the hash ring's groups, the shards' ownership and workqueues, and the reconcile audit all
use these strings. Kind names and namespaces never contain ``/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @staticmethod
    def parse(key: str) -> ObjectKey:
        kind, namespace, name = key.split("/", 2)
        if not kind or not namespace or not name:
            raise ValueError(f"not an object key (Kind/namespace/name): {key!r}")
        return ObjectKey(kind, namespace, name)

    @staticmethod
    def of(kind: str, obj: dict[str, Any]) -> ObjectKey:
        meta = obj.get("metadata") or {}
        return ObjectKey(kind, str(meta.get("namespace") or ""), str(meta["name"]))


def object_key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def kind_of(key: str) -> str:
    return key.split("/", 1)[0]
