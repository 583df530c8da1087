"""What each simulator really holds, listed on the simulator itself (pyvmomi for vcsim,
listAllDomains for libvirt, /cluster/resources for fakepve), and the lost-VM figures
that come from it: a VM that should exist and is not there is lost, whatever the
VirtualMachine's status last said.

A hypervisor VM is named ``<namespace>.<name>`` (``Owner.hypervisor_name``), so the
VirtualMachine each listed VM belongs to is known from its name alone.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.dev.info import LibvirtInfo, ProxmoxInfo, StackInfo, VcsimInfo
from virtrigaud.providers.base import Owner


@dataclass(frozen=True)
class Listed:
    name: str
    running: bool


def hypervisor_name(key: str) -> str:
    """The name a VirtualMachine's VM has on the hypervisor (key: namespace/name, or
    Kind/namespace/name)."""
    namespace, name = key.split("/")[-2:]
    return Owner(namespace, name, "").hypervisor_name()


def list_vcsim(info: VcsimInfo) -> list[Listed]:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl

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
            spec = vmodl.query.PropertyCollector.FilterSpec(  # type: ignore[no-untyped-call]
                objectSet=[
                    vmodl.query.PropertyCollector.ObjectSpec(  # type: ignore[no-untyped-call]
                        obj=view,
                        skip=True,
                        selectSet=[
                            vmodl.query.PropertyCollector.TraversalSpec(  # type: ignore[no-untyped-call]
                                name="view", path="view", skip=False, type=vim.view.ContainerView
                            )
                        ],
                    )
                ],
                propSet=[
                    vmodl.query.PropertyCollector.PropertySpec(  # type: ignore[no-untyped-call]
                        type=vim.VirtualMachine, pathSet=["name", "runtime.powerState"]
                    )
                ],
            )
            out = []
            for obj in content.propertyCollector.RetrieveContents([spec]):
                props = {p.name: p.val for p in obj.propSet}
                out.append(
                    Listed(
                        str(props.get("name", "")), props.get("runtime.powerState") == "poweredOn"
                    )
                )
            return out
        finally:
            view.DestroyView()
    finally:
        Disconnect(si)  # type: ignore[no-untyped-call]


def list_libvirt(info: LibvirtInfo) -> list[Listed]:
    import libvirt

    conn = libvirt.open(info.uri)
    try:
        return [Listed(d.name(), bool(d.isActive())) for d in conn.listAllDomains(0)]
    finally:
        conn.close()


def list_proxmox(info: ProxmoxInfo) -> list[Listed]:
    request = urllib.request.Request(
        f"{info.url}/api2/json/cluster/resources?type=vm",
        headers={"Authorization": f"PVEAPIToken={info.token_id}={info.token_secret}"},
    )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(request, context=context, timeout=60) as resp:
        rows: list[dict[str, Any]] = json.loads(resp.read())["data"]
    return [
        Listed(str(r.get("name", "")), r.get("status") == "running")
        for r in rows
        if r.get("type") == "qemu" and not r.get("template")
    ]


def list_simulators(info: StackInfo, sims: Iterable[str]) -> dict[str, list[Listed]]:
    """Every VM on each named simulator (blocking: run it in a thread)."""
    out: dict[str, list[Listed]] = {}
    for sim in sims:
        part = info.part(sim)
        if isinstance(part, VcsimInfo):
            out[sim] = list_vcsim(part)
        elif isinstance(part, LibvirtInfo):
            out[sim] = list_libvirt(part)
        elif isinstance(part, ProxmoxInfo):
            out[sim] = list_proxmox(part)
        else:
            raise RuntimeError(f"the dev stack runs no simulator {sim!r}")
    return out


@dataclass
class SimulatorCount:
    """Expected VMs against one simulator's listing."""

    expected: int = 0
    present: int = 0
    running: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    """Expected names listed more than once (a VM created twice)."""
    not_running: list[str] = field(default_factory=list)

    def figures(self, examples: int = 5) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "present": self.present,
            "running": self.running,
            "missing": len(self.missing),
            "missing_examples": self.missing[:examples],
            "duplicated": len(self.duplicated),
            "duplicated_examples": self.duplicated[:examples],
            "not_running": len(self.not_running),
            "not_running_examples": self.not_running[:examples],
        }


def count_on_simulators(
    expected: Mapping[str, Iterable[str]], listed: Mapping[str, list[Listed]]
) -> dict[str, SimulatorCount]:
    """expected: simulator -> VirtualMachine keys that must have a VM there (powered on)."""
    out: dict[str, SimulatorCount] = {}
    for sim, keys in expected.items():
        names = Counter(v.name for v in listed.get(sim, []))
        running = {v.name for v in listed.get(sim, []) if v.running}
        count = SimulatorCount()
        for key in keys:
            name = hypervisor_name(key)
            count.expected += 1
            if names[name] == 0:
                count.missing.append(key)
                continue
            count.present += 1
            if names[name] > 1:
                count.duplicated.append(key)
            if name in running:
                count.running += 1
            else:
                count.not_running.append(key)
        out[sim] = count
    return out
