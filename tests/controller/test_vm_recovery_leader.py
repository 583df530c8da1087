"""End to end: the real leader and a real Ray shard running the VirtualMachine reconciler. A
VM failed for good by a wrong vCenter password (terminal: only the 5-minute sweep would
look again) is Ready within seconds of its Secret being fixed, because the leader
broadcasts the Secret's change and the shard requeues the VM that read it."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from fixtures_vm import condition, image_source, is_ready, provider_spec
from runtime_support import leading, make_coordinator

from virtrigaud.dev.info import VcsimInfo
from virtrigaud.dev.stack import DevStack
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import PROVIDERS, SECRETS, VIRTUAL_MACHINES, VM_CLASSES, VM_IMAGES
from virtrigaud.shards.actor import DEFAULT_RECONCILER

API = "infra.virtrigaud.io/v1beta1"
RECOVERY_BUDGET = 10.0


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@pytest.mark.timeout(180)
async def test_failed_vm_is_ready_within_seconds_of_its_secret_being_fixed(
    kube: KubeClient,
    kubeconfig: str,
    redis_url: str,
    namespace: str,
    clean_shards: None,
    dev_stack: DevStack,
    vcsim_info: VcsimInfo,
) -> None:
    spec, credentials = provider_spec("vsphere", dev_stack)
    ns = namespace
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "vc", "namespace": ns},
        "data": {**{k: _b64(v) for k, v in credentials.items()}, "password": _b64("wrong")},
    }
    await kube.create(SECRETS, secret)
    objects = [
        (PROVIDERS, "Provider", "vc", {**spec, "credentialSecretRef": {"name": "vc"}}),
        (VM_CLASSES, "VMClass", "small", {"cpu": 1, "memory": "512Mi"}),
        (VM_IMAGES, "VMImage", "tmpl", {"source": image_source("vsphere", "")}),
        (
            VIRTUAL_MACHINES,
            "VirtualMachine",
            "vm",
            {
                "providerRef": {"name": "vc"},
                "classRef": {"name": "small"},
                "imageRef": {"name": "tmpl"},
                "powerState": "Off",
            },
        ),
    ]
    for res, kind, name, obj_spec in objects:
        meta = {"name": name, "namespace": ns}
        await kube.create(
            res, {"apiVersion": API, "kind": kind, "metadata": meta, "spec": obj_spec}
        )

    coordinator = make_coordinator(
        kube, kubeconfig, redis_url, ns, shards=1, reconciler=DEFAULT_RECONCILER
    )
    async with leading(coordinator):
        deadline = time.monotonic() + 60
        while True:
            vm = await kube.get(VIRTUAL_MACHINES, "vm", ns)
            ready = condition(vm, "Ready")
            # Refused credentials: the VM fails (ProviderTerminal), or, once the Provider's
            # own health check has seen the refusal, waits for its Provider.
            if ready is not None and ready["reason"] in ("ProviderTerminal", "ProviderUnhealthy"):
                break
            assert time.monotonic() < deadline, vm.get("status")
            await asyncio.sleep(0.2)
        assert vm["status"]["phase"] in ("Failed", "Pending")

        await kube.patch(SECRETS, "vc", ns, {"data": {"password": _b64(credentials["password"])}})
        fixed = time.monotonic()
        while not is_ready(vm := await kube.get(VIRTUAL_MACHINES, "vm", ns)):
            assert time.monotonic() - fixed < RECOVERY_BUDGET, vm.get("status")
            await asyncio.sleep(0.1)
        print(f"Ready {time.monotonic() - fixed:.2f} s after the Secret was fixed")
        await kube.delete(VIRTUAL_MACHINES, "vm", ns)
        deadline = time.monotonic() + 30
        while (await kube.list_all(VIRTUAL_MACHINES, ns))[0]:
            assert time.monotonic() < deadline, "the VM was not deleted"
            await asyncio.sleep(0.2)
