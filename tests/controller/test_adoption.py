"""Adoption: VMs already on each simulator become VirtualMachines without a single
mutating call reaching the simulator.

Each adopting Provider talks to its simulator through a counting proxy
(scale-tests/vrscale/wire.py), so every request is seen where it arrives, whatever code
path sent it. A request counts as mutating unless it is known to be a read:

* vcsim: the SOAP operation (read from the request body) is not in ``VSPHERE_READS``
  (a GET, the SDK's version discovery, is a read);
* fakepve: any method other than GET;
* libvirtd: the RPC procedure is not among those a read-only libvirt session made
  through another proxy just before (``calibrate_libvirt_reads``).

``test_the_count_sees_a_mutating_adoption`` runs a deliberately broken adopter (it powers
each VM it adopts) and shows the same check counting those calls on every simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import libvirt
import pytest
from fixtures_vm import (
    API,
    LIBVIRT_POOL,
    PROVIDER_TYPES,
    VMEnv,
    _b64,
    is_ready,
    provider_spec,
    wait_task,
)

from virtrigaud.api.provider import ADOPT_FILTER, ADOPT_VMS
from virtrigaud.api.virtualmachine import ADOPTED_LABEL, ADOPTED_VM_ID, ORPHAN_ON_DELETE
from virtrigaud.controllers.provider import reconciler as provider_reconciler
from virtrigaud.controllers.provider.adoption import ADOPTIONS, Adopter
from virtrigaud.controllers.provider.reconciler import ProviderReconciler
from virtrigaud.kube.resources import PROVIDERS, SECRETS, VIRTUAL_MACHINES
from virtrigaud.providers.base import NotFoundError, Owner, PowerOp, PowerState, VMInfo

_TESTS = Path(__file__).resolve().parents[1]
for _extra in (_TESTS / "providers", _TESTS.parent / "scale-tests"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from factories import load_factory  # noqa: E402
from vrscale.wire import HttpCountingProxy, HttpRequest, LibvirtCountingProxy  # noqa: E402

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
PRE_EXISTING = 20
POWERED_ON = 5  # of them, powered on before adoption (the rest are off)

# vSphere API operations that change nothing on the hypervisor: the session, property
# reads and the views they go through.
VSPHERE_READS = frozenset(
    {
        "RetrieveServiceContent",
        "Login",
        "Logout",
        "SessionIsActive",
        "CurrentTime",
        "RetrieveProperties",
        "RetrievePropertiesEx",
        "ContinueRetrievePropertiesEx",
        "CancelRetrievePropertiesEx",
        "CreateContainerView",
        "CreateListView",
        "DestroyView",
        "CreatePropertyCollector",
        "DestroyPropertyCollector",
        "CreateFilter",
        "DestroyPropertyFilter",
        "WaitForUpdatesEx",
        "FindByUuid",
        "FindByInventoryPath",
        "FindChild",
    }
)
SOAP_OPERATION = re.compile(rb"<(?:[\w-]+:)?Body[^>]*>\s*<(?:[\w-]+:)?(\w+)")

Proxy = HttpCountingProxy | LibvirtCountingProxy


def soap_operation(request: HttpRequest) -> str:
    found = SOAP_OPERATION.search(bytes(request.body))
    return found.group(1).decode() if found else f"(no SOAP body: {request.line})"


@dataclass
class Wire:
    """One simulator behind its counting proxy, and what counts as a read there."""

    provider_type: str
    proxy: Proxy
    libvirt_reads: frozenset[int] = frozenset()
    mark: int = 0  # requests before this index belong to an earlier phase
    seen: list[str] = field(default_factory=list)

    def requests(self) -> list[str]:
        """Each request since the mark, named: SOAP operation, HTTP line or procedure."""
        if isinstance(self.proxy, LibvirtCountingProxy):
            return [f"procedure {p}" for p in self.proxy.procedures[self.mark :]]
        assert self.proxy.requests is not None
        recorded = self.proxy.requests[self.mark :]
        if self.provider_type == "vsphere":
            # GETs are the SDK's version discovery (vimServiceVersions.xml); POSTs are SOAP.
            return [
                " ".join(r.line.split()[:2]) if r.line.startswith("GET ") else soap_operation(r)
                for r in recorded
            ]
        return [" ".join(r.line.split()[:2]) for r in recorded]

    def mutations(self) -> list[str]:
        out = []
        for name in self.requests():
            if self.provider_type == "vsphere":
                mutating = name not in VSPHERE_READS and not name.startswith("GET ")
            elif self.provider_type == "proxmox":
                mutating = not name.startswith("GET ")
            else:
                mutating = int(name.split()[1]) not in self.libvirt_reads
            if mutating:
                out.append(name)
        return out

    def restart_count(self) -> None:
        if isinstance(self.proxy, LibvirtCountingProxy):
            self.mark = len(self.proxy.procedures)
        else:
            assert self.proxy.requests is not None
            self.mark = len(self.proxy.requests)


def calibrate_libvirt_reads(uri: str) -> None:
    """A libvirt session that only reads, covering every read the provider makes."""
    conn = libvirt.open(uri)
    try:
        # As the provider's sessions open and probe: close callback, pool check (keepalive
        # messages are a program of their own, never counted).
        conn.registerCloseCallback(lambda *_: None, None)
        conn.storagePoolLookupByName(LIBVIRT_POOL).isActive()
        conn.getType()
        conn.getLibVersion()
        conn.getVersion()
        conn.getHostname()
        conn.isAlive()
        conn.listAllNetworks(0)
        conn.listAllInterfaces(0)
        conn.listStoragePools()
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
        for dom, _ in stats[:3]:
            same = conn.lookupByUUIDString(dom.UUIDString())
            conn.lookupByName(same.name())
            same.XMLDesc(0)
            same.state()
            same.info()
            same.isActive()
            same.snapshotListNames()
            # A stopped or diskless test domain has no addresses: the read fails, still a read.
            with contextlib.suppress(libvirt.libvirtError):
                same.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
        conn.listAllDomains(0)
        conn.unregisterCloseCallback()
    finally:
        conn.close()


def _with_port(url: str, port: int) -> str:
    return urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{port}"))


@pytest.fixture
async def wires(vm_env: VMEnv, tmp_path: Path) -> AsyncIterator[dict[str, Wire]]:
    out: dict[str, Wire] = {}
    started: list[Proxy] = []
    try:
        for provider_type in PROVIDER_TYPES:
            spec, _ = provider_spec(provider_type, vm_env.stack)
            proxy: Proxy
            reads: frozenset[int] = frozenset()
            if provider_type == "libvirt":
                socket = spec["endpoint"].split("socket=", 1)[1].split("&", 1)[0]
                calibration = LibvirtCountingProxy("libvirt-reads", socket, tmp_path / "c.sock")
                await calibration.start()
                started.append(calibration)
                await asyncio.to_thread(calibrate_libvirt_reads, calibration.uri)
                reads = frozenset(calibration.procedures)
                proxy = LibvirtCountingProxy("libvirt", socket, tmp_path / "lv.sock")
            else:
                up = urlsplit(spec["endpoint"])
                proxy = HttpCountingProxy(
                    provider_type, up.hostname or "127.0.0.1", up.port or 443, record=True
                )
            await proxy.start()
            started.append(proxy)
            out[provider_type] = Wire(provider_type, proxy, reads)
        yield out
    finally:
        for proxy in started:
            await proxy.close()


def proxied_endpoint(wire: Wire, spec: JSON) -> str:
    if isinstance(wire.proxy, LibvirtCountingProxy):
        return wire.proxy.uri
    return _with_port(spec["endpoint"], wire.proxy.port)


async def adopting_provider(
    env: VMEnv, wire: Wire, name: str, name_pattern: str, filter_extra: JSON | None = None
) -> JSON:
    """A Provider of the simulator behind the wire, allowing adoption of names matching."""
    spec, secret_data = provider_spec(wire.provider_type, env.stack)
    spec["endpoint"] = proxied_endpoint(wire, spec)
    if wire.provider_type == "libvirt":
        secret_data = {"uri": spec["endpoint"]}
    await env.apply(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-credentials", "namespace": env.namespace},
            "data": {k: _b64(v) for k, v in secret_data.items()},
        },
    )
    spec["credentialSecretRef"] = {"name": f"{name}-credentials"}
    spec["rateLimit"] = {"qps": 500, "burst": 500}
    adopt_filter = {"namePattern": name_pattern, **(filter_extra or {})}
    return await env.apply(
        PROVIDERS,
        {
            "apiVersion": API,
            "kind": "Provider",
            "metadata": {
                "name": name,
                "namespace": env.namespace,
                "annotations": {ADOPT_VMS: "true", ADOPT_FILTER: json.dumps(adopt_filter)},
            },
            "spec": spec,
        },
    )


@dataclass
class PreExisting:
    """VMs made on a simulator behind VirtRigaud's back (no ownership tag)."""

    provider_type: str
    prefix: str
    ids: dict[str, str] = field(default_factory=dict)  # id -> hypervisor name
    on: set[str] = field(default_factory=set)


async def make_pre_existing(env: VMEnv, provider_type: str, count: int) -> PreExisting:
    """count untagged VMs, made directly on the simulator (not through the proxies); the
    first POWERED_ON are powered on."""
    hv = await env.hypervisor(provider_type)
    factory = load_factory(provider_type)
    made = PreExisting(provider_type, f"adopt-{uuid.uuid4().hex[:6]}-")
    for i in range(count):
        name = f"{made.prefix}{i:02d}"
        made.ids[await factory.make_foreign_vm(hv, name)] = name
    for vm_id in list(made.ids)[: min(POWERED_ON, count)]:
        # Powered on through the adopted-owner path: nothing else may touch an untagged VM.
        owner = Owner(env.namespace, "setup", "setup", adopted_id=vm_id)
        await wait_task(hv, await hv.power(vm_id, owner, PowerOp.ON))
        made.on.add(vm_id)
    return made


async def remove_pre_existing(env: VMEnv, made: PreExisting) -> None:
    hv = await env.hypervisor(made.provider_type)
    await load_factory(made.provider_type).delete_vms(hv, list(made.ids))


@pytest.fixture
async def pre_existing(vm_env: VMEnv) -> AsyncIterator[list[PreExisting]]:
    made: list[PreExisting] = []
    yield made
    for m in made:
        await remove_pre_existing(vm_env, m)


async def provider_pass(env: VMEnv, reconciler: ProviderReconciler, name: str) -> JSON:
    await reconciler.reconcile(f"Provider/{env.namespace}/{name}", None)
    got: JSON = await env.kube.get(PROVIDERS, name, env.namespace)
    return got


async def adopt(env: VMEnv, name: str, expected: int) -> JSON:
    """Provider passes until its adoption reports expected VMs adopted."""
    reconciler = ProviderReconciler(env.ctx)
    for _ in range(5):
        obj = await provider_pass(env, reconciler, name)
        adoption = (obj.get("status") or {}).get("adoption") or {}
        if adoption.get("adoptedVMs") == expected:
            return obj
    raise AssertionError(f"Provider {name} did not adopt {expected} VMs: {obj.get('status')}")


async def adopted_vms(env: VMEnv, provider: str) -> list[JSON]:
    listed = await env.kube.list(
        VIRTUAL_MACHINES, env.namespace, label_selector=f"{ADOPTED_LABEL}=true"
    )
    return [i for i in listed["items"] if i["spec"]["providerRef"]["name"] == provider]


async def drive_all_ready(env: VMEnv, names: list[str]) -> list[JSON]:
    driven = []
    for chunk in range(0, len(names), 10):
        driven += await asyncio.gather(
            *(
                env.drive(n, lambda o: o is not None and is_ready(o), timeout=60)
                for n in names[chunk : chunk + 10]
            )
        )
    return [d.obj for d in driven if d.obj is not None]


async def test_existing_vms_are_adopted_without_a_mutating_call(
    vm_env: VMEnv, wires: dict[str, Wire], pre_existing: list[PreExisting]
) -> None:
    made = {}
    for provider_type in PROVIDER_TYPES:
        m = await make_pre_existing(vm_env, provider_type, PRE_EXISTING)
        pre_existing.append(m)
        made[provider_type] = m
    for provider_type, wire in wires.items():
        wire.restart_count()
        await adopting_provider(
            vm_env, wire, f"{provider_type}-adopt", f"^{made[provider_type].prefix}"
        )

    for provider_type, wire in wires.items():
        name = f"{provider_type}-adopt"
        m = made[provider_type]
        counted = ADOPTIONS.labels(f"{vm_env.namespace}/{name}", "adopted")
        obj = await adopt(vm_env, name, PRE_EXISTING)
        assert counted._value.get() == PRE_EXISTING
        adoption = obj["status"]["adoption"]
        assert adoption["discoveredVMs"] == PRE_EXISTING, adoption
        assert adoption["failedAdoptions"] == 0, adoption
        vms = await adopted_vms(vm_env, name)
        assert {v["metadata"]["annotations"][ADOPTED_VM_ID] for v in vms} == set(m.ids)
        ready = await drive_all_ready(vm_env, [v["metadata"]["name"] for v in vms])
        assert len(ready) == PRE_EXISTING
        for vm in ready:
            vm_id = vm["metadata"]["annotations"][ADOPTED_VM_ID]
            status = vm["status"]
            assert status["id"] == vm_id
            assert vm["metadata"]["name"] == m.ids[vm_id]  # the hypervisor name fits
            want = "On" if vm_id in m.on else "Off"
            assert status["powerState"] == want and vm["spec"]["powerState"] == want
            assert status["currentResources"]["cpu"] >= 1
            assert status["phase"] == ("Running" if want == "On" else "Stopped")

        # The periodic sweep finds them in its one batched listing: no VM is due a pass.
        keys = [f"VirtualMachine/{vm_env.namespace}/{v['metadata']['name']}" for v in ready]
        assert await vm_env.reconciler.sweep(keys) == set()

        # A later listing (a fresh shard) adopts nothing twice.
        again = await adopt(vm_env, name, PRE_EXISTING)
        assert again["status"]["adoption"]["discoveredVMs"] == PRE_EXISTING
        assert len(await adopted_vms(vm_env, name)) == PRE_EXISTING

        # Deleting an adopted VirtualMachine leaves its hypervisor VM alone (no opt-in).
        gone = ready[0]
        await vm_env.kube.delete(VIRTUAL_MACHINES, gone["metadata"]["name"], vm_env.namespace)
        await vm_env.drive(gone["metadata"]["name"], lambda o: o is None, timeout=30)
        hv = await vm_env.hypervisor(provider_type)
        still = await hv.describe(gone["status"]["id"], snapshots=False)
        assert still.owner is None

        seen = wire.requests()
        mutations = wire.mutations()
        print(
            f"{provider_type}: {len(seen)} requests at the simulator while adopting "
            f"{PRE_EXISTING} VMs, {len(mutations)} mutating: {sorted(set(seen))}"
        )
        assert seen, f"{provider_type}: the proxy saw no request at all"
        assert mutations == [], f"{provider_type}: mutating requests {mutations}"


class PoweringAdopter(Adopter):
    """Broken on purpose: powers each VM it adopts (a hypervisor mutation)."""

    async def create_vm(self, info: VMInfo) -> str | None:
        name = await super().create_vm(info)
        op = PowerOp.OFF if info.power_state == PowerState.ON else PowerOp.ON
        owner = Owner(self.namespace, name or "", "x", adopted_id=info.id)
        await wait_task(self._provider, await self._provider.power(info.id, owner, op))
        return name

    async def run(self, provider: Any) -> Any:
        self._provider = provider
        return await super().run(provider)


async def test_the_count_sees_a_mutating_adoption(
    vm_env: VMEnv,
    wires: dict[str, Wire],
    pre_existing: list[PreExisting],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provider_reconciler, "Adopter", PoweringAdopter)
    count = 2
    for provider_type, wire in wires.items():
        m = await make_pre_existing(vm_env, provider_type, count)
        pre_existing.append(m)
        wire.restart_count()
        name = f"{provider_type}-broken"
        await adopting_provider(vm_env, wire, name, f"^{m.prefix}")
        await adopt(vm_env, name, count)
        mutations = wire.mutations()
        print(
            f"{provider_type}: the broken adopter made {len(mutations)} mutating requests: "
            f"{mutations}"
        )
        assert len(mutations) >= count, (provider_type, wire.requests())


async def test_an_adopted_vm_that_vanishes_is_not_recreated(
    vm_env: VMEnv, wires: dict[str, Wire], pre_existing: list[PreExisting]
) -> None:
    provider_type = "libvirt"
    m = await make_pre_existing(vm_env, provider_type, 1)
    pre_existing.append(m)
    name = f"{provider_type}-adopt"
    await adopting_provider(vm_env, wires[provider_type], name, f"^{m.prefix}")
    await adopt(vm_env, name, 1)
    (vm,) = await adopted_vms(vm_env, name)
    vm_name = vm["metadata"]["name"]
    await drive_all_ready(vm_env, [vm_name])
    await remove_pre_existing(vm_env, m)
    m.ids.clear()
    wires[provider_type].restart_count()
    driven = await vm_env.drive(
        vm_name,
        lambda o: (
            o is not None
            and any(
                c["type"] == "Ready" and c["reason"] == "AdoptedVMNotFound"
                for c in (o.get("status") or {}).get("conditions", [])
            )
        ),
        timeout=30,
    )
    assert driven.obj is not None
    assert not driven.obj["status"].get("id")
    hv = await vm_env.hypervisor(provider_type)
    assert not [i for i in await hv.list_unowned() if i.name.startswith(m.prefix)]
    assert wires[provider_type].mutations() == []
    with pytest.raises(NotFoundError):
        await hv.describe(vm["metadata"]["annotations"][ADOPTED_VM_ID])


async def test_adoption_needs_the_providers_consent(
    vm_env: VMEnv, pre_existing: list[PreExisting]
) -> None:
    """A VirtualMachine naming an untagged VM of a Provider that does not allow adoption
    waits with AdoptionNotAllowed and touches nothing; a bad filter is reported on the
    Provider and adopts nothing."""
    m = await make_pre_existing(vm_env, "libvirt", 1)
    pre_existing.append(m)
    (vm_id,) = m.ids
    await vm_env.kube.create(
        VIRTUAL_MACHINES,
        {
            "apiVersion": API,
            "kind": "VirtualMachine",
            "metadata": {
                "name": "grab",
                "namespace": vm_env.namespace,
                "annotations": {ADOPTED_VM_ID: vm_id},
            },
            "spec": {
                "providerRef": {"name": "libvirt"},
                "classRef": {"name": "small"},
                "importedDisk": {"diskID": vm_id, "source": "manual"},
                "powerState": "Off",
            },
        },
    )
    driven = await vm_env.drive(
        "grab",
        lambda o: (
            o is not None
            and any(
                c["type"] == "Ready" and c["reason"] == "AdoptionNotAllowed"
                for c in (o.get("status") or {}).get("conditions", [])
            )
        ),
        timeout=20,
    )
    assert driven.obj is not None and not driven.obj["status"].get("id")
    message = next(c["message"] for c in driven.obj["status"]["conditions"] if c["type"] == "Ready")
    assert ADOPT_VMS in message and vm_id in message

    annotations = {ADOPT_VMS: "true", ADOPT_FILTER: '{"namePatern": "^x"}'}
    await vm_env.kube.patch(
        PROVIDERS, "libvirt", vm_env.namespace, {"metadata": {"annotations": annotations}}
    )
    obj = await provider_pass(vm_env, ProviderReconciler(vm_env.ctx), "libvirt")
    adoption = obj["status"]["adoption"]
    assert "unknown keys (namePatern)" in adoption["message"], adoption
    assert await adopted_vms(vm_env, "libvirt") == []


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_an_adopted_vm_is_deleted_on_the_hypervisor_only_when_the_user_opts_in(
    vm_env: VMEnv, wires: dict[str, Wire], pre_existing: list[PreExisting], provider_type: str
) -> None:
    m = await make_pre_existing(vm_env, provider_type, 1)
    pre_existing.append(m)
    name = f"{provider_type}-adopt"
    await adopting_provider(vm_env, wires[provider_type], name, f"^{m.prefix}")
    await adopt(vm_env, name, 1)
    (vm,) = await adopted_vms(vm_env, name)
    vm_name = vm["metadata"]["name"]
    await drive_all_ready(vm_env, [vm_name])
    await vm_env.kube.patch(
        VIRTUAL_MACHINES,
        vm_name,
        vm_env.namespace,
        {"metadata": {"annotations": {ORPHAN_ON_DELETE: "false"}}},
    )
    await vm_env.kube.delete(VIRTUAL_MACHINES, vm_name, vm_env.namespace)
    await vm_env.drive(vm_name, lambda o: o is None, timeout=30)
    hv = await vm_env.hypervisor(provider_type)
    with pytest.raises(NotFoundError):
        await hv.describe(next(iter(m.ids)))
    m.ids.clear()
