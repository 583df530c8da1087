"""Who uses each dependency: the leader sees every VirtualMachine, so it keeps the reverse
references (Provider, VMClass, VMImage, VMNetworkAttachment, VMPlacementPolicy -> the VMs
naming them) and hands the counts to the shard that owns the dependency, with the object
itself (``USAGE_FIELD``). A controller reports usage (``status.connectedVMs``,
``usedByVMs``) and learns which Providers need an image without listing VMs.
"""

from __future__ import annotations

from typing import Any

from virtrigaud.kube.keys import ObjectKey, object_key

JSON = dict[str, Any]

USAGE_FIELD = "virtrigaud.io/usage"
"""Top-level field of a dependency object as a shard receives it (never stored anywhere):
{"vms": count, "providers": ["Provider/ns/name", ...], "names": ["ns/vm", ...] (first 1000)}."""
NAMES_KEPT = 1000


def references(key: str, obj: JSON) -> dict[str, str]:
    """Dependency key -> the Provider key of the VM (for images and networks: which
    Providers need them), for one VirtualMachine object."""
    ref = ObjectKey.parse(key)
    spec = obj.get("spec") or {}
    provider_ref = spec.get("providerRef") or {}
    provider = ""
    if provider_ref.get("name"):
        provider = object_key(
            "Provider", provider_ref.get("namespace") or ref.namespace, provider_ref["name"]
        )
    deps: dict[str, str] = {}
    if provider:
        deps[provider] = provider
    for field, kind in (
        ("classRef", "VMClass"),
        ("imageRef", "VMImage"),
        ("placementRef", "VMPlacementPolicy"),
    ):
        name = (spec.get(field) or {}).get("name")
        if name:
            deps[object_key(kind, ref.namespace, name)] = provider
    for net in spec.get("networks") or []:
        name = (net.get("networkRef") or {}).get("name")
        if name:
            deps[object_key("VMNetworkAttachment", ref.namespace, name)] = provider
    return deps


class UsageIndex:
    def __init__(self) -> None:
        self._refs: dict[str, dict[str, str]] = {}  # VM key -> its dependencies
        self._users: dict[str, dict[str, str]] = {}  # dependency -> VM key -> Provider

    def update(self, key: str, obj: JSON | None) -> set[str]:
        """Record a VM's references (None: gone); the dependencies whose usage changed."""
        old = self._refs.pop(key, {})
        new = references(key, obj) if obj is not None else {}
        if new:
            self._refs[key] = new
        changed: set[str] = set()
        for dep in old.keys() - new.keys():
            users = self._users.get(dep)
            if users is not None:
                users.pop(key, None)
                if not users:
                    del self._users[dep]
            changed.add(dep)
        for dep, provider in new.items():
            users = self._users.setdefault(dep, {})
            if users.get(key) != provider:
                users[key] = provider
                changed.add(dep)
        return changed

    def usage(self, dep: str) -> JSON:
        users = self._users.get(dep, {})
        names = sorted(users)[:NAMES_KEPT]
        return {
            "vms": len(users),
            "providers": sorted({p for p in users.values() if p}),
            "names": [n.split("/", 1)[1] for n in names],
        }
