"""VMImage import: an OVA served over HTTP is imported into vcsim as a template (ImportVApp
and the NFC lease), the VMImage goes Importing -> Ready, and a VM boots from it. The
providers that cannot import say so in the VMImage's per-Provider status, naming the fix.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_vm import API, VMEnv, condition, is_ready, vcsim_si
from pyVim.task import WaitForTask
from pyVmomi import vim

from virtrigaud.api.vmimage import VMImage
from virtrigaud.controllers.virtualmachine.spec import image_spec
from virtrigaud.controllers.vmimage.reconciler import VMImageReconciler
from virtrigaud.kube.resources import VM_IMAGES
from virtrigaud.leader.usage import USAGE_FIELD
from virtrigaud.providers.base import ImageSpec, NotFoundError, TerminalError

_PROVIDER_TESTS = Path(__file__).resolve().parents[1] / "providers"
if str(_PROVIDER_TESTS) not in sys.path:
    sys.path.insert(0, str(_PROVIDER_TESTS))

from ova_server import OvaServer  # noqa: E402

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]


@pytest.fixture
def ova_server() -> Iterator[OvaServer]:
    server = OvaServer()
    yield server
    server.close()


async def delivered_run(
    rec: VMImageReconciler, env: VMEnv, name: str, types: tuple[str, ...]
) -> JSON:
    obj = await env.kube.get(VM_IMAGES, name, env.namespace)
    providers = [f"Provider/{env.namespace}/{t}" for t in types]
    usage = {"vms": 1, "providers": providers, "names": [f"{env.namespace}/user"]}
    await rec.reconcile(f"VMImage/{env.namespace}/{name}", {**obj, USAGE_FIELD: usage})
    stored: JSON = await env.kube.get(VM_IMAGES, name, env.namespace)
    return stored


async def test_an_ova_is_imported_into_vsphere_and_a_vm_boots_from_it(
    vm_env: VMEnv, ova_server: OvaServer
) -> None:
    template = f"imported-{uuid.uuid4().hex[:6]}"
    await vm_env.apply(
        VM_IMAGES,
        {
            "apiVersion": API,
            "kind": "VMImage",
            "metadata": {"name": "from-ova", "namespace": vm_env.namespace},
            "spec": {
                "source": {
                    "vsphere": {
                        "templateName": template,
                        "ovaURL": f"{ova_server.url}/tiny.ova",
                    },
                    "libvirt": {"url": f"{ova_server.url}/tiny.qcow2"},
                }
            },
        },
    )
    rec = VMImageReconciler(vm_env.ctx)
    started = time.monotonic()
    obj = await delivered_run(rec, vm_env, "from-ova", ("vsphere",))
    phases = [obj["status"]["phase"]]
    assert phases[0] == "Importing", obj["status"]
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "Importing", ready
    assert obj["status"]["importProgress"]["percentage"] >= 0
    while obj["status"]["phase"] == "Importing":
        assert time.monotonic() - started < 60, obj["status"]
        await asyncio.sleep(0.5)
        obj = await delivered_run(rec, vm_env, "from-ova", ("vsphere",))
        phases.append(obj["status"]["phase"])
    took = time.monotonic() - started
    print(f"OVA import into vcsim: {took:.1f} s, phases {phases}")
    st = obj["status"]
    assert st["phase"] == "Ready" and st["ready"] is True, st
    entry = st["providerStatus"][f"{vm_env.namespace}/vsphere"]
    assert entry["available"] is True and entry["path"] == template
    assert ova_server.downloads == 1

    # It is a template on vcsim now; a VM is cloned from it and runs.
    hv = await vm_env.hypervisor("vsphere")
    prepared = await hv.image_prepare(ImageSpec(template=template))
    assert prepared.ready and prepared.path == template
    await vm_env.vm("booted", "vsphere", extra_spec={"imageRef": {"name": "from-ova"}})
    driven = await vm_env.drive("booted", is_ready)
    assert driven.obj is not None and driven.obj["status"]["powerState"] == "On"

    # libvirt cannot import: its entry says so and names the fix; nothing is downloaded.
    obj = await delivered_run(rec, vm_env, "from-ova", ("vsphere", "libvirt"))
    entry = obj["status"]["providerStatus"][f"{vm_env.namespace}/libvirt"]
    assert entry["available"] is False
    assert "cannot import" in entry["message"] and "spec.source.libvirt.path" in entry["message"]
    assert obj["status"]["phase"] == "Failed"
    assert ova_server.downloads == 1


async def test_a_missing_ova_fails_the_import_with_the_url_named(
    vm_env: VMEnv, ova_server: OvaServer
) -> None:
    hv = await vm_env.hypervisor("vsphere")
    spec = ImageSpec(template=f"never-{uuid.uuid4().hex[:6]}", import_url=f"{ova_server.url}/x")
    first = await hv.image_prepare(spec)
    assert first.ready is False
    deadline = time.monotonic() + 20
    with pytest.raises(TerminalError, match="HTTP 404"):
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await hv.image_prepare(spec)


async def test_on_missing_fail_reports_the_template_without_importing(
    vm_env: VMEnv, ova_server: OvaServer
) -> None:
    template = f"not-imported-{uuid.uuid4().hex[:6]}"
    await vm_env.apply(
        VM_IMAGES,
        {
            "apiVersion": API,
            "kind": "VMImage",
            "metadata": {"name": "no-import", "namespace": vm_env.namespace},
            "spec": {
                "source": {
                    "vsphere": {"templateName": template, "ovaURL": f"{ova_server.url}/tiny.ova"}
                },
                "prepare": {"onMissing": "Fail"},
            },
        },
    )
    rec = VMImageReconciler(vm_env.ctx)
    obj = await delivered_run(rec, vm_env, "no-import", ("vsphere",))
    st = obj["status"]
    assert st["phase"] == "Failed", st
    assert template in st["providerStatus"][f"{vm_env.namespace}/vsphere"]["message"]
    # onMissing Wait: the same, but the image is awaited rather than failed.
    await vm_env.kube.patch(
        VM_IMAGES, "no-import", vm_env.namespace, {"spec": {"prepare": {"onMissing": "Wait"}}}
    )
    obj = await delivered_run(rec, vm_env, "no-import", ("vsphere",))
    assert obj["status"]["phase"] == "Pending", obj["status"]
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "WaitingForImage", ready
    await asyncio.sleep(0.5)
    assert ova_server.downloads == 0


async def test_an_ova_whose_checksum_differs_is_refused_and_nothing_is_imported(
    vm_env: VMEnv, ova_server: OvaServer
) -> None:
    hv = await vm_env.hypervisor("vsphere")
    url = f"{ova_server.url}/tiny.ova"
    template = f"checked-{uuid.uuid4().hex[:6]}"
    wrong = ImageSpec(template=template, import_url=url, import_checksum=f"sha256:{'0' * 64}")
    assert (await hv.image_prepare(wrong)).ready is False
    deadline = time.monotonic() + 20
    with pytest.raises(TerminalError, match=ova_server.sha256) as refused:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await hv.image_prepare(wrong)
    assert refused.value.field == "spec.source.vsphere.checksum"
    with pytest.raises(NotFoundError):  # not on vcsim: refused before ImportVApp
        await hv.image_prepare(ImageSpec(template=template))
    # The OVA's own digest imports it.
    right = ImageSpec(
        template=template, import_url=url, import_checksum=f"sha256:{ova_server.sha256}"
    )
    while not (await hv.image_prepare(right)).ready:
        assert time.monotonic() < deadline + 40
        await asyncio.sleep(0.2)


def test_the_images_checksum_reaches_the_provider_unless_validation_is_off() -> None:
    def image(vsphere: JSON, prepare: JSON | None = None) -> VMImage:
        spec: JSON = {"source": {"vsphere": vsphere}}
        if prepare is not None:
            spec["prepare"] = prepare
        return VMImage.model_validate({"metadata": {"name": "i", "namespace": "ns"}, "spec": spec})

    ova = {"templateName": "t", "ovaURL": "https://images.example/t.ova"}
    made = image_spec(image({**ova, "checksum": "ABC123"}), "VMImage ns/i", "vsphere")
    assert made.import_checksum == "sha256:abc123"
    typed = {**ova, "checksum": "sha512:ff", "checksumType": "md5"}
    assert image_spec(image(typed), "i", "vsphere").import_checksum == "sha512:ff"
    off = image({**ova, "checksum": "ab"}, {"validateChecksum": False})
    assert image_spec(off, "i", "vsphere").import_checksum is None
    lands = {"storage": {"vsphere": {"datastore": "ds-2", "folder": "templates"}}}
    placed = image_spec(image(ova, lands), "i", "vsphere")
    assert (placed.import_datastore, placed.import_folder) == ("ds-2", "templates")


async def test_an_import_lands_on_the_images_datastore_and_folder(
    vm_env: VMEnv, ova_server: OvaServer, tmp_path: Path
) -> None:
    """spec.prepare.storage.vsphere: a datastore and a folder made here on vcsim (neither
    is where the Provider's defaults put templates); read back from vcsim, then removed."""
    suffix = uuid.uuid4().hex[:6]
    folder_name, datastore_name = f"imports-{suffix}", f"ds-{suffix}"
    hv = await vm_env.hypervisor("vsphere")
    url = f"{ova_server.url}/tiny.ova"
    template = f"landed-{suffix}"
    with vcsim_si(vm_env) as si:
        dc = si.RetrieveContent().rootFolder.childEntity[0]
        folder = dc.vmFolder.CreateFolder(folder_name)
        # On the hosts of the cluster the Provider's default pool belongs to.
        cluster = next(
            e for e in dc.hostFolder.childEntity if isinstance(e, vim.ClusterComputeResource)
        )
        for host in cluster.host:
            datastore = host.configManager.datastoreSystem.CreateLocalDatastore(
                datastore_name, str(tmp_path)
            )
        try:
            image = ImageSpec(
                template=template,
                import_url=url,
                import_datastore=datastore_name,
                import_folder=folder_name,
            )
            deadline = time.monotonic() + 60
            while not (await hv.image_prepare(image)).ready:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            vm = next(v for v in folder.childEntity if v.name == template)
            assert [d.name for d in vm.datastore] == [datastore_name]
            WaitForTask(vm.Destroy_Task())
        finally:
            # Leave vcsim as the other tests expect it: one datastore, no extra folder.
            WaitForTask(datastore.Destroy_Task())
            WaitForTask(folder.Destroy_Task())
    # A datastore vCenter does not have names the image's field.
    missing = ImageSpec(
        template=f"nowhere-{suffix}", import_url=url, import_datastore=f"no-ds-{suffix}"
    )
    await hv.image_prepare(missing)
    with pytest.raises(TerminalError, match=f"no-ds-{suffix}") as refused:
        while time.monotonic() < deadline + 20:
            await asyncio.sleep(0.2)
            await hv.image_prepare(missing)
    assert refused.value.field == "spec.prepare.storage.vsphere.datastore"
