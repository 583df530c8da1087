"""A leading controller cut off from the API server while VMs are being created with slow
hypervisor tasks; a standby takes over.

Two real `virtrigaud run` processes, each with its own private Ray (the chart's default
deployment: the new leader cannot reach the old leader's shards), the leader behind a TCP
proxy the test cuts. Proxmox clones take 30 s (a fakepve of the test's own with slow Ceph).
Afterwards: no process exited, the audit shows no overlapping reconcile and nothing from a
shard after its keys moved, every VM is Ready, and the simulator holds exactly one guest
per VirtualMachine.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_vm import is_ready
from runtime_support import fresh_namespace
from slow_pve import NODE, TEMPLATE_ID, TOKEN_ID, SlowClonePve
from tcp_proxy import CuttableProxy

from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import (
    LEASES,
    PROVIDERS,
    SECRETS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_IMAGES,
)
from virtrigaud.shards import audit

API = "infra.virtrigaud.io/v1beta1"
VMS = 6
CLONE_SECONDS = 30.0
IMAGES = 3  # PVE clones one template at a time: spread the VMs over several
# Faster than the defaults (15 / 10 / 2 and a 4 s shard lease), same relationships.
TIMINGS = [
    "--lease-duration", "8", "--renew-deadline", "5", "--retry-period", "1",
    "--shard-lease", "3", "--heartbeat", "0.5",
]  # fmt: skip


class Controller:
    def __init__(self, ident: str, kubeconfig: str, namespace: str, redis_url: str, log: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update(
            VIRTRIGAUD_AUDIT_REDIS=redis_url,
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="disabled",
        )
        self.ident = ident
        self.log = log
        self._out = log.open("wb")
        command = [str(Path(sys.executable).parent / "virtrigaud"), "run", "--id", ident]
        command += ["--kubeconfig", kubeconfig, "--redis-url", redis_url, "--metrics-port", "0"]
        command += ["--namespace", namespace, "--watch-namespace", namespace, "--shards", "2"]
        self.proc = subprocess.Popen(
            [*command, *TIMINGS],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


@pytest.fixture
async def slow_pve() -> AsyncIterator[SlowClonePve]:
    pve = await asyncio.to_thread(SlowClonePve, CLONE_SECONDS)
    try:
        yield pve
    finally:
        await asyncio.to_thread(pve.stop)


async def _objects(kube: KubeClient, ns: str, pve: SlowClonePve) -> None:
    secret = base64.b64encode(pve.token_secret.encode()).decode()
    token_id = base64.b64encode(TOKEN_ID.encode()).decode()
    await kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pve", "namespace": ns},
            "data": {"token_id": token_id, "token_secret": secret},
        },
    )
    for res, kind, name, spec in (
        (
            PROVIDERS,
            "Provider",
            "pve",
            {
                "type": "proxmox",
                "endpoint": pve.url,
                "insecureSkipVerify": True,
                "credentialSecretRef": {"name": "pve"},
                "defaults": {"node": NODE},
                "rateLimit": {"qps": 200, "burst": 200},
            },
        ),
        (VM_CLASSES, "VMClass", "small", {"cpu": 1, "memory": "512Mi"}),
        *(
            (
                VM_IMAGES,
                "VMImage",
                f"slow-{i}",
                {"source": {"proxmox": {"templateID": TEMPLATE_ID + i, "node": NODE}}},
            )
            for i in range(IMAGES)
        ),
    ):
        await kube.create(
            res,
            {
                "apiVersion": API,
                "kind": kind,
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            },
        )


async def _holder(kube: KubeClient, ns: str) -> str:
    try:
        lease = await kube.get(LEASES, "virtrigaud-leader", ns)
    except Exception:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def _until(predicate: Any, timeout: float, what: str, procs: list[Controller]) -> float:
    start = time.monotonic()
    while not await predicate():
        for c in procs:
            assert c.alive(), f"controller {c.ident} exited:\n{c.log.read_text()[-3000:]}"
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)
    return time.monotonic() - start


@pytest.mark.timeout(600)
async def test_standby_takes_over_from_a_partitioned_leader_without_double_acting(
    kube: KubeClient,
    kubeconfig: str,
    kube_info: Any,
    redis_url: str,
    slow_pve: SlowClonePve,
    tmp_path: Path,
) -> None:
    audit.reset(redis_url)
    text = await asyncio.to_thread(Path(kubeconfig).read_text)
    server = re.search(r"https://127\.0\.0\.1:(\d+)", text)
    assert server is not None
    proxy = CuttableProxy("127.0.0.1", int(server.group(1)))
    await proxy.start()
    behind_proxy = tmp_path / "kubeconfig-proxied"
    behind_proxy.write_text(text.replace(server.group(0), f"https://127.0.0.1:{proxy.port}"))
    controllers: list[Controller] = []
    async with fresh_namespace(kube) as ns:
        try:
            await _objects(kube, ns, slow_pve)
            a = Controller("leader-a", str(behind_proxy), ns, redis_url, tmp_path / "a.log")
            controllers.append(a)

            async def a_leads() -> bool:
                return await _holder(kube, ns) == "leader-a"

            await _until(a_leads, 120, "controller a to lead", controllers)
            b = Controller("standby-b", kubeconfig, ns, redis_url, tmp_path / "b.log")
            controllers.append(b)
            names = [f"vm-{i:02d}" for i in range(VMS)]
            for name in names:
                await kube.create(
                    VIRTUAL_MACHINES,
                    {
                        "apiVersion": API,
                        "kind": "VirtualMachine",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {
                            "providerRef": {"name": "pve"},
                            "classRef": {"name": "small"},
                            "imageRef": {"name": f"slow-{names.index(name) % IMAGES}"},
                            "powerState": "On",
                        },
                    },
                )

            async def cloning() -> bool:
                return sum(slow_pve.guests_named().values()) >= VMS // 2

            await _until(cloning, 120, "clones to be under way", controllers)
            cut_at = time.monotonic()
            proxy.sever()

            async def b_leads() -> bool:
                return await _holder(kube, ns) == "standby-b"

            took_over = await _until(b_leads, 60, "the standby to take over", controllers)

            async def all_ready() -> bool:
                items, _ = await kube.list_all(VIRTUAL_MACHINES, ns)
                return len(items) == VMS and all(is_ready(o) for o in items)

            await _until(all_ready, 240, "every VM to be Ready", controllers)
            converged = time.monotonic() - cut_at
            # The partition ends: the old leader comes back as a standby, nothing exits.
            proxy.heal()
            await asyncio.sleep(5)
            assert await _holder(kube, ns) == "standby-b"
            for c in controllers:
                assert c.alive(), f"controller {c.ident} exited:\n{c.log.read_text()[-3000:]}"
            report = audit.check(redis_url)
            print(
                f"standby led {took_over:.1f}s after the cut; all {VMS} VMs Ready "
                f"{converged:.1f}s after it; audit: {report.reconciles} reconciles, "
                f"{report.mutations} mutations, per shard {report.per_shard}"
            )
            assert report.ok, "\n".join(report.problems())
            guests = slow_pve.guests_named()
            assert guests == {f"{ns}.{n}": 1 for n in names}, f"guests on the simulator: {guests}"
            for name in names:
                await kube.delete(VIRTUAL_MACHINES, name, ns)

            async def all_gone() -> bool:
                items, _ = await kube.list_all(VIRTUAL_MACHINES, ns)
                return not items

            await _until(all_gone, 120, "the VMs to be deleted", controllers)
            assert slow_pve.guests_named() == {}
        finally:
            proxy.heal()
            for c in controllers:
                c.stop()
            await proxy.stop()
