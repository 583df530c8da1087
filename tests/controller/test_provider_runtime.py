"""Provider health end to end: leader, one shard actor running the real controllers, the
API server and the three simulators. A wrong password or an unreachable endpoint shows
within 10 s of the Provider's creation; fixing the Secret (or the endpoint) makes it Ready
within 10 s, through the Secret's watch and the shards' `touch`; deleting a Provider its
VMs use is held until they are gone."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import pytest
from fixtures_vm import API, PROXMOX_NODE, condition, image_source, is_ready, provider_spec
from runtime_support import leading, make_coordinator
from sasl_libvirtd import SaslLibvirt

from virtrigaud.dev.info import LibvirtInfo, ProxmoxInfo, VcsimInfo
from virtrigaud.dev.stack import DevStack
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import (
    PROVIDERS,
    SECRETS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_IMAGES,
)
from virtrigaud.shards.actor import DEFAULT_RECONCILER

pytest_plugins = ["fixtures_vm", "sasl_libvirtd"]

JSON = dict[str, Any]
BUDGET = 10.0


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


async def _get(kube: KubeClient, res: Any, name: str, ns: str) -> JSON | None:
    try:
        return await kube.get(res, name, ns)
    except ApiError as e:
        if e.not_found:
            return None
        raise


async def wait_until(
    kube: KubeClient, res: Any, name: str, ns: str, ok: Callable[[JSON | None], bool], what: str
) -> float:
    began = time.monotonic()
    while True:
        obj = await _get(kube, res, name, ns)
        if ok(obj):
            return time.monotonic() - began
        if time.monotonic() - began > 60:
            pytest.fail(f"{what}: not within 60 s; last status {obj and obj.get('status')}")
        await asyncio.sleep(0.1)


def reason_is(type_: str, status: str, reason: str) -> Callable[[JSON | None], bool]:
    def ok(obj: JSON | None) -> bool:
        cond = condition(obj, type_) if obj else None
        return cond is not None and cond["status"] == status and cond["reason"] == reason

    return ok


async def secret(kube: KubeClient, ns: str, name: str, data: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": {k: _b64(v) for k, v in data.items()},
    }
    await kube.apply(SECRETS, body, field_manager="provider-tests")


async def provider(kube: KubeClient, ns: str, name: str, spec: JSON) -> None:
    body = {"apiVersion": API, "kind": "Provider", "metadata": {"name": name, "namespace": ns}}
    await kube.apply(PROVIDERS, {**body, "spec": spec}, field_manager="provider-tests")


@pytest.mark.timeout(240)
async def test_provider_health_and_deletion_under_the_runtime(
    kube: KubeClient,
    kubeconfig: str,
    redis_url: str,
    namespace: str,
    clean_shards: None,
    dev_stack: DevStack,
    vcsim_info: VcsimInfo,
    libvirt_info: LibvirtInfo,
    pve_info: ProxmoxInfo,
    sasl_libvirt: SaslLibvirt,
) -> None:
    ns = namespace
    good: dict[str, dict[str, str]] = {}
    for provider_type in ("vsphere", "proxmox", "libvirt"):
        spec, creds = provider_spec(provider_type, dev_stack)
        good[provider_type] = creds
        bad = dict(creds)
        if provider_type == "vsphere":
            bad["password"] = "wrong"
        elif provider_type == "proxmox":
            bad["token_secret"] = "00000000-0000-0000-0000-000000000000"
        else:  # the dev libvirtd takes no credentials: this one gets a dead endpoint
            spec["endpoint"] = "test+unix:///default?socket=/nonexistent/libvirt-sock"
        await secret(kube, ns, f"{provider_type}-credentials", bad)
        spec["credentialSecretRef"] = {"name": f"{provider_type}-credentials"}
        spec["rateLimit"] = {"qps": 500, "burst": 500}
        await provider(kube, ns, provider_type, spec)
    # libvirt with a login (a libvirtd of the test's own that asks for one), wrong password.
    login_spec, _ = provider_spec("libvirt", dev_stack)
    login = {"username": sasl_libvirt.username, "password": sasl_libvirt.password}
    await secret(kube, ns, "login-credentials", {**login, "password": "wrong"})
    login_spec.update(endpoint=sasl_libvirt.uri, credentialSecretRef={"name": "login-credentials"})
    await provider(kube, ns, "libvirt-login", login_spec)

    coordinator = make_coordinator(
        kube, kubeconfig, redis_url, ns, shards=1, reconciler=DEFAULT_RECONCILER
    )
    async with leading(coordinator):
        # The shard was just started: the first look is after it joined.
        for provider_type, reason in (
            ("vsphere", "AuthenticationFailed"),
            ("proxmox", "AuthenticationFailed"),
            ("libvirt", "Unreachable"),
            ("libvirt-login", "AuthenticationFailed"),
        ):
            took = await wait_until(
                kube, PROVIDERS, provider_type, ns, reason_is("Ready", "False", reason), reason
            )
            print(f"{provider_type}: Ready=False {reason} seen {took:.2f}s after the leader led")

        # A Provider created while everything runs: its wrong password shows within 10 s.
        spec, creds = provider_spec("vsphere", dev_stack)
        await secret(kube, ns, "late-credentials", {**creds, "password": "wrong"})
        await provider(
            kube, ns, "late", {**spec, "credentialSecretRef": {"name": "late-credentials"}}
        )
        took = await wait_until(
            kube, PROVIDERS, "late", ns, reason_is("Ready", "False", "AuthenticationFailed"), "late"
        )
        print(f"new Provider with a wrong password: Ready=False in {took:.2f}s")
        assert took < BUDGET

        # Fixes: the Secrets (vsphere, proxmox) and the endpoint (libvirt).
        began = time.monotonic()
        await secret(kube, ns, "vsphere-credentials", good["vsphere"])
        await secret(kube, ns, "proxmox-credentials", good["proxmox"])
        await secret(kube, ns, "login-credentials", login)
        libvirt_spec, _ = provider_spec("libvirt", dev_stack)
        await kube.patch(PROVIDERS, "libvirt", ns, {"spec": {"endpoint": libvirt_spec["endpoint"]}})
        for provider_type in ("vsphere", "proxmox", "libvirt", "libvirt-login"):
            await wait_until(
                kube, PROVIDERS, provider_type, ns, reason_is("Ready", "True", "Ready"), "fixed"
            )
            took = time.monotonic() - began
            print(f"{provider_type}: Ready=True {took:.2f}s after the fix")
            assert took < BUDGET

        # Deletion is held while a VM uses the Provider.
        await kube.apply(
            VM_CLASSES,
            {
                "apiVersion": API,
                "kind": "VMClass",
                "metadata": {"name": "small", "namespace": ns},
                "spec": {"cpu": 1, "memory": "256Mi"},
            },
            field_manager="provider-tests",
        )
        await kube.apply(
            VM_IMAGES,
            {
                "apiVersion": API,
                "kind": "VMImage",
                "metadata": {"name": "img", "namespace": ns},
                "spec": {"source": image_source("proxmox", "")},
            },
            field_manager="provider-tests",
        )
        assert PROXMOX_NODE
        await kube.create(
            VIRTUAL_MACHINES,
            {
                "apiVersion": API,
                "kind": "VirtualMachine",
                "metadata": {"name": "user", "namespace": ns},
                "spec": {
                    "providerRef": {"name": "proxmox"},
                    "classRef": {"name": "small"},
                    "imageRef": {"name": "img"},
                    "powerState": "Off",
                },
            },
        )
        await wait_until(
            kube, VIRTUAL_MACHINES, "user", ns, lambda o: bool(o and is_ready(o)), "vm"
        )
        await wait_until(
            kube,
            PROVIDERS,
            "proxmox",
            ns,
            lambda o: bool(o and o["status"].get("connectedVMs") == 1),
            "connectedVMs",
        )
        # The image and the class the VM uses report it, through the leader's usage.
        await wait_until(
            kube,
            VM_IMAGES,
            "img",
            ns,
            lambda o: bool(o and (o.get("status") or {}).get("availableOn") == [f"{ns}/proxmox"]),
            "image ready on the VM's Provider",
        )
        await wait_until(
            kube,
            VM_CLASSES,
            "small",
            ns,
            lambda o: bool(o and (o.get("status") or {}).get("usedByVMs") == 1),
            "class usedByVMs",
        )
        await kube.delete(PROVIDERS, "proxmox", ns)
        await wait_until(
            kube, PROVIDERS, "proxmox", ns, reason_is("Deleting", "True", "InUse"), "blocked"
        )
        held = await _get(kube, PROVIDERS, "proxmox", ns)
        assert held is not None and f"{ns}/user" in (condition(held, "Deleting") or {})["message"]
        await kube.delete(VIRTUAL_MACHINES, "user", ns)
        took = await wait_until(kube, PROVIDERS, "proxmox", ns, lambda o: o is None, "deleted")
        print(f"Provider deleted {took:.2f}s after its last VM's deletion was asked")
        for name in ("vsphere", "libvirt", "libvirt-login", "late"):
            await kube.delete(PROVIDERS, name, ns)
            await wait_until(kube, PROVIDERS, name, ns, lambda o: o is None, f"{name} deleted")
