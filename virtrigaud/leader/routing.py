"""What the coordinator routes to shards, and which objects must share a shard.

Every kind listed here is watched by the leader and its objects are handed to shards like
VirtualMachines. The hash ring places *groups*, not single objects: an object that acts
on one hypervisor VM (a snapshot of it, a clone or a migration of it) belongs to that
VM's group, so one shard acts for each hypervisor VM; every other object is a group of
its own (spread over the shards like VMs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from virtrigaud.kube.keys import ObjectKey, object_key
from virtrigaud.kube.resources import (
    PROVIDERS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_CLONES,
    VM_IMAGES,
    VM_MIGRATIONS,
    VM_NETWORK_ATTACHMENTS,
    VM_PLACEMENT_POLICIES,
    VM_SETS,
    VM_SNAPSHOTS,
    Resource,
)

JSON = dict[str, Any]
Affinity = Callable[[ObjectKey, JSON], str]


def own_group(key: ObjectKey, obj: JSON) -> str:
    return str(key)


def _vm_group(path: tuple[str, ...]) -> Affinity:
    """The group of the VirtualMachine named at `path` in the object (same namespace)."""

    def group(key: ObjectKey, obj: JSON) -> str:
        node: Any = obj
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str) or not node:
            return str(key)  # no VM named (yet): a group of its own
        return object_key(VIRTUAL_MACHINES.kind, key.namespace, node)

    return group


@dataclass(frozen=True)
class Route:
    resource: Resource
    affinity: Affinity = own_group

    @property
    def kind(self) -> str:
        return self.resource.kind


ROUTES: tuple[Route, ...] = (
    Route(VIRTUAL_MACHINES),
    Route(PROVIDERS),
    Route(VM_CLASSES),
    Route(VM_IMAGES),
    Route(VM_NETWORK_ATTACHMENTS),
    Route(VM_SNAPSHOTS, _vm_group(("spec", "vmRef", "name"))),
    Route(VM_CLONES, _vm_group(("spec", "source", "vmRef", "name"))),
    Route(VM_MIGRATIONS, _vm_group(("spec", "source", "vmRef", "name"))),
    Route(VM_SETS),
    Route(VM_PLACEMENT_POLICIES),
)
BY_KIND = {route.kind: route for route in ROUTES}


def routes_for(kinds: tuple[str, ...] | None) -> tuple[Route, ...]:
    """The routes of `kinds` (None: every routed kind); an unknown kind is an error."""
    if kinds is None:
        return ROUTES
    unknown = [k for k in kinds if k not in BY_KIND]
    if unknown:
        raise ValueError(
            f"cannot route {', '.join(unknown)}: routed kinds are {', '.join(BY_KIND)}"
        )
    return tuple(BY_KIND[k] for k in kinds)


DEPENDENCIES = frozenset(
    {"Provider", "VMClass", "VMImage", "VMNetworkAttachment", "VMPlacementPolicy", "Secret"}
)
"""Kinds other objects read while they reconcile: when one changes, every shard hears of it
(`touch`) and looks again at the keys whose last pass read it."""


def touch_signature(kind: str, obj: JSON) -> str:
    """What readers of a dependency act on: its spec and metadata, and the few status
    fields VMs act on (a failed health check, where an image or a network is missing). A
    change of anything else (connectedVMs, lastHealthCheck, conditions' messages: the
    dependency controllers' own bookkeeping) touches no shard, so a Provider writing its
    status does not send every VM that reads it through a pass."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    read: JSON = {
        "uid": meta.get("uid"),
        "generation": meta.get("generation"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "labels": meta.get("labels"),
        "annotations": meta.get("annotations"),
        "spec": obj.get("spec"),
    }
    if kind == "Secret":
        read["version"] = meta.get("resourceVersion")  # only metadata is watched
    elif kind == "Provider":
        # VMs wait only on a failed health check: unknown -> healthy unblocks no one.
        read["unhealthy"] = status.get("healthy") is False
    elif kind in ("VMImage", "VMNetworkAttachment"):
        # VMs wait only where it is known to be missing.
        read["missing"] = sorted(
            name
            for name, entry in (status.get("providerStatus") or {}).items()
            if (entry or {}).get("available") is False
        )
    return json.dumps(read, sort_keys=True, default=str)


def secrets_of_provider(obj: JSON) -> list[tuple[str, str]]:
    """(namespace, name) of every Secret a Provider names: its credentials and, for a
    remote Provider, the TLS Secret of spec.runtime.service.tls.secretRef."""
    out = []
    credentials = secret_of_provider(obj)
    if credentials is not None:
        out.append(credentials)
    runtime = (obj.get("spec") or {}).get("runtime") or {}
    tls = ((runtime.get("service") or {}).get("tls") or {}).get("secretRef") or {}
    if tls.get("name"):
        out.append((str((obj.get("metadata") or {}).get("namespace") or ""), str(tls["name"])))
    return out


def secret_of_provider(obj: JSON) -> tuple[str, str] | None:
    """(namespace, name) of the credentials Secret a Provider names, if any."""
    spec = obj.get("spec") or {}
    ref = spec.get("credentialSecretRef") or {}
    name = ref.get("name")
    if not name:
        return None
    namespace = ref.get("namespace") or (obj.get("metadata") or {}).get("namespace") or ""
    return str(namespace), str(name)
