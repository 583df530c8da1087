"""Builds the provider's ``VMSpec`` (and the desired ``Resources``) from a VirtualMachine.

Inputs: the VM, its VMClass (CPU, memory, firmware; ``spec.resources`` overrides them), its
VMImage (the source entry for the Provider's type) or ``spec.importedDisk``, disks,
networks (through VMNetworkAttachments), cloud-init user/meta data (inline or from a
Secret in the VM's namespace), placement hints and tags.
"""

from __future__ import annotations

from typing import Any

from virtrigaud.api.virtualmachine import ADOPTED_VM_ID, InlineOrSecret, VirtualMachine
from virtrigaud.api.vmclass import VMClass
from virtrigaud.api.vmimage import VMImage
from virtrigaud.controllers.common.resolve import MissingDependency, Resolver, secret_values
from virtrigaud.kube.resources import SECRETS, VM_CLASSES, VM_IMAGES, VM_NETWORK_ATTACHMENTS
from virtrigaud.providers.base import (
    DiskSpec,
    ImageSpec,
    NetworkSpec,
    Owner,
    Resources,
    VMInfo,
    VMSpec,
)

# Keys looked up, in order, in a user-data / meta-data Secret.
USER_DATA_KEYS = ("userdata", "userData", "user-data", "value")
META_DATA_KEYS = ("metadata", "metaData", "meta-data", "value")


class SpecProblem(Exception):
    """The VM cannot be built as written; the user must change an object. Not retried hot."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


def owner_of(vm: VirtualMachine) -> Owner:
    meta = vm.metadata
    adopted = (meta.annotations or {}).get(ADOPTED_VM_ID) or None
    return Owner(meta.namespace or "default", meta.name or "", meta.uid or "", adopted)


def desired_resources(vm: VirtualMachine, vm_class: VMClass) -> Resources:
    overrides = vm.spec.resources
    cpu = (overrides.cpu if overrides and overrides.cpu else None) or vm_class.spec.cpu
    memory = (
        overrides.memory_mib if overrides and overrides.memory_mib else None
    ) or vm_class.spec.memory_mib()
    disks = tuple(DiskSpec(d.name, d.size_gib) for d in vm.spec.disks)
    return Resources(cpu=cpu, memory_mib=memory, disks=disks)


async def resolve_class(resolver: Resolver, vm: VirtualMachine) -> VMClass:
    ns = vm.spec.class_ref.namespace or vm.metadata.namespace or "default"
    obj = await resolver.require(VM_CLASSES, ns, vm.spec.class_ref.name, "spec.classRef")
    return VMClass.from_api(obj)


async def resolve_image(
    resolver: Resolver, vm: VirtualMachine, provider_type: str
) -> ImageSpec | None:
    if vm.spec.imported_disk is not None:
        disk = vm.spec.imported_disk
        return ImageSpec(template=disk.path or disk.disk_id)
    if vm.spec.image_ref is None:
        return None
    ref = vm.spec.image_ref
    ns = ref.namespace or vm.metadata.namespace or "default"
    image = VMImage.from_api(await resolver.require(VM_IMAGES, ns, ref.name, "spec.imageRef"))
    return image_spec(image, f"VMImage {ns}/{ref.name}", provider_type)


def imported_template_name(image: VMImage) -> str:
    """The vSphere template an OVA-only VMImage is imported as."""
    meta = image.metadata
    return f"virtrigaud-image-{meta.namespace or 'default'}-{meta.name}"


def qualified_checksum(value: str, default_type: str) -> str:
    """The checksum as "algorithm:hex"; the field may carry its algorithm as a prefix."""
    algorithm, _, digest = value.rpartition(":")
    return f"{(algorithm or default_type).lower()}:{digest.lower()}"


def image_spec(image: VMImage, where: str, provider_type: str) -> ImageSpec:
    """The image in a provider's terms, from the VMImage's source for that type."""
    source = image.spec.source
    if provider_type == "vsphere" and source.vsphere:
        prepare = image.spec.prepare
        # spec.prepare.onMissing Fail or Wait: a missing template is reported, not imported.
        ova = source.vsphere.ova_url if prepare is None or prepare.on_missing == "Import" else None
        checksum = None
        if ova and source.vsphere.checksum and (prepare is None or prepare.validate_checksum):
            checksum = qualified_checksum(source.vsphere.checksum, source.vsphere.checksum_type)
        lands = prepare.storage.vsphere if prepare and prepare.storage else None
        imported = ImageSpec(
            # The template, imported from the OVA under this name when it is missing.
            template=source.vsphere.template_name or imported_template_name(image),
            import_url=ova,
            import_checksum=checksum,
            import_datastore=lands.datastore if ova and lands else None,
            import_folder=lands.folder if ova and lands else None,
        )
        if source.vsphere.template_name or source.vsphere.ova_url:
            return imported
    if (
        provider_type == "libvirt"
        and source.libvirt
        and source.libvirt.url
        and not (source.libvirt.path)
    ):
        raise SpecProblem(
            "ImageImportNotSupported",
            f"{where} has only spec.source.libvirt.url, and libvirt Providers cannot import "
            "images (their capability supportsImageImport is false): put the image into a "
            "storage pool on the host and set spec.source.libvirt.path (and storagePool)",
        )
    if provider_type == "libvirt" and source.libvirt and source.libvirt.path:
        path = source.libvirt.path
        if not path.startswith("/") and "/" not in path and source.libvirt.storage_pool:
            path = f"{source.libvirt.storage_pool}/{path}"
        return ImageSpec(template=path)
    if provider_type == "proxmox" and source.proxmox:
        pve = source.proxmox
        template = str(pve.template_id) if pve.template_id else pve.template_name
        if template:
            return ImageSpec(
                template=template,
                node=pve.node,
                storage=pve.storage,
                linked_clone=not pve.full_clone,
            )
    field = {
        "vsphere": "spec.source.vsphere.templateName",
        "libvirt": "spec.source.libvirt.path",
        "proxmox": "spec.source.proxmox.templateID (or templateName)",
    }.get(provider_type, f"spec.source.{provider_type}")
    raise SpecProblem(
        "ImageNotAvailable",
        f"{where} has no {field}, so it cannot be used on a {provider_type} Provider: "
        f"set {field} on the VMImage or pick an image made for {provider_type}",
    )


async def _inline_or_secret(
    resolver: Resolver,
    namespace: str,
    value: InlineOrSecret | None,
    field: str,
    keys: tuple[str, ...],
) -> str | None:
    if value is None:
        return None
    if value.inline is not None:
        return value.inline
    if value.secret_ref is None:
        return None
    secret = await resolver.require(SECRETS, namespace, value.secret_ref.name, f"{field}.secretRef")
    data = secret_values(secret)
    for key in keys:
        if key in data:
            return data[key]
    if len(data) == 1:
        return next(iter(data.values()))
    raise SpecProblem(
        "UserDataInvalid",
        f"Secret {namespace}/{value.secret_ref.name} (named by {field}.secretRef) has none of "
        f"the keys {', '.join(keys)}: put the data under one of them",
    )


def network_name(attachment: dict[str, Any], provider_type: str) -> str | None:
    per_type: dict[str, Any] = (
        attachment.get("spec", {}).get("network", {}).get(provider_type) or {}
    )
    names: list[Any] = []
    if provider_type == "vsphere":
        names = [per_type.get("portgroup")]
    elif provider_type == "libvirt":
        bridge = per_type.get("bridge")
        names = [per_type.get("networkName"), bridge.get("name") if bridge else None]
    elif provider_type == "proxmox":
        names = [per_type.get("bridge"), "vmbr0"]  # Proxmox VE's own default bridge
    return next((str(n) for n in names if n), None)


async def resolve_networks(
    resolver: Resolver, vm: VirtualMachine, provider_type: str, default_network: str | None
) -> tuple[NetworkSpec, ...]:
    out: list[NetworkSpec] = []
    vm_ns = vm.metadata.namespace or "default"
    for i, nic in enumerate(vm.spec.networks):
        field = f"spec.networks[{i}].networkRef"
        if nic.network_ref is None:
            # No attachment keeps the image's own adapter unless the Provider names a default.
            if default_network is None:
                continue
            network = default_network
        else:
            ns = nic.network_ref.namespace or vm_ns
            attachment = await resolver.require(
                VM_NETWORK_ATTACHMENTS, ns, nic.network_ref.name, field
            )
            name = network_name(attachment, provider_type)
            if not name:
                raise SpecProblem(
                    "NetworkNotAvailable",
                    f"VMNetworkAttachment {ns}/{nic.network_ref.name} (named by {field}) has no "
                    f"spec.network.{provider_type} network name: add one for {provider_type}",
                )
            network = name
        out.append(
            NetworkSpec(
                network=network,
                mac=nic.mac_address,
                ip_address=nic.ip_address,
                prefix=nic.prefix,
                gateway=nic.gateway,
            )
        )
    return tuple(out)


# spec.placement speaks vSphere's words; Proxmox names the same ideas its own way.
_PROXMOX_PLACEMENT = {
    "host": "node",
    "datastore": "storage",
    "storage_pool": "storage",
    "resource_pool": "pool",
    "clone_mode": "cloneMode",
}


def placement_for(provider_type: str, placement: dict[str, str]) -> dict[str, str]:
    """spec.placement (snake_case, as Provider defaults arrive) in the provider's keys."""
    if provider_type == "proxmox":
        return {_PROXMOX_PLACEMENT.get(k, k): v for k, v in placement.items()}
    return placement


def _tags(vm: VirtualMachine) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag in vm.spec.tags:
        key, _, value = tag.partition("=")
        tags[key] = value
    return tags


async def build_vm_spec(
    resolver: Resolver,
    vm: VirtualMachine,
    vm_class: VMClass,
    provider_type: str,
    provider_defaults: dict[str, str],
) -> VMSpec:
    """Everything the provider needs to create this VM. Raises MissingDependency or
    SpecProblem."""
    ns = vm.metadata.namespace or "default"
    resources = desired_resources(vm, vm_class)
    user_data: str | None = None
    meta_data: str | None = None
    if vm.spec.user_data is not None:
        user_data = await _inline_or_secret(
            resolver, ns, vm.spec.user_data.cloud_init, "spec.userData.cloudInit", USER_DATA_KEYS
        )
        if user_data is None:
            user_data = await _inline_or_secret(
                resolver, ns, vm.spec.user_data.ignition, "spec.userData.ignition", USER_DATA_KEYS
            )
    if vm.spec.meta_data is not None:
        meta_data = await _inline_or_secret(
            resolver, ns, vm.spec.meta_data.cloud_init, "spec.metaData.cloudInit", META_DATA_KEYS
        )
    placement: dict[str, str] = {}
    if vm.spec.placement is not None:
        placement = placement_for(
            provider_type,
            {k: str(v) for k, v in vm.spec.placement.model_dump(exclude_none=True).items()},
        )
    return VMSpec(
        owner=owner_of(vm),
        cpu=resources.cpu,
        memory_mib=resources.memory_mib,
        image=await resolve_image(resolver, vm, provider_type),
        disks=resources.disks,
        networks=await resolve_networks(
            resolver, vm, provider_type, provider_defaults.get("network")
        ),
        user_data=user_data,
        meta_data=meta_data,
        placement=placement,
        tags=_tags(vm),
        firmware=vm_class.spec.firmware.value if vm_class.spec.firmware else None,
        extra_config=dict(vm_class.spec.extra_config),
    )


def hardware_differences(desired: Resources, info: VMInfo) -> list[str]:
    """What differs; raises SpecProblem for a disk asked to shrink."""
    diffs: list[str] = []
    if desired.cpu != info.cpu:
        diffs.append(f"cpu {info.cpu} -> {desired.cpu}")
    if desired.memory_mib != info.memory_mib:
        diffs.append(f"memory {info.memory_mib} MiB -> {desired.memory_mib} MiB")
    observed = {d.name: d.size_gib for d in info.disks}
    for i, disk in enumerate(desired.disks):
        size = observed.get(disk.name)
        if size is None:
            diffs.append(f"disk {disk.name} (new, {disk.size_gib} GiB)")
        elif disk.size_gib < size:
            raise SpecProblem(
                "DiskShrinkNotSupported",
                f"spec.disks[{i}] ({disk.name!r}) asks for {disk.size_gib} GiB but the disk "
                f"has {size:g} GiB; disks can only grow: set sizeGiB to at least {size:g}",
            )
        elif disk.size_gib > size:
            diffs.append(f"disk {disk.name} {size:g} GiB -> {disk.size_gib} GiB")
    return diffs


__all__ = [
    "MissingDependency",
    "SpecProblem",
    "build_vm_spec",
    "desired_resources",
    "hardware_differences",
    "owner_of",
    "resolve_class",
]
