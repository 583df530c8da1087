"""vSphere factory for the provider contract suite: vcsim from the dev stack, or a private one."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from virtrigaud.dev import gobuild
from virtrigaud.dev.process import free_port
from virtrigaud.providers.base import ImageSpec, Owner, Provider
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.registry import ProviderConfig, build_provider
from virtrigaud.providers.vsphere import VSphereProvider
from virtrigaud.providers.vsphere.inventory import OWNER_KEY

TEMPLATE = "virtrigaud-contract-template"
DATASTORE = "LocalDS_0"
USERNAME = "administrator@vsphere.local"
GENEROUS = RateLimit(qps=5000, burst=5000)


def image_for_tests() -> ImageSpec:
    return ImageSpec(template=TEMPLATE)


def missing_image() -> ImageSpec:
    return ImageSpec(template="no-such-template-7f3a")


def network_for_tests() -> str:
    return "DC0_DVPG0"


def placement_for_tests() -> dict[str, str]:
    return {"cluster": "DC0_C0", "datastore": DATASTORE}


def _config(endpoint: str, username: str, password: str, key: str = "ct/vsphere") -> ProviderConfig:
    return ProviderConfig(
        type="vsphere",
        key=key,
        endpoint=endpoint,
        credentials={"username": username, "password": password},
        rate=GENEROUS,
        insecure_skip_verify=True,
    )


def _connect(host: str, port: int, username: str, password: str) -> Any:
    return SmartConnect(
        host=host, port=port, user=username, pwd=password, disableSslCertValidation=True
    )


def _scratch_config(name: str, extra: dict[str, str]) -> Any:
    """A small VM config with one 1 GiB disk and one NIC, made through the SDK directly."""
    scsi = vim.vm.device.VirtualDeviceSpec(
        operation="add",
        device=vim.vm.device.ParaVirtualSCSIController(
            key=-100, busNumber=0, sharedBus="noSharing"
        ),
    )
    disk = vim.vm.device.VirtualDeviceSpec(
        operation="add",
        fileOperation="create",
        device=vim.vm.device.VirtualDisk(
            key=-101,
            controllerKey=-100,
            unitNumber=0,
            capacityInKB=1024 * 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=True
            ),
        ),
    )
    nic = vim.vm.device.VirtualDeviceSpec(
        operation="add",
        device=vim.vm.device.VirtualVmxnet3(
            key=-102,
            backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"),
        ),
    )
    return vim.vm.ConfigSpec(
        name=name,
        numCPUs=1,
        memoryMB=256,
        guestId="otherGuest64",
        files=vim.vm.FileInfo(vmPathName=f"[{DATASTORE}]"),
        extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in extra.items()],
        deviceChange=[scsi, disk, nic],
    )


def _wait_raw(task: Any) -> Any:
    """Poll a task to its end. (pyVim's WaitForTask creates property filters, and vcsim
    0.24.2 crashes when threads of one session destroy filters at once.)"""
    delay = 0.01
    while True:
        state = task.info.state
        if state == "success":
            return task.info.result
        if state == "error":
            raise task.info.error
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _placement(content: Any) -> tuple[Any, Any]:
    dc = content.rootFolder.childEntity[0]
    cluster = next(
        c for c in dc.hostFolder.childEntity if isinstance(c, vim.ClusterComputeResource)
    )
    return dc.vmFolder, cluster.resourcePool


def _find_vm(content: Any, name: str) -> Any:
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next((vm for vm in view.view if vm.name == name), None)
    finally:
        view.DestroyView()


def _ensure_template(si: Any) -> None:
    content = si.RetrieveContent()
    if _find_vm(content, TEMPLATE) is not None:
        return
    folder, pool = _placement(content)
    task = folder.CreateVM_Task(config=_scratch_config(TEMPLATE, {}), pool=pool)
    _wait_raw(task)
    task.info.result.MarkAsTemplate()


_templates_ready: set[str] = set()


def _prepare_simulator(host: str, port: int, username: str, password: str) -> None:
    key = f"{host}:{port}"
    if key in _templates_ready:
        return
    si = _connect(host, port, username, password)
    try:
        _ensure_template(si)
    finally:
        Disconnect(si)
    _templates_ready.add(key)


async def make_provider(request: pytest.FixtureRequest) -> Provider:
    info = request.getfixturevalue("vcsim_info")
    limiter = request.getfixturevalue("provider_limiter")
    await asyncio.to_thread(_prepare_simulator, info.host, info.port, info.username, info.password)
    return build_provider(_config(info.url, info.username, info.password), limiter)


async def _raw(provider: Provider) -> Any:
    """The provider's own logged-in connection, for SDK calls that bypass the provider."""
    assert isinstance(provider, VSphereProvider)
    conn, _ = await provider.session.connection()
    return conn


async def make_foreign_vm(provider: Provider, name: str) -> str:
    conn = await _raw(provider)

    def create() -> str:
        folder, pool = _placement(conn.content)
        task = folder.CreateVM_Task(config=_scratch_config(name, {}), pool=pool)
        _wait_raw(task)
        return str(task.info.result._moId)

    return await asyncio.to_thread(create)


def _destroy(conn: Any, vm_id: str) -> None:
    vm = vim.VirtualMachine(vm_id, conn.stub)
    try:
        if vm.runtime.powerState != "poweredOff":
            _wait_raw(vm.PowerOffVM_Task())
        _wait_raw(vm.Destroy_Task())
    except vim.ManagedObjectNotFound:
        pass


async def delete_vms(provider: Provider, ids: list[str]) -> None:
    conn = await _raw(provider)

    def destroy_all() -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: _destroy(conn, i), ids))

    await asyncio.to_thread(destroy_all)


async def make_owned_vms(provider: Provider, owners: list[Owner]) -> list[str]:
    conn = await _raw(provider)

    def create(owner: Owner) -> str:
        folder, pool = _placement(conn.content)
        config = _scratch_config(owner.hypervisor_name(), {OWNER_KEY: owner.tag()})
        task = folder.CreateVM_Task(config=config, pool=pool)
        _wait_raw(task)
        return str(task.info.result._moId)

    def create_all() -> list[str]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(create, owners))

    return await asyncio.to_thread(create_all)


async def expire_session(provider: Provider) -> None:
    """Log the provider's session out behind its back (as an idle timeout would)."""
    conn = await _raw(provider)
    await asyncio.to_thread(conn.content.sessionManager.Logout)


async def unreachable_provider(request: pytest.FixtureRequest) -> Provider:
    limiter = request.getfixturevalue("provider_limiter")
    endpoint = f"https://127.0.0.1:{free_port()}/sdk"
    return build_provider(_config(endpoint, USERNAME, "unused-password"), limiter)


async def bad_credentials_provider(request: pytest.FixtureRequest) -> tuple[Provider, str]:
    info = request.getfixturevalue("vcsim_info")
    limiter = request.getfixturevalue("provider_limiter")
    wrong = "wrong-" + secrets.token_hex(8)
    return build_provider(_config(info.url, info.username, wrong), limiter), wrong


@dataclass
class PrivateVcsim:
    """A vcsim process of this test's own, restartable on the same port."""

    provider: Provider
    port: int
    password: str
    latency_ms: int
    process: subprocess.Popen[str]

    @staticmethod
    def spawn(port: int, password: str, latency_ms: int) -> subprocess.Popen[str]:
        binary = gobuild.build_vcsim()
        proc = subprocess.Popen(
            [
                str(binary),
                f"-l=127.0.0.1:{port}",
                f"-username={USERNAME}",
                f"-password={password}",
                f"-delay={latency_ms}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("VCSIM_URL="):
            proc.kill()
            raise RuntimeError(f"private vcsim did not start: {line!r}")
        _prepare_simulator("127.0.0.1", port, USERNAME, password)
        return proc

    def _kill(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _templates_ready.discard(f"127.0.0.1:{self.port}")

    async def restart(self) -> None:
        await asyncio.to_thread(self._kill)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.process = await asyncio.to_thread(
                    self.spawn, self.port, self.password, self.latency_ms
                )
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        try:
            await self.provider.close()
        finally:
            await asyncio.to_thread(self._kill)


async def start_private(request: pytest.FixtureRequest, *, latency_ms: int = 0) -> PrivateVcsim:
    limiter = request.getfixturevalue("provider_limiter")
    port = free_port()
    password = secrets.token_urlsafe(12)
    proc = await asyncio.to_thread(PrivateVcsim.spawn, port, password, latency_ms)
    config = _config(f"https://127.0.0.1:{port}/sdk", USERNAME, password, key=f"ct/vcsim-{port}")
    return PrivateVcsim(build_provider(config, limiter), port, password, latency_ms, proc)
