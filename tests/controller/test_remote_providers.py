"""Providers whose spec selects a remote provider server (``spec.runtime.mode: Remote``),
against the real simulators behind provider.v1 servers with mTLS on 127.0.0.1.

- a VM converges (and is deleted) through a remote Provider on each of the three
  simulators, every hypervisor call crossing the wire;
- a stopped server opens the circuit breaker: the Provider shows it (status.runtime and
  the CircuitClosed condition, the metric) and its VMs wait with a condition naming why;
  the server back, the circuit closes and the VMs converge;
- a server that is down, too slow or answering garbage gives the Provider and its VMs the
  same conditions as an unreachable hypervisor;
- a bad runtime spec names the field and the fix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, condition, is_ready, provider_spec
from remote_servers import TLS_SECRET, RemoteServers, remote_provider, remote_runtime

from virtrigaud.controllers.provider.reconciler import ProviderReconciler
from virtrigaud.kube.resources import PROVIDERS, SECRETS, VIRTUAL_MACHINES
from virtrigaud.leader.usage import USAGE_FIELD
from virtrigaud.netports import free_ports
from virtrigaud.providers.remote.client import RemoteProvider
from virtrigaud.providers.remote.metrics import CIRCUIT_STATE, REMOTE_RPCS
from virtrigaud.providers.remote.pb import provider_pb2 as pb
from virtrigaud.providers.remote.wire import SERVICE
from virtrigaud.shards.reconciler import ReconcileResult

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[RemoteServers]:
    made = RemoteServers(tmp_path)
    try:
        yield made
    finally:
        await made.close()


async def get_provider(env: VMEnv, name: str) -> JSON | None:
    return await env.get(PROVIDERS, name)


async def reconcile(rec: ProviderReconciler, env: VMEnv, name: str) -> ReconcileResult:
    obj = await get_provider(env, name)
    assert obj is not None
    usage = {"vms": 0, "providers": [], "names": []}
    return await rec.reconcile(f"Provider/{env.namespace}/{name}", {**obj, USAGE_FIELD: usage})


async def reconcile_until(
    rec: ProviderReconciler, env: VMEnv, name: str, ok: Callable[[JSON], bool], budget: float
) -> tuple[JSON, float]:
    """Reconcile the Provider as its shard would (honouring requeue_after) until ok."""
    began = time.monotonic()
    while True:
        result = await reconcile(rec, env, name)
        obj = await get_provider(env, name)
        assert obj is not None
        if ok(obj):
            return obj, time.monotonic() - began
        if time.monotonic() - began > budget:
            pytest.fail(f"Provider {name}: not within {budget} s; status {obj.get('status')}")
        await asyncio.sleep(min(result.requeue_after or 0.2, 0.5))


async def delete_provider(rec: ProviderReconciler, env: VMEnv, name: str) -> None:
    await env.kube.delete(PROVIDERS, name, env.namespace)
    await reconcile(rec, env, name)
    assert await get_provider(env, name) is None


def remote_calls(provider_key: str, method: str) -> float:
    total = 0.0
    for metric in REMOTE_RPCS.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels.get("provider") == provider_key
                and labels.get("method") == method
                and labels.get("code") == "OK"
            ):
                total += sample.value
    return total


def circuit_gauge(provider_key: str) -> float:
    for metric in CIRCUIT_STATE.collect():
        for sample in metric.samples:
            if sample.labels.get("provider") == provider_key:
                return float(sample.value)
    raise AssertionError(f"no circuit gauge for {provider_key}")


def ready_reason(obj: JSON | None) -> tuple[str, str] | None:
    cond = condition(obj, "Ready") if obj else None
    return (cond["status"], cond["reason"]) if cond else None


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_a_vm_converges_through_a_remote_provider(
    vm_env: VMEnv, servers: RemoteServers, provider_type: str
) -> None:
    ns = vm_env.namespace
    served = await servers.serve(vm_env, provider_type)
    await servers.tls_secret(vm_env)
    name = f"remote-{provider_type}"
    key = f"{ns}/{name}"
    await remote_provider(vm_env, name, provider_type, served.address)
    rec = ProviderReconciler(vm_env.ctx)
    await reconcile(rec, vm_env, name)
    obj = await get_provider(vm_env, name)
    assert obj is not None
    assert ready_reason(obj) == ("True", "Ready"), obj["status"]
    runtime = obj["status"]["runtime"]
    assert runtime["mode"] == "Remote" and runtime["endpoint"] == served.address
    assert runtime["phase"] == "Running" and runtime["circuit"] == "Closed"
    assert f"mTLS with the client certificate of Secret {TLS_SECRET}" in runtime["message"]
    closed = condition(obj, "CircuitClosed")
    assert closed is not None and (closed["status"], closed["reason"]) == ("True", "Closed")
    assert isinstance(vm_env.ctx.providers.peek(key), RemoteProvider)
    # A rotated TLS Secret brings the Provider back at once, like its credentials Secret.
    assert rec.dependents([f"Secret/{ns}/{TLS_SECRET}"]) == {f"Provider/{ns}/{name}"}
    # The VM's shard is usually not its Provider's: its session never ran a health check.
    await vm_env.ctx.providers.remove(key)

    creates = remote_calls(key, "Create")
    vm_name = f"through-{provider_type}"
    await vm_env.vm(vm_name, provider_type, provider_ref={"name": name})
    driven = await vm_env.drive(vm_name, is_ready)
    assert driven.obj is not None
    vm_id = driven.obj["status"]["id"]
    assert remote_calls(key, "Create") > creates, "the create did not cross the wire"
    # The VM is on the simulator, as the server's in-process provider sees it.
    info = await served.inner.describe(vm_id)
    assert info.power_state.value == "On"

    await vm_env.kube.delete(VIRTUAL_MACHINES, vm_name, ns)
    await vm_env.drive(vm_name, lambda o: o is None)
    assert remote_calls(key, "Delete") >= 1
    await delete_provider(rec, vm_env, name)


async def test_breaker_opens_while_the_server_is_down_and_closes_when_it_is_back(
    vm_env: VMEnv, servers: RemoteServers
) -> None:
    ns = vm_env.namespace
    served = await servers.serve(vm_env, "libvirt")
    await servers.tls_secret(vm_env)
    name = "breaker"
    key = f"{ns}/{name}"
    # healthCheck.interval: how often it is checked, and how long an open circuit waits.
    await remote_provider(vm_env, name, "libvirt", served.address, health_interval="2s")
    rec = ProviderReconciler(vm_env.ctx)
    await reconcile_until(rec, vm_env, name, lambda o: ready_reason(o) == ("True", "Ready"), 10)
    await vm_env.vm("before", "libvirt", provider_ref={"name": name})
    await vm_env.drive("before", is_ready)

    await served.stop()
    obj, took = await reconcile_until(
        rec,
        vm_env,
        name,
        lambda o: (
            ready_reason(o) == ("False", "Unreachable")
            and o["status"]["runtime"]["circuit"] == "Open"
        ),
        30,
    )
    print(f"server stopped -> circuit open and Provider unhealthy in {took:.1f} s")
    assert obj["status"]["healthy"] is False
    assert obj["status"]["runtime"]["phase"] == "Failed"
    opened = condition(obj, "CircuitClosed")
    assert opened is not None and (opened["status"], opened["reason"]) == ("False", "Open")
    assert served.address in opened["message"] and "fail at once" in opened["message"]
    assert circuit_gauge(key) == 2

    # A VM of the Provider waits, saying why, and calls nothing. (The leader touches the
    # Provider when its health changes: the shards drop their cached copy.)
    assert vm_env.reconciler.dependents([f"Provider/{key}"]) == {f"VirtualMachine/{ns}/before"}
    calls = remote_calls(key, "Create")
    await vm_env.vm("waits", "libvirt", provider_ref={"name": name})
    for _ in range(2):
        await vm_env.reconcile_once("waits")
    vm = await vm_env.get_vm("waits")
    ready = condition(vm, "Ready") if vm else None
    assert ready is not None and ready["reason"] == "ProviderUnhealthy", vm
    assert f"Provider {key}" in ready["message"] and "Unreachable" in ready["message"]
    assert remote_calls(key, "Create") == calls

    await served.start()  # the same address
    obj, took = await reconcile_until(
        rec,
        vm_env,
        name,
        lambda o: (
            ready_reason(o) == ("True", "Ready") and o["status"]["runtime"]["circuit"] == "Closed"
        ),
        20,
    )
    print(f"server back -> circuit closed and Provider Ready in {took:.1f} s")
    vm_env.reconciler.dependents([f"Provider/{key}"])
    assert circuit_gauge(key) == 0
    closed = condition(obj, "CircuitClosed")
    assert closed is not None and closed["status"] == "True"
    await vm_env.drive("waits", is_ready)
    for vm_name in ("before", "waits"):
        await vm_env.kube.delete(VIRTUAL_MACHINES, vm_name, ns)
        await vm_env.drive(vm_name, lambda o: o is None)
    await delete_provider(rec, vm_env, name)


Behaviour = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


async def _garbage(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"\xff\xff\xff\xff not protobuf"


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(30)
    return b""


async def plaintext_server(behaviour: Behaviour) -> tuple[grpc.aio.Server, str]:
    """A provider.v1 server that misbehaves on every method (plaintext: the Provider says
    tls.enabled: false on purpose)."""
    server = grpc.aio.server()
    names = [m.name for m in pb.DESCRIPTOR.services_by_name["Provider"].methods]
    handlers = {n: grpc.unary_unary_rpc_method_handler(behaviour) for n in names}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_down_slow_or_garbage_looks_like_an_unreachable_hypervisor(
    vm_env: VMEnv, servers: RemoteServers
) -> None:
    ns = vm_env.namespace
    await servers.tls_secret(vm_env)
    rec = ProviderReconciler(vm_env.ctx)
    # The reference: an in-process Provider whose hypervisor does not answer.
    spec, _ = provider_spec("vsphere", vm_env.stack)
    spec.update(
        credentialSecretRef={"name": "vsphere-credentials"},
        endpoint=f"https://127.0.0.1:{free_ports(1)[0]}/sdk",
    )
    await vm_env.apply(
        PROVIDERS,
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "Provider",
            "metadata": {"name": "hypervisor-down", "namespace": ns},
            "spec": spec,
        },
    )
    plaintext = {"enabled": False}
    garbage, garbage_at = await plaintext_server(_garbage)
    slow, slow_at = await plaintext_server(_slow)
    cases = {
        "hypervisor-down": None,
        "server-down": (f"127.0.0.1:{free_ports(1)[0]}", None),
        "server-slow": (slow_at, plaintext),
        "server-garbage": (garbage_at, plaintext),
    }
    try:
        for name, how in cases.items():
            if how is not None:
                address, tls = how
                runtime = remote_runtime(tls)
                await remote_provider(vm_env, name, "vsphere", address, runtime=runtime)
        seen: dict[str, tuple[object, ...]] = {}
        for name in cases:
            began = time.monotonic()
            await reconcile(rec, vm_env, name)
            took = time.monotonic() - began
            obj = await get_provider(vm_env, name)
            assert obj is not None
            healthy = condition(obj, "Healthy")
            assert healthy is not None
            await vm_env.vm(f"vm-{name}", "vsphere", provider_ref={"name": name})
            await vm_env.reconcile_once(f"vm-{name}")
            vm = await vm_env.get_vm(f"vm-{name}")
            vm_ready = condition(vm, "Ready") if vm else None
            assert vm_ready is not None
            seen[name] = (
                obj["status"]["healthy"],
                ready_reason(obj),
                (healthy["status"], healthy["reason"]),
                (vm_ready["status"], vm_ready["reason"]),
                "Unreachable" in vm_ready["message"],
            )
            print(f"{name}: {seen[name]} in {took:.1f} s; {healthy['message']}")
            assert took < 10, f"{name}: the health check took {took:.1f} s"
        assert seen["hypervisor-down"] == (
            False,
            ("False", "Unreachable"),
            ("False", "Unreachable"),
            ("False", "ProviderUnhealthy"),
            True,
        )
        for name in cases:
            assert seen[name] == seen["hypervisor-down"], name
        # What went wrong is in the Provider's words.
        slow_obj = await get_provider(vm_env, "server-slow")
        assert slow_obj is not None
        assert "did not answer the health check" in slow_obj["status"]["runtime"]["message"]
        assert "PLAINTEXT" not in slow_obj["status"]["runtime"]["message"]  # failed: the error
        garbage_obj = await get_provider(vm_env, "server-garbage")
        assert garbage_obj is not None
        assert "cannot read" in (condition(garbage_obj, "Healthy") or {}).get("message", "")
    finally:
        await garbage.stop(0)
        await slow.stop(0)
        for name in cases:
            if await vm_env.get_vm(f"vm-{name}") is not None:
                await vm_env.kube.delete(VIRTUAL_MACHINES, f"vm-{name}", ns)
                await vm_env.drive(f"vm-{name}", lambda o: o is None)
            if await get_provider(vm_env, name) is not None:
                await delete_provider(rec, vm_env, name)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ("no-tls", "spec.runtime.service.tls", "tls.secretRef"),
        ("no-secret", "spec.runtime.service.tls.secretRef", "does not exist"),
        ("secret-without-ca", "spec.runtime.service.tls.secretRef", "'ca.crt'"),
        ("skip-verify", "spec.runtime.service.tls.insecureSkipVerify", "always verified"),
        ("bad-endpoint", "provider.virtrigaud.io/endpoint", "host:port"),
    ],
)
async def test_a_bad_runtime_spec_names_the_field_and_the_fix(
    vm_env: VMEnv, servers: RemoteServers, change: str, field: str, words: str
) -> None:
    ns = vm_env.namespace
    await servers.tls_secret(vm_env)
    address = "127.0.0.1:9"
    runtime = remote_runtime()
    if change == "no-tls":
        del runtime["service"]["tls"]
    elif change == "no-secret":
        runtime["service"]["tls"] = {"secretRef": {"name": "not-there"}}
    elif change == "secret-without-ca":
        await vm_env.apply(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "half", "namespace": ns},
                "stringData": {"tls.crt": "x", "tls.key": "y"},
            },
        )
        runtime["service"]["tls"] = {"secretRef": {"name": "half"}}
    elif change == "skip-verify":
        runtime["service"]["tls"]["insecureSkipVerify"] = True
    else:
        address = "127.0.0.1"
    name = f"bad-{change}"
    await remote_provider(vm_env, name, "libvirt", address, runtime=runtime)
    rec = ProviderReconciler(vm_env.ctx)
    await reconcile(rec, vm_env, name)
    obj = await get_provider(vm_env, name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False", obj["status"]
    assert field in ready["message"] and words in ready["message"], ready
    expected = "WaitingForDependencies" if change == "no-secret" else "InvalidSpec"
    assert ready["reason"] == expected
    assert obj["status"]["runtime"]["phase"] in ("Failed", "Pending")
    await delete_provider(rec, vm_env, name)
