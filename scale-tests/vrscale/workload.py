"""What a scale run creates on each simulator: the image, the placement defaults, the VM size,
and the one-time preparation of the simulator (a template / base volume)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtrigaud.dev.info import LibvirtInfo, ProxmoxInfo, StackInfo, VcsimInfo
from virtrigaud.dev.pvetemplates import TEMPLATES
from virtrigaud.dev.stack import SECRET_NAMES
from virtrigaud.providers.base import ImageSpec
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.registry import ProviderConfig

VCSIM_TEMPLATE = "vrscale-template"
VCSIM_DATASTORE = "LocalDS_0"
VCSIM_CLUSTER = "DC0_C0"
LIBVIRT_POOL = "default-pool"
LIBVIRT_IMAGE = "vrscale-base.qcow2"
PVE_TEMPLATE = int(TEMPLATES[0]["vmid"])
PVE_STORAGE = "local-lvm"

VM_CPU = 1
VM_MEMORY_MIB = 512

UNLIMITED = RateLimit(qps=10_000, burst=100_000)
"""The largest budget Provider.spec.rateLimit accepts: effectively no limit here."""


@dataclass(frozen=True)
class Target:
    """One simulator as a Provider: how to reach it and what to create on it."""

    sim: str  # vcsim, libvirt, proxmox (dev stack part names)
    provider_type: str  # vsphere, libvirt, proxmox
    endpoint: str
    credentials: dict[str, str]
    defaults: dict[str, str]
    image: ImageSpec
    image_source: dict[str, Any]
    """VMImage spec.source for this provider type (camelCase, as the API takes it)."""
    secret_name: str
    image_variants: tuple[dict[str, Any], ...] = ()
    """Several images to deal the VMs over (VMImage spec.source each), instead of the one
    shared image: a hypervisor that serialises clones of one template (Proxmox locks it for
    the whole clone) is then not the bottleneck of a run that measures the controller."""

    def provider_config(self, key: str, rate: RateLimit = UNLIMITED) -> ProviderConfig:
        return ProviderConfig(
            type=self.provider_type,
            key=key,
            endpoint=self.endpoint,
            credentials=self.credentials,
            rate=rate,
            insecure_skip_verify=True,
            defaults=self.defaults,
            max_workers=32,
        )


SIM_TYPES = {"vcsim": "vsphere", "libvirt": "libvirt", "proxmox": "proxmox"}


def targets(info: StackInfo, sims: tuple[str, ...] = tuple(SIM_TYPES)) -> list[Target]:
    out = []
    for sim in sims:
        part = info.part(sim)
        if part is None:
            raise RuntimeError(f"the dev stack in {info.state_dir} runs no {sim}; start it first")
        out.append(_target(sim, part))
    return out


def _target(sim: str, part: Any) -> Target:
    if isinstance(part, VcsimInfo):
        return Target(
            sim=sim,
            provider_type="vsphere",
            endpoint=part.url,
            credentials={"username": part.username, "password": part.password},
            defaults={"datastore": VCSIM_DATASTORE, "cluster": VCSIM_CLUSTER},
            image=ImageSpec(template=VCSIM_TEMPLATE),
            image_source={"vsphere": {"templateName": VCSIM_TEMPLATE}},
            secret_name=SECRET_NAMES[sim],
        )
    if isinstance(part, LibvirtInfo):
        return Target(
            sim=sim,
            provider_type="libvirt",
            endpoint=part.uri,
            credentials={"uri": part.uri},
            defaults={"storage_pool": LIBVIRT_POOL},
            image=ImageSpec(template=f"{LIBVIRT_POOL}/{LIBVIRT_IMAGE}"),
            image_source={"libvirt": {"path": LIBVIRT_IMAGE, "storagePool": LIBVIRT_POOL}},
            secret_name=SECRET_NAMES[sim],
        )
    if isinstance(part, ProxmoxInfo):
        return Target(
            sim=sim,
            provider_type="proxmox",
            endpoint=part.url,
            credentials={"token_id": part.token_id, "token_secret": part.token_secret},
            defaults={"storage": PVE_STORAGE, "node": part.nodes[0]},
            image=ImageSpec(template=str(PVE_TEMPLATE), node=part.nodes[0]),
            image_source={"proxmox": {"templateID": PVE_TEMPLATE, "node": part.nodes[0]}},
            secret_name=SECRET_NAMES[sim],
        )
    raise TypeError(f"not a simulator part: {type(part).__name__}")


def prepare(info: StackInfo) -> None:
    """Create what the images refer to (idempotent): a vCenter template, a libvirt volume.
    Proxmox's templates come with the dev stack."""
    if info.vcsim is not None:
        _vcsim_template(info.vcsim)
    if info.libvirt is not None:
        _libvirt_image(info.libvirt)


def _vcsim_template(info: VcsimInfo) -> None:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = SmartConnect(  # type: ignore[no-untyped-call]
        host=info.host,
        port=info.port,
        user=info.username,
        pwd=info.password,
        disableSslCertValidation=True,
    )
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            if any(vm.name == VCSIM_TEMPLATE for vm in view.view):
                return
        finally:
            view.DestroyView()
        dc = content.rootFolder.childEntity[0]
        cluster = next(
            c for c in dc.hostFolder.childEntity if isinstance(c, vim.ClusterComputeResource)
        )
        config = vim.vm.ConfigSpec(  # type: ignore[no-untyped-call]
            name=VCSIM_TEMPLATE,
            numCPUs=1,
            memoryMB=256,
            guestId="otherGuest64",
            files=vim.vm.FileInfo(vmPathName=f"[{VCSIM_DATASTORE}]"),  # type: ignore[no-untyped-call]
        )
        task = dc.vmFolder.CreateVM_Task(config=config, pool=cluster.resourcePool)
        WaitForTask(task)  # type: ignore[no-untyped-call]
        task.info.result.MarkAsTemplate()
    finally:
        Disconnect(si)  # type: ignore[no-untyped-call]


def _libvirt_image(info: LibvirtInfo) -> None:
    import libvirt

    # The test driver's pool is small (its capacity is fictional but enforced): a 1 MiB
    # base volume lets tens of thousands of clones fit.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(info.uri)
    try:
        pool = conn.storagePoolLookupByName(LIBVIRT_POOL)
        try:
            pool.storageVolLookupByName(LIBVIRT_IMAGE)
        except libvirt.libvirtError:
            pool.createXML(
                f"<volume><name>{LIBVIRT_IMAGE}</name><capacity unit='MiB'>1</capacity>"
                "<target><format type='qcow2'/></target></volume>",
                0,
            )
    finally:
        conn.close()
