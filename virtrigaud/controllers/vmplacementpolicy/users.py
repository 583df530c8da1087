"""The VirtualMachines that use a VMPlacementPolicy, and where they are: one list of the
policy's namespace (a policy is referred to from its own namespace only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES

# status.provider keys (controllers/virtualmachine): the host the VM runs on as last seen,
# and the host its policy chose before its create.
OBSERVED_HOST = "host"
CHOSEN_HOST = "placementHost"
UNSATISFIABLE = "PlacementUnsatisfiable"


@dataclass
class PolicyUsers:
    names: list[str] = field(default_factory=list)
    placed: dict[str, str] = field(default_factory=dict)  # VM name -> host
    waiting: list[str] = field(default_factory=list)  # not created, no host chosen yet
    unsatisfiable: list[str] = field(default_factory=list)  # waiting on a strict rule


async def policy_users(kube: KubeClient, namespace: str, policy: str) -> PolicyUsers:
    items, _ = await kube.list_all(VIRTUAL_MACHINES, namespace)
    users = PolicyUsers()
    for vm in items:
        ref = (vm.get("spec") or {}).get("placementRef") or {}
        if ref.get("name") != policy or vm["metadata"].get("deletionTimestamp"):
            continue
        name = str(vm["metadata"]["name"])
        status = vm.get("status") or {}
        details = status.get("provider") or {}
        users.names.append(name)
        host = details.get(OBSERVED_HOST) or details.get(CHOSEN_HOST)
        if host:
            users.placed[name] = str(host)
        elif not status.get("id"):
            users.waiting.append(name)
        if any(c.get("reason") == UNSATISFIABLE for c in status.get("conditions") or []):
            users.unsatisfiable.append(name)
    users.names.sort()
    users.waiting.sort()
    return users
