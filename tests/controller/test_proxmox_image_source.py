"""A Proxmox VMImage named the Go original's way: ``templateName`` instead of the vmid,
``fullClone: false`` for a linked clone, ``storage`` for where a full clone's disks go.
Checked on fakepve: the template is made by the test (a disk on a dir storage of its
own, where PVE names a linked clone's disk after its base volume), and each VM's disk is
read back from the guest's config there."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from fixtures_vm import PROXMOX_NODE, VMEnv, is_ready, pve_api
from proxmoxer import ProxmoxAPI

from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VIRTUAL_MACHINES

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
STORAGE = "vr-img-dir"
TEMPLATE_VMID = 9400
TEMPLATE_NAME = "tmpl-vr-image-source"


def _wait(api: ProxmoxAPI, upid: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        status = api.nodes(PROXMOX_NODE).tasks(upid).status.get()
        if status["status"] == "stopped":
            assert status.get("exitstatus") == "OK", status
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def _template(api: ProxmoxAPI) -> None:
    """A template whose disk sits on a dir storage of its own."""
    api.storage.post(storage=STORAGE, type="dir", path=f"/mnt/{STORAGE}", content="images")
    qemu = api.nodes(PROXMOX_NODE).qemu
    _wait(
        api,
        qemu.post(
            vmid=TEMPLATE_VMID,
            name=TEMPLATE_NAME,
            memory=512,
            scsi0=f"{STORAGE}:1,format=qcow2",
        ),
    )
    qemu(TEMPLATE_VMID).template.post()


def _root_disk(api: ProxmoxAPI, vm: JSON) -> str:
    node, vmid = vm["status"]["id"].split("/")
    return str(api.nodes(node).qemu(int(vmid)).config.get()["scsi0"])


async def test_template_name_linked_clone_and_storage(vm_env: VMEnv) -> None:
    api = pve_api(vm_env)
    _template(api)
    try:
        by_name = {"templateName": TEMPLATE_NAME, "node": PROXMOX_NODE}
        clone_settings: tuple[tuple[str, JSON], ...] = (
            ("pve-linked", {"fullClone": False}),
            ("pve-elsewhere", {"storage": "local-lvm"}),
        )
        for image, extra in clone_settings:
            await vm_env.vm_image("proxmox", image, {"proxmox": {**by_name, **extra}})
            await vm_env.vm(f"{image}-vm", "proxmox", extra_spec={"imageRef": {"name": image}})
        linked = (await vm_env.drive("pve-linked-vm", is_ready)).obj
        full = (await vm_env.drive("pve-elsewhere-vm", is_ready)).obj
        assert linked is not None and full is not None
        # A linked clone's disk on a dir storage is named under its template's base volume.
        disk = _root_disk(api, linked)
        assert disk.startswith(f"{STORAGE}:{TEMPLATE_VMID}/base-{TEMPLATE_VMID}-disk-"), disk
        # A full clone, onto the storage the image names, not the template's.
        disk = _root_disk(api, full)
        assert disk.startswith("local-lvm:vm-") and "base-" not in disk, disk
        conditions = {c["type"] for c in full["status"].get("conditions") or []}
        assert "FieldsNotSupported" not in conditions
    finally:
        # Leave fakepve as the other tests of the session expect it (tests/dev lists its
        # templates): the VMs first (a linked clone holds its template), then the template
        # and the storage.
        for name in ("pve-linked-vm", "pve-elsewhere-vm"):
            with contextlib.suppress(ApiError):
                await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
            await vm_env.drive(name, lambda o: o is None, timeout=60)
        _wait(api, api.nodes(PROXMOX_NODE).qemu(TEMPLATE_VMID).delete())
        api.storage(STORAGE).delete()
