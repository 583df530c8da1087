"""Before a VM is created: are its image and networks there on its Provider? The VMImage
and VMNetworkAttachment controllers say so per Provider in their status; a VM bound for a
Provider they found lacking waits with a condition naming the object and the Provider
(and is looked at again when that object changes) instead of failing its create. Reads
only cached objects: no hypervisor call."""

from __future__ import annotations

from typing import Any

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.common.resolve import Resolver
from virtrigaud.controllers.virtualmachine.passbase import Blocked
from virtrigaud.kube.resources import VM_IMAGES, VM_NETWORK_ATTACHMENTS

JSON = dict[str, Any]

IMAGE_NOT_READY = "ImageNotReady"
NETWORK_NOT_READY = "NetworkNotReady"


def _entry(obj: JSON, provider: str) -> JSON | None:
    found = ((obj.get("status") or {}).get("providerStatus") or {}).get(provider)
    return found if isinstance(found, dict) else None


async def check_prepared(resolver: Resolver, vm: VirtualMachine, vm_ref: str) -> None:
    """Raise Blocked when the image or a network is known to be missing on the Provider."""
    vm_ns = vm.metadata.namespace or "default"
    ref = vm.spec.provider_ref
    provider = f"{ref.namespace or vm_ns}/{ref.name}"
    if vm.spec.image_ref is not None and vm.spec.imported_disk is None:
        ns = vm.spec.image_ref.namespace or vm_ns
        name = vm.spec.image_ref.name
        image = await resolver.require(VM_IMAGES, ns, name, "spec.imageRef")
        entry = _entry(image, provider)
        if entry is not None and entry.get("available") is False:
            raise Blocked(
                IMAGE_NOT_READY,
                f"{vm_ref} waits for VMImage {ns}/{name}, which is not available on Provider "
                f"{provider}: {entry.get('message') or 'see the VMImage status'}",
            )
    for i, nic in enumerate(vm.spec.networks):
        if nic.network_ref is None:
            continue
        ns = nic.network_ref.namespace or vm_ns
        name = nic.network_ref.name
        network = await resolver.require(
            VM_NETWORK_ATTACHMENTS, ns, name, f"spec.networks[{i}].networkRef"
        )
        entry = _entry(network, provider)
        if entry is not None and entry.get("available") is False:
            raise Blocked(
                NETWORK_NOT_READY,
                f"{vm_ref} waits for VMNetworkAttachment {ns}/{name} (spec.networks[{i}]), "
                f"which is not available on Provider {provider}: "
                f"{entry.get('message') or 'see the VMNetworkAttachment status'}",
            )
