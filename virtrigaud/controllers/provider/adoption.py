"""Adoption: VMs already on a Provider's endpoint become VirtualMachines, with no
hypervisor change.

Opt-in per Provider, by its administrator: the annotation ``virtrigaud.io/adopt-vms:
"true"`` and optionally ``virtrigaud.io/adopt-filter`` (JSON, ``AdoptionFilter``: name
pattern, power state, CPU and memory bounds). A healthy adopting Provider lists the VMs
that carry no VirtRigaud ownership tag (``Provider.list_unowned``: reads only) when the
annotations change and every ``ADOPT_PERIOD``, and creates for each match not adopted yet:

* a VMClass ``adopted-<cpu>cpu-<memory>mib`` of its shape (shared, created once), so the
  VM pass finds nothing to reconfigure;
* a VirtualMachine in the Provider's namespace, labelled ``virtrigaud.io/adopted=true``,
  annotated ``virtrigaud.io/adopted-vm-id`` (the hypervisor VM it is) and
  ``virtrigaud.io/orphan-on-delete: "true"``, with the observed power state and, as the
  Go VirtRigaud writes it, ``spec.importedDisk`` naming the VM (``source: manual``).

The VM controller then observes it (Ready, status filled) and never creates or recreates
it; its hypervisor VM is not deleted with it unless the user sets orphan-on-delete to
"false". Adoption writes nothing on the hypervisor: the VM is the object's by its id
(``Owner.adopted_id``), not by a tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError

from virtrigaud.api.conditions import now
from virtrigaud.api.provider import (
    ADOPT_FILTER,
    ADOPT_VMS,
    AdoptionFilter,
    ProviderAdoptionStatus,
)
from virtrigaud.api.virtualmachine import ADOPTED_LABEL, ADOPTED_VM_ID, ORPHAN_ON_DELETE
from virtrigaud.controllers.common.objects import create_object
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_CLASSES
from virtrigaud.providers.base import PowerState, Provider, VMInfo

log = logging.getLogger(__name__)

JSON = dict[str, Any]
API_VERSION = "infra.virtrigaud.io/v1beta1"

ADOPT_PERIOD = 300.0
"""Seconds between listings of an adopting Provider's endpoint (annotation changes and
the Provider's Secret being fixed start one at once)."""
MAX_CREATES_PER_PASS = 200
"""VirtualMachines one Provider pass creates at most; the rest follow in the next pass."""
SOON = 1.0
NAME_LIMIT = 63


ADOPTIONS = Counter(
    "virtrigaud_adoptions_total",
    "Hypervisor VMs an adopting Provider matched, by outcome: adopted (a VirtualMachine was "
    "created for it) or failed (see the Provider's status.adoption.message)",
    ["provider", "outcome"],
)


class FilterInvalid(Exception):
    """The adopt-filter annotation cannot be used; the message says how to fix it."""


def adoption_requested(provider_obj: JSON) -> bool:
    annotations = provider_obj["metadata"].get("annotations") or {}
    return str(annotations.get(ADOPT_VMS, "")).lower() == "true"


def parse_filter(provider_obj: JSON) -> AdoptionFilter:
    annotations = provider_obj["metadata"].get("annotations") or {}
    raw = annotations.get(ADOPT_FILTER)
    if not raw:
        return AdoptionFilter()
    fix = (
        f'fix the annotation {ADOPT_FILTER}, e.g. {{"namePattern": "^prod-", "powerState": '
        '"On", "minCPU": 1, "maxMemoryMiB": 8192}'
    )
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise FilterInvalid(f"{ADOPT_FILTER} must be a JSON object; {fix}")
        parsed = AdoptionFilter.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as e:
        raise FilterInvalid(f"{ADOPT_FILTER} is not a valid filter ({e}); {fix}") from e
    if parsed.model_extra:
        unknown = ", ".join(sorted(parsed.model_extra))
        raise FilterInvalid(f"{ADOPT_FILTER} has unknown keys ({unknown}); {fix}")
    if parsed.name_pattern is not None:
        try:
            re.compile(parsed.name_pattern)
        except re.error as e:
            raise FilterInvalid(
                f"{ADOPT_FILTER} namePattern {parsed.name_pattern!r} is not a regular "
                f"expression ({e}); {fix}"
            ) from e
    return parsed


def matches(flt: AdoptionFilter, info: VMInfo) -> bool:
    if flt.name_pattern is not None and re.search(flt.name_pattern, info.name) is None:
        return False
    if flt.power_state is not None:
        want = PowerState.ON if flt.power_state == "On" else PowerState.OFF
        if info.power_state != want:
            return False
    if flt.min_cpu is not None and info.cpu < flt.min_cpu:
        return False
    if flt.max_cpu is not None and info.cpu > flt.max_cpu:
        return False
    if flt.min_memory_mib is not None and info.memory_mib < flt.min_memory_mib:
        return False
    return flt.max_memory_mib is None or info.memory_mib <= flt.max_memory_mib


def object_name(vm_name: str, vm_id: str, *, salted: bool = False) -> str:
    """A DNS-1123 name from the hypervisor VM's name; ``salted`` adds a digest of its id
    (for a name already taken, or one with nothing usable in it)."""
    base = re.sub(r"[^a-z0-9-]+", "-", vm_name.lower()).strip("-")
    base = re.sub(r"-{2,}", "-", base)
    if not base or salted:
        digest = hashlib.sha256(vm_id.encode()).hexdigest()[:8]
        base = f"{(base or 'vm')[: NAME_LIMIT - 9].rstrip('-')}-{digest}"
    return base[:NAME_LIMIT].rstrip("-")


def class_name(info: VMInfo) -> str:
    return f"adopted-{info.cpu}cpu-{info.memory_mib}mib"


@dataclass
class AdoptionMemory:
    """When this Provider's endpoint was last listed, and for which annotations."""

    signature: str | None = None
    listed_at: float = 0.0
    more: bool = False  # the last pass hit MAX_CREATES_PER_PASS
    classes: set[str] = field(default_factory=set)

    def due(self, signature: str) -> bool:
        if signature != self.signature or self.more:
            return True
        return time.monotonic() - self.listed_at >= ADOPT_PERIOD

    def next_in(self) -> float:
        if self.more:
            return SOON
        return max(SOON, ADOPT_PERIOD - (time.monotonic() - self.listed_at))


def signature_of(provider_obj: JSON) -> str:
    annotations = provider_obj["metadata"].get("annotations") or {}
    return f"{annotations.get(ADOPT_VMS, '')}\n{annotations.get(ADOPT_FILTER, '')}"


class Adopter:
    """One adoption pass for one Provider."""

    def __init__(self, kube: KubeClient, provider_obj: JSON, memory: AdoptionMemory) -> None:
        self.kube = kube
        self.obj = provider_obj
        self.memory = memory
        meta = provider_obj["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.ref = f"Provider {self.namespace}/{self.name}"

    async def run(self, provider: Provider) -> tuple[ProviderAdoptionStatus, list[str]]:
        """List, filter, create; the status to report and the names of the VirtualMachines
        created. Raises FilterInvalid and the provider's errors (nothing created then)."""
        flt = parse_filter(self.obj)
        found = [i for i in await provider.list_unowned() if matches(flt, i)]
        adopted = await self.adopted_ids()
        todo = [i for i in found if i.id not in adopted]
        created: list[str] = []
        failed: list[str] = []
        for info in todo[:MAX_CREATES_PER_PASS]:
            problem = unadoptable(info)
            if problem:
                failed.append(f"{info.name!r} ({info.id}): {problem}")
                continue
            name = await self.create_vm(info)
            if name is None:
                failed.append(
                    f"{info.name!r} ({info.id}): VirtualMachines {object_name(info.name, info.id)}"
                    " and its salted name exist already in the namespace; adopt it by hand "
                    f"(a VirtualMachine annotated {ADOPTED_VM_ID})"
                )
                continue
            created.append(name)
            adopted.add(info.id)
        provider_ref = f"{self.namespace}/{self.name}"
        if created:
            ADOPTIONS.labels(provider_ref, "adopted").inc(len(created))
        if failed:
            ADOPTIONS.labels(provider_ref, "failed").inc(len(failed))
        self.memory.more = len(todo) > MAX_CREATES_PER_PASS
        message = (
            f"{len(found)} VMs without a VirtRigaud ownership tag match the filter; "
            f"{len(created)} adopted now, {len(adopted & {i.id for i in found})} adopted in all"
        )
        if self.memory.more:
            message += f"; {len(todo) - MAX_CREATES_PER_PASS} more are adopted in the next pass"
        if failed:
            message += f"; not adopted: {'; '.join(failed[:10])}"
        status = ProviderAdoptionStatus(
            last_discovery_time=now(),
            discovered_vms=len(found),
            adopted_vms=len(adopted),
            failed_adoptions=len(failed),
            message=message[:4096],
        )
        return status, created

    async def adopted_ids(self) -> set[str]:
        """The hypervisor VMs this Provider's adopted VirtualMachines already name."""
        listed = await self.kube.list(
            VIRTUAL_MACHINES, self.namespace, label_selector=f"{ADOPTED_LABEL}=true"
        )
        ids: set[str] = set()
        for item in listed.get("items", []):
            ref = item.get("spec", {}).get("providerRef") or {}
            if ref.get("name") != self.name or ref.get("namespace", self.namespace) != (
                self.namespace
            ):
                continue
            vm_id = (item["metadata"].get("annotations") or {}).get(ADOPTED_VM_ID)
            if vm_id:
                ids.add(vm_id)
        return ids

    async def ensure_class(self, info: VMInfo) -> str:
        name = class_name(info)
        if name not in self.memory.classes:
            await create_object(
                self.kube,
                VM_CLASSES,
                {
                    "apiVersion": API_VERSION,
                    "kind": "VMClass",
                    "metadata": {
                        "name": name,
                        "namespace": self.namespace,
                        "labels": {ADOPTED_LABEL: "true"},
                    },
                    "spec": {"cpu": info.cpu, "memory": f"{info.memory_mib}Mi"},
                },
            )
            self.memory.classes.add(name)
        return name

    async def create_vm(self, info: VMInfo) -> str | None:
        vm_class = await self.ensure_class(info)
        for salted in (False, True):
            name = object_name(info.name, info.id, salted=salted)
            body: JSON = {
                "apiVersion": API_VERSION,
                "kind": "VirtualMachine",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {ADOPTED_LABEL: "true"},
                    "annotations": {ADOPTED_VM_ID: info.id, ORPHAN_ON_DELETE: "true"},
                },
                "spec": {
                    "providerRef": {"name": self.name},
                    "classRef": {"name": vm_class},
                    "importedDisk": {"diskID": info.id, "source": "manual"},
                    "powerState": "On" if info.power_state == PowerState.ON else "Off",
                },
            }
            if await create_object(self.kube, VIRTUAL_MACHINES, body) is not None:
                return name
        return None


def unadoptable(info: VMInfo) -> str | None:
    """Why a listed VM cannot be described by a VirtualMachine, if it cannot."""
    if info.cpu < 1 or info.cpu > 128:
        return f"{info.cpu} vCPUs (a VMClass takes 1-128)"
    if info.memory_mib < 1:
        return f"{info.memory_mib} MiB of memory"
    return None
