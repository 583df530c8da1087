"""Fixtures for the VirtualMachine reconcile tests: real API server, real simulators.

Each test gets a fresh namespace (``vm_env.namespace``) holding one Provider per
simulator (named after its type), their credential Secrets (copied from the dev stack's
``default`` namespace), VMClasses ``small``/``medium`` and one VMImage per type. The
reconciler is driven directly, pass after pass, the way a shard's worker would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from proxmoxer import ProxmoxAPI
from pyVim.connect import Disconnect, SmartConnect

from virtrigaud.api.virtualmachine import VirtualMachineStatus
from virtrigaud.controllers.common.resolve import provider_config
from virtrigaud.controllers.virtualmachine.phases import violations
from virtrigaud.controllers.virtualmachine.reconciler import VMReconciler
from virtrigaud.dev.info import LibvirtInfo, ProxmoxInfo, VcsimInfo
from virtrigaud.dev.libvirtd import ensure_libvirt_base_volume
from virtrigaud.dev.stack import DevStack
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.events import EventRecorder
from virtrigaud.kube.resources import (
    EVENTS,
    NAMESPACES,
    PROVIDERS,
    SECRETS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_IMAGES,
    Resource,
)
from virtrigaud.providers.base import DONE, NotFoundError, Owner, Provider, TaskStatus, VMSpec
from virtrigaud.providers.metrics import HYPERVISOR_CALLS
from virtrigaud.providers.pool import ProviderPool
from virtrigaud.ratelimit.redis_bucket import RedisBucket
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

JSON = dict[str, Any]
PROVIDER_TYPES = ("vsphere", "libvirt", "proxmox")
API = "infra.virtrigaud.io/v1beta1"

LIBVIRT_POOL = "default-pool"
LIBVIRT_BASE_VOLUME = "vr-test-base.qcow2"
VSPHERE_TEMPLATE = "DC0_H0_VM0"
PROXMOX_TEMPLATE = 9000
PROXMOX_NODE = "pve1"


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def provider_spec(provider_type: str, stack: DevStack) -> tuple[JSON, JSON]:
    """(Provider spec, credential Secret data) for one of the dev stack's simulators."""
    info = stack.info()
    if provider_type == "vsphere":
        vc = info.vcsim
        assert isinstance(vc, VcsimInfo)
        spec = {"type": "vsphere", "endpoint": vc.url, "insecureSkipVerify": True}
        return spec, {"username": vc.username, "password": vc.password}
    if provider_type == "libvirt":
        lv = info.libvirt
        assert isinstance(lv, LibvirtInfo)
        spec = {
            "type": "libvirt",
            "endpoint": lv.uri,
            "defaults": {"storagePool": LIBVIRT_POOL},
        }
        return spec, {"uri": lv.uri}
    pve = info.proxmox
    assert isinstance(pve, ProxmoxInfo)
    spec = {
        "type": "proxmox",
        "endpoint": pve.url,
        "insecureSkipVerify": True,
        "defaults": {"node": PROXMOX_NODE},
    }
    return spec, {"token_id": pve.token_id, "token_secret": pve.token_secret}


def image_source(provider_type: str, libvirt_path: str) -> JSON:
    if provider_type == "vsphere":
        return {"vsphere": {"templateName": VSPHERE_TEMPLATE}}
    if provider_type == "libvirt":
        return {"libvirt": {"path": libvirt_path}}
    return {"proxmox": {"templateID": PROXMOX_TEMPLATE, "node": PROXMOX_NODE}}


def condition(obj: JSON, type_: str) -> JSON | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def assert_conditions_agree(obj: JSON | None) -> None:
    """The VM's phase and conditions agree with the table in docs/vm-conditions.md."""
    if obj is None:
        return
    status = VirtualMachineStatus.model_validate(obj.get("status") or {})
    assert violations(status) == [], (obj["metadata"]["name"], obj.get("status"))


def is_ready(obj: JSON) -> bool:
    cond = condition(obj, "Ready")
    return (
        cond is not None
        and cond.get("status") == "True"
        and obj.get("status", {}).get("observedGeneration") == obj["metadata"].get("generation")
    )


def hypervisor_calls_by_method(provider_key: str) -> dict[str, float]:
    """Hypervisor calls made so far through the call gate for one Provider, per SDK method."""
    calls: dict[str, float] = {}
    for metric in HYPERVISOR_CALLS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("provider") == provider_key:
                method = sample.labels.get("method", "?")
                calls[method] = calls.get(method, 0.0) + sample.value
    return calls


def hypervisor_calls(provider_key: str) -> float:
    """Hypervisor calls made so far through the call gate for one Provider (all methods)."""
    return sum(hypervisor_calls_by_method(provider_key).values())


@dataclass
class Driven:
    obj: JSON | None
    passes: int
    results: list[ReconcileResult] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


@dataclass
class VMEnv:
    kube: KubeClient
    stack: DevStack
    namespace: str
    ctx: ShardContext
    libvirt_image: str
    reconciler: VMReconciler
    hypervisors: dict[str, Provider] = field(default_factory=dict)

    # ------------------------------------------------------------------ objects

    async def namespace_named(self, name: str) -> str:
        try:
            await self.kube.create(NAMESPACES, {"metadata": {"name": name}})
        except ApiError as e:
            if e.status != 409:
                raise
        return name

    async def provider(
        self,
        provider_type: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
        allowed_namespaces: list[str] | None = None,
    ) -> JSON:
        ns = namespace or self.namespace
        spec, secret_data = provider_spec(provider_type, self.stack)
        secret_name = f"{provider_type}-credentials"
        await self.apply(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": ns},
                "data": {k: _b64(v) for k, v in secret_data.items()},
            },
        )
        spec["credentialSecretRef"] = {"name": secret_name}
        spec["rateLimit"] = {"qps": 500, "burst": 500}
        if allowed_namespaces is not None:
            spec["allowedNamespaces"] = allowed_namespaces
        return await self.apply(
            PROVIDERS,
            {
                "apiVersion": API,
                "kind": "Provider",
                "metadata": {"name": name or provider_type, "namespace": ns},
                "spec": spec,
            },
        )

    async def vm_class(self, name: str, cpu: int, memory: str) -> JSON:
        return await self.apply(
            VM_CLASSES,
            {
                "apiVersion": API,
                "kind": "VMClass",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"cpu": cpu, "memory": memory},
            },
        )

    async def vm_image(
        self, provider_type: str, name: str | None = None, source: JSON | None = None
    ) -> JSON:
        """A VMImage (source: spec.source, else the stack's image for provider_type)."""
        return await self.apply(
            VM_IMAGES,
            {
                "apiVersion": API,
                "kind": "VMImage",
                "metadata": {"name": name or f"{provider_type}-image", "namespace": self.namespace},
                "spec": {"source": source or image_source(provider_type, self.libvirt_image)},
            },
        )

    async def vm(
        self,
        name: str,
        provider_type: str,
        *,
        vm_class: str = "small",
        power_state: str = "On",
        provider_ref: JSON | None = None,
        extra_spec: JSON | None = None,
    ) -> JSON:
        spec: JSON = {
            "providerRef": provider_ref or {"name": provider_type},
            "classRef": {"name": vm_class},
            "imageRef": {"name": f"{provider_type}-image"},
            "powerState": power_state,
        }
        spec.update(extra_spec or {})
        return await self.kube.create(
            VIRTUAL_MACHINES,
            {
                "apiVersion": API,
                "kind": "VirtualMachine",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": spec,
            },
        )

    async def apply(self, res: Any, obj: JSON) -> JSON:
        return await self.kube.apply(res, obj, field_manager="vm-tests")

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> JSON | None:
        """The object, or None when the API server has none of that name."""
        try:
            return await self.kube.get(res, name, namespace or self.namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def get_vm(self, name: str) -> JSON | None:
        return await self.get(VIRTUAL_MACHINES, name)

    async def patch_vm_spec(self, name: str, spec: JSON) -> JSON:
        return await self.kube.patch(VIRTUAL_MACHINES, name, self.namespace, {"spec": spec})

    async def events_for(self, name: str) -> list[JSON]:
        await self.ctx.events.flush()
        listed = await self.kube.list(EVENTS, self.namespace)
        return [e for e in listed.get("items", []) if e["involvedObject"]["name"] == name]

    async def event_reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in await self.events_for(name)]

    # ------------------------------------------------------------------ hypervisors

    async def hypervisor(self, provider_type: str, namespace: str | None = None) -> Provider:
        """The pooled provider the reconciler uses for this Provider object."""
        ns = namespace or self.namespace
        provider = await self.kube.get(PROVIDERS, provider_type, ns)
        secret_name = provider["spec"]["credentialSecretRef"]["name"]
        secret = await self.kube.get(SECRETS, secret_name, ns)
        return await self.ctx.providers.get(provider_config(provider, secret))

    async def owned_by(self, provider_type: str, owner: Owner) -> list[str]:
        hv = await self.hypervisor(provider_type)
        return [info.id for info in await hv.list_owned() if info.owner == owner]

    # ------------------------------------------------------------------ driving

    def new_reconciler(self) -> VMReconciler:
        """A reconciler as a freshly started shard would have it (no per-key memory)."""
        self.reconciler = VMReconciler(self.ctx)
        return self.reconciler

    async def reconcile_once(self, name: str) -> ReconcileResult:
        """One pass on the current object (None: the reconciler reads it itself, so the
        pass is never mistaken for the watch echoing the reconciler's own write)."""
        return await self.reconciler.reconcile(f"VirtualMachine/{self.namespace}/{name}", None)

    async def drive(
        self,
        name: str,
        until: Callable[[JSON | None], bool],
        *,
        timeout: float = 60.0,
        max_passes: int = 200,
    ) -> Driven:
        """Reconcile like a worker would (honouring requeue_after, capped so tests stay
        quick) until ``until(object)`` holds; the object is None once it is gone."""
        key = f"VirtualMachine/{self.namespace}/{name}"
        driven = Driven(obj=None, passes=0)
        deadline = time.monotonic() + timeout
        while True:
            obj = await self.get_vm(name)
            driven.obj = obj
            assert_conditions_agree(obj)
            if until(obj):
                return driven
            if time.monotonic() > deadline or driven.passes >= max_passes:
                raise AssertionError(
                    f"{key} did not converge after {driven.passes} passes: "
                    f"status={obj.get('status') if obj else None} errors={driven.errors[-3:]}"
                )
            driven.passes += 1
            try:
                result = await self.reconciler.reconcile(key, obj)
                driven.results.append(result)
                delay = result.requeue_after if result.requeue_after is not None else 0.0
            except Exception as e:  # the runtime would retry rate-limited
                driven.errors.append(e)
                delay = 0.2
            await asyncio.sleep(min(delay, 0.5))


@pytest.fixture(scope="session")
async def vm_kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
async def vm_shard_ctx(
    vm_kube: KubeClient,
    redis_url: str,
    dev_stack: DevStack,
    vcsim_info: VcsimInfo,
    libvirt_info: LibvirtInfo,
    pve_info: ProxmoxInfo,
) -> AsyncIterator[ShardContext]:
    limiter = RedisBucket.from_url(redis_url, prefix=f"vm-tests-{uuid.uuid4().hex[:6]}")
    pool = ProviderPool(limiter)
    ctx = ShardContext(
        shard_name="shard-test",
        kube=vm_kube,
        limiter=limiter,
        providers=pool,
        events=EventRecorder(vm_kube, instance="shard-test"),
    )
    try:
        yield ctx
    finally:
        await ctx.events.aclose()
        await pool.close_all()
        await limiter.aclose()


@pytest.fixture(scope="session")
def libvirt_image(libvirt_uri: str) -> str:
    return ensure_libvirt_base_volume(libvirt_uri, LIBVIRT_BASE_VOLUME)


@pytest.fixture
async def vm_env(
    vm_kube: KubeClient, dev_stack: DevStack, vm_shard_ctx: ShardContext, libvirt_image: str
) -> AsyncIterator[VMEnv]:
    namespace = f"vmt-{uuid.uuid4().hex[:8]}"
    await vm_kube.create(NAMESPACES, {"metadata": {"name": namespace}})
    env = VMEnv(
        kube=vm_kube,
        stack=dev_stack,
        namespace=namespace,
        ctx=vm_shard_ctx,
        libvirt_image=libvirt_image,
        reconciler=VMReconciler(vm_shard_ctx),
    )
    for provider_type in PROVIDER_TYPES:
        await env.provider(provider_type)
        await env.vm_image(provider_type)
    await env.vm_class("small", 1, "512Mi")
    await env.vm_class("medium", 2, "1Gi")
    yield env
    await _cleanup(env)


async def _cleanup(env: VMEnv) -> None:
    """Delete what the test left: VMs through the reconciler, so no hypervisor VM leaks."""
    listed = await env.kube.list(VIRTUAL_MACHINES, env.namespace)
    for item in listed.get("items", []):
        name = item["metadata"]["name"]
        try:
            await env.kube.delete(VIRTUAL_MACHINES, name, env.namespace)
        except ApiError as e:
            if not e.not_found:
                raise
    for item in listed.get("items", []):
        name = item["metadata"]["name"]
        try:
            await env.drive(name, lambda o: o is None, timeout=30)
        except AssertionError:
            # A test that broke a Provider on purpose may leave this one behind.
            await env.kube.patch(
                VIRTUAL_MACHINES, name, env.namespace, {"metadata": {"finalizers": None}}
            )


@contextlib.contextmanager
def vcsim_si(env: VMEnv) -> Iterator[Any]:
    """A pyVmomi ServiceInstance of the dev stack's vcsim, to read (or set up) what a test
    checks there."""
    vc = env.stack.info().vcsim
    assert isinstance(vc, VcsimInfo)
    si = SmartConnect(
        host=vc.host, port=vc.port, user=vc.username, pwd=vc.password, disableSslCertValidation=True
    )
    try:
        yield si
    finally:
        Disconnect(si)


def pve_api(env: VMEnv) -> ProxmoxAPI:
    """A client of the dev stack's fakepve, to read (or set up) what a test checks there."""
    pve = env.stack.info().proxmox
    assert isinstance(pve, ProxmoxInfo)
    return ProxmoxAPI(
        pve.host,
        port=pve.port,
        user=pve.user,
        token_name=pve.token_name,
        token_value=pve.token_secret,
        verify_ssl=False,
    )


async def wait_task(provider: Provider, task: str, timeout: float = 30.0) -> TaskStatus:
    """Wait for a task started directly on the hypervisor (test set-up, not the reconciler)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await provider.task_status(task)
        if state.done:
            if state.error is not None:
                raise state.error
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task} not done within {timeout} s")
        await asyncio.sleep(0.05)


async def create_on(provider: Provider, spec: VMSpec, timeout: float = 30.0) -> str:
    """Create a VM directly on the hypervisor (test set-up): create, then its task and the
    finishing steps to the end, as the reconcile would over several passes; the VM's id."""
    vm_id, task = await provider.create(spec)
    for _ in range(8):
        state = await wait_task(provider, task, timeout)
        vm_id = vm_id or (state.result or "")
        task = await provider.finish_create(vm_id, spec)
        if task.startswith(DONE):
            return vm_id
    raise AssertionError(f"creating {spec.name}: finish_create still returns tasks")


async def delete_on(provider: Provider, vm_id: str, owner: Owner, timeout: float = 30.0) -> None:
    """Delete a VM directly on the hypervisor: each task delete returns (a power-off first
    for a running VM), until the VM is gone."""
    for _ in range(4):
        try:
            task = await provider.delete(vm_id, owner)
        except NotFoundError:
            return
        await wait_task(provider, task, timeout)
    raise AssertionError(f"{vm_id} still exists after 4 deletes")


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.1)
