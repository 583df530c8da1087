"""VMImage import: an OVA served over HTTP is imported into vcsim as a template (ImportVApp
and the NFC lease), the VMImage goes Importing -> Ready, and a VM boots from it. The
providers that cannot import say so in the VMImage's per-Provider status, naming the fix.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fixtures_vm import API, VMEnv, condition, is_ready

from virtrigaud.controllers.vmimage.reconciler import VMImageReconciler
from virtrigaud.kube.resources import VM_IMAGES
from virtrigaud.leader.usage import USAGE_FIELD
from virtrigaud.providers.base import ImageSpec, TerminalError

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
DISK = b"\0" * 65536  # vcsim stores what is uploaded; a real OVA carries a streamOptimized VMDK

OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:id="file1" ovf:href="disk1.vmdk" ovf:size="{size}"/></References>
  <DiskSection><Info>Virtual disks</Info>
    <Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1"
      ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="tiny">
    <Info>A virtual machine</Info>
    <Name>tiny</Name>
    <OperatingSystemSection ovf:id="1"><Info>The OS</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>tiny</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>1 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>256 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>256</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def make_ova() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            ("tiny.ovf", OVF.format(size=len(DISK)).encode()),
            ("disk1.vmdk", DISK),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class OvaServer:
    """Serves the OVA at /tiny.ova on loopback and counts the downloads."""

    def __init__(self) -> None:
        ova = make_ova()
        self.downloads = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/tiny.ova":
                    self.send_error(404)
                    return
                server.downloads += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(ova)))
                self.end_headers()
                self.wfile.write(ova)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
    await asyncio.sleep(0.5)
    assert ova_server.downloads == 0
