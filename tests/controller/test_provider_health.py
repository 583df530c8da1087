"""The Provider controller against the real simulators: health with reasons, recovery when
the Secret is fixed, capabilities and version, connected VMs, deletion blocked while VMs
use the Provider, and VMs waiting on an unhealthy Provider without calling it."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from fixtures_vm import API, VMEnv, condition, hypervisor_calls, is_ready, provider_spec
from sasl_libvirtd import SaslLibvirt

from virtrigaud.api.provider import FINALIZER
from virtrigaud.controllers.provider.reconciler import ProviderReconciler
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import PROVIDERS, SECRETS, VIRTUAL_MACHINES
from virtrigaud.leader.usage import USAGE_FIELD
from virtrigaud.shards.reconciler import ReconcileResult

pytest_plugins = ["fixtures_vm", "sasl_libvirtd"]

JSON = dict[str, Any]
HEALTH_BUDGET = 10.0  # seconds: a wrong password or its fix shows within this


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def bad_credentials(provider_type: str, good: dict[str, str]) -> dict[str, str]:
    if provider_type == "vsphere":
        return {**good, "password": "not-the-password"}
    return {**good, "token_secret": "00000000-0000-0000-0000-000000000000"}


async def make_provider(
    env: VMEnv,
    name: str,
    provider_type: str,
    *,
    credentials: dict[str, str] | None = None,
    endpoint: str | None = None,
) -> str:
    spec, good = provider_spec(provider_type, env.stack)
    await env.apply(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-credentials", "namespace": env.namespace},
            "data": {k: _b64(v) for k, v in (credentials or good).items()},
        },
    )
    spec["credentialSecretRef"] = {"name": f"{name}-credentials"}
    if endpoint is not None:
        spec["endpoint"] = endpoint
    await env.apply(
        PROVIDERS,
        {
            "apiVersion": API,
            "kind": "Provider",
            "metadata": {"name": name, "namespace": env.namespace},
            "spec": spec,
        },
    )
    return f"Provider/{env.namespace}/{name}"


async def get_provider(env: VMEnv, name: str) -> JSON | None:
    try:
        return await env.kube.get(PROVIDERS, name, env.namespace)
    except ApiError as e:
        if e.not_found:
            return None
        raise


def with_usage(obj: JSON, names: list[str]) -> JSON:
    """The object as the leader delivers it: with who uses it."""
    return {**obj, USAGE_FIELD: {"vms": len(names), "providers": [], "names": names}}


async def reconcile(
    rec: ProviderReconciler, env: VMEnv, name: str, names: list[str] | None = None
) -> ReconcileResult:
    obj = await get_provider(env, name)
    assert obj is not None
    return await rec.reconcile(f"Provider/{env.namespace}/{name}", with_usage(obj, names or []))


@pytest.mark.parametrize("provider_type", ["vsphere", "libvirt", "proxmox"])
async def test_wrong_password_then_fixed(
    vm_env: VMEnv, provider_type: str, sasl_libvirt: SaslLibvirt
) -> None:
    rec = ProviderReconciler(vm_env.ctx)
    name = f"bad-{provider_type}"
    endpoint = None
    if provider_type == "libvirt":  # the dev stack's libvirtd asks for no login: this one does
        endpoint = sasl_libvirt.uri
        good = {"username": sasl_libvirt.username, "password": sasl_libvirt.password}
        bad = {**good, "password": "not-the-password"}
    else:
        _, good = provider_spec(provider_type, vm_env.stack)
        bad = bad_credentials(provider_type, good)
    await make_provider(vm_env, name, provider_type, credentials=bad, endpoint=endpoint)

    began = time.monotonic()
    result = await reconcile(rec, vm_env, name)
    took = time.monotonic() - began
    obj = await get_provider(vm_env, name)
    assert obj is not None
    assert FINALIZER in obj["metadata"]["finalizers"]
    ready, healthy = condition(obj, "Ready"), condition(obj, "Healthy")
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "AuthenticationFailed", ready
    assert healthy is not None and healthy["reason"] == "AuthenticationFailed"
    assert "credentials" in ready["message"].lower() or "password" in ready["message"]
    assert obj["status"]["healthy"] is False
    assert took < HEALTH_BUDGET
    assert result.requeue_after is not None
    # The wrong password is nowhere in what users see.
    assert "not-the-password" not in str(obj["status"])

    # The Secret is fixed: its touch requeues the Provider, which probes with a new session.
    await vm_env.apply(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-credentials", "namespace": vm_env.namespace},
            "data": {k: _b64(v) for k, v in good.items()},
        },
    )
    key = f"Provider/{vm_env.namespace}/{name}"
    began = time.monotonic()
    assert rec.dependents([f"Secret/{vm_env.namespace}/{name}-credentials"]) == {key}
    await reconcile(rec, vm_env, name, names=[f"{vm_env.namespace}/a", f"{vm_env.namespace}/b"])
    took = time.monotonic() - began
    obj = await get_provider(vm_env, name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "True", ready
    assert obj["status"]["healthy"] is True
    assert obj["status"]["version"]
    assert "Snapshots" in obj["status"]["capabilities"]
    assert obj["status"]["reportedCapabilities"]["supportsSnapshots"] is True
    assert obj["status"]["connectedVMs"] == 2
    assert took < HEALTH_BUDGET
    assert USAGE_FIELD not in obj
    await delete_provider(rec, vm_env, name)


UNREACHABLE = {
    "vsphere": "https://127.0.0.1:1/sdk",
    "proxmox": "https://127.0.0.1:1",
    "libvirt": "test+unix:///default?socket=/nonexistent/virtrigaud/libvirt-sock",
}


@pytest.mark.parametrize("provider_type", ["vsphere", "libvirt", "proxmox"])
async def test_unreachable_endpoint(vm_env: VMEnv, provider_type: str) -> None:
    rec = ProviderReconciler(vm_env.ctx)
    name = f"far-{provider_type}"
    await make_provider(vm_env, name, provider_type, endpoint=UNREACHABLE[provider_type])
    began = time.monotonic()
    result = await reconcile(rec, vm_env, name)
    took = time.monotonic() - began
    obj = await get_provider(vm_env, name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "Unreachable", ready
    assert obj["status"]["healthy"] is False
    assert took < HEALTH_BUDGET
    # Retried soon (the endpoint may come back), not at the 30 s interval.
    assert result.requeue_after is not None and result.requeue_after < 30
    await delete_provider(rec, vm_env, name)


async def test_healthy_providers_report_version_and_capabilities(vm_env: VMEnv) -> None:
    rec = ProviderReconciler(vm_env.ctx)
    for provider_type in ("vsphere", "libvirt", "proxmox"):
        result = await reconcile(rec, vm_env, provider_type)
        obj = await get_provider(vm_env, provider_type)
        assert obj is not None
        assert (condition(obj, "Ready") or {}).get("status") == "True", obj["status"]
        assert (condition(obj, "Healthy") or {}).get("reason") == "ProbeSucceeded"
        assert obj["status"]["version"], provider_type
        assert obj["status"]["lastHealthCheck"]
        assert result.requeue_after is not None and 25 < result.requeue_after <= 30
        # A delivery in between (usage changed, our own write echoed) makes no call.
        before = hypervisor_calls(f"{vm_env.namespace}/{provider_type}")
        await reconcile(rec, vm_env, provider_type, names=[f"{vm_env.namespace}/x"])
        assert hypervisor_calls(f"{vm_env.namespace}/{provider_type}") == before
        obj = await get_provider(vm_env, provider_type)
        assert obj is not None and obj["status"]["connectedVMs"] == 1
        await delete_provider(rec, vm_env, provider_type)


async def delete_provider(rec: ProviderReconciler, env: VMEnv, name: str) -> None:
    await env.kube.delete(PROVIDERS, name, env.namespace)
    await reconcile(rec, env, name)
    assert await get_provider(env, name) is None


async def test_delete_blocked_while_vms_use_it(vm_env: VMEnv) -> None:
    rec = ProviderReconciler(vm_env.ctx)
    ns = vm_env.namespace
    users = [f"{ns}/vm-{i}" for i in range(7)]
    await reconcile(rec, vm_env, "libvirt", names=users)
    await vm_env.kube.delete(PROVIDERS, "libvirt", ns)
    await reconcile(rec, vm_env, "libvirt", names=users)
    obj = await get_provider(vm_env, "libvirt")
    assert obj is not None, "deleted while VMs use it"
    deleting = condition(obj, "Deleting")
    assert deleting is not None and deleting["status"] == "True"
    assert deleting["reason"] == "InUse"
    assert "7 VirtualMachines" in deleting["message"]
    assert f"{ns}/vm-0" in deleting["message"] and "and 2 more" in deleting["message"]
    await vm_env.ctx.events.flush()
    assert "DeletionBlocked" in await vm_env.event_reasons("libvirt")

    # The VMs are gone: the next delivery says so and the Provider goes.
    await reconcile(rec, vm_env, "libvirt", names=[])
    assert await get_provider(vm_env, "libvirt") is None


async def test_vms_of_an_unhealthy_provider_wait(vm_env: VMEnv) -> None:
    rec = ProviderReconciler(vm_env.ctx)
    ns = vm_env.namespace
    _, good = provider_spec("vsphere", vm_env.stack)
    await make_provider(vm_env, "sick", "vsphere", credentials=bad_credentials("vsphere", good))
    await reconcile(rec, vm_env, "sick")
    await vm_env.vm("waits", "vsphere", provider_ref={"name": "sick"})
    before = hypervisor_calls(f"{ns}/sick")
    for _ in range(3):
        result = await vm_env.reconcile_once("waits")
        assert result.requeue_after is not None
    assert hypervisor_calls(f"{ns}/sick") == before, "a VM called an unhealthy Provider"
    vm = await vm_env.get_vm("waits")
    assert vm is not None
    ready = condition(vm, "Ready")
    assert ready is not None and ready["reason"] == "ProviderUnhealthy"
    assert f"Provider {ns}/sick" in ready["message"]
    assert "AuthenticationFailed" in ready["message"]

    # Fixed: the Provider turns healthy, and its change requeues the waiting VM at once.
    await vm_env.apply(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sick-credentials", "namespace": ns},
            "data": {k: _b64(v) for k, v in good.items()},
        },
    )
    rec.dependents([f"Secret/{ns}/sick-credentials"])
    await reconcile(rec, vm_env, "sick", names=[f"{ns}/waits"])
    assert vm_env.reconciler.dependents([f"Provider/{ns}/sick"]) == {f"VirtualMachine/{ns}/waits"}
    driven = await vm_env.drive("waits", is_ready)
    assert driven.obj is not None and driven.obj["status"]["id"]
    await vm_env.kube.delete(VIRTUAL_MACHINES, "waits", ns)
    await vm_env.drive("waits", lambda o: o is None)
    await delete_provider(rec, vm_env, "sick")


@pytest.mark.parametrize("provider_type", ["vsphere", "proxmox"])
async def test_untrusted_certificate_is_a_tls_error(vm_env: VMEnv, provider_type: str) -> None:
    """The simulators serve self-signed certificates: without insecureSkipVerify the
    Provider says TLSError and names the field that would accept it."""
    rec = ProviderReconciler(vm_env.ctx)
    name = f"strict-{provider_type}"
    await make_provider(vm_env, name, provider_type)
    await vm_env.kube.patch(
        PROVIDERS, name, vm_env.namespace, {"spec": {"insecureSkipVerify": False}}
    )
    await reconcile(rec, vm_env, name)
    obj = await get_provider(vm_env, name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "TLSError", ready
    assert "insecureSkipVerify" in ready["message"]
    await delete_provider(rec, vm_env, name)
