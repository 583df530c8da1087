"""Proxmox VE factory for the provider contract suite and benchmark (fakepve).

The shared provider logs in with a password (a login ticket), so session expiry and
re-login are exercised; tests of the API-token path live in tests/providers/test_proxmox.py.
Private instances run fakepve in this process on its own event loop thread, which
gives tests the FakePve object for fault injection (flaky_network, hold_config_lock,
slow_network, revoke_tickets).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from fakepve import FakePve
from fakepve.certs import make_cert

from factories import wait_task
from virtrigaud.dev.pvetemplates import TEMPLATES
from virtrigaud.providers.base import ImageSpec, Owner, Provider
from virtrigaud.providers.calls import RateLimit, TokenLimiter
from virtrigaud.providers.proxmox import ProxmoxProvider, create_provider
from virtrigaud.providers.proxmox import vmconfig as vc
from virtrigaud.providers.registry import ProviderConfig

T = TypeVar("T")

NODE = "pve1"
STORAGE = "local-lvm"
TEMPLATE_VMID = 9000
GENEROUS = RateLimit(qps=5000, burst=5000)
PRIVATE_TOKEN_ID = "root@pam!virtrigaud"

# fakepve answers PUT /nodes/{node}/qemu/{vmid}/resize from the API schema alone (a task
# that succeeds and changes nothing), so a grown disk keeps its old size there.
SIMULATOR_GAPS = frozenset({"disk-resize-not-recorded"})


def image_for_tests() -> ImageSpec:
    return ImageSpec(template=str(TEMPLATE_VMID), node=NODE)


def missing_image() -> ImageSpec:
    return ImageSpec(template="tmpl-missing-image")


def network_for_tests() -> str:
    return "vmbr0"


def placement_for_tests() -> dict[str, str]:
    return {"node": NODE, "storage": STORAGE}


def _config(
    endpoint: str, credentials: dict[str, str], key: str = "contract/pve", **kw: Any
) -> ProviderConfig:
    return ProviderConfig(
        type="proxmox",
        key=key,
        endpoint=endpoint,
        credentials=credentials,
        rate=GENEROUS,
        insecure_skip_verify=True,
        defaults={"storage": STORAGE, **kw},
    )


def _limiter(request: pytest.FixtureRequest) -> TokenLimiter:
    limiter: TokenLimiter = request.getfixturevalue("provider_limiter")
    return limiter


async def make_provider(request: pytest.FixtureRequest) -> Provider:
    info = request.getfixturevalue("pve_info")
    creds = {"username": info.user, "password": info.password}
    return create_provider(_config(info.url, creds), _limiter(request))


def _pve(provider: Provider) -> ProxmoxProvider:
    assert isinstance(provider, ProxmoxProvider), provider
    return provider


async def make_foreign_vm(provider: Provider, name: str) -> str:
    """A VM with this name and no ownership tag, made with the SDK directly."""
    session = _pve(provider).session
    vmid = int(await session.call("test_nextid", lambda p: p.cluster.nextid.get()))
    upid = await session.call(
        "test_create",
        lambda p: p.nodes(NODE).qemu.post(vmid=vmid, name=name, memory=512, cores=1),
    )
    await wait_task(provider, "pve-task:" + upid)
    return vc.vm_id(NODE, vmid)


async def delete_vms(provider: Provider, ids: list[str]) -> None:
    pve = _pve(provider)

    async def remove(vm_id: str) -> None:
        node, vmid = vc.parse_vm_id(vm_id)
        status = await pve.session.call(
            "test_status", lambda p: p.nodes(node).qemu(vmid).status.current.get()
        )
        if status.get("status") == "running":
            stop = await pve.session.call(
                "test_stop", lambda p: p.nodes(node).qemu(vmid).status.stop.post()
            )
            await wait_task(pve, "pve-task:" + stop)
        upid = await pve.session.call(
            "test_delete", lambda p: p.nodes(node).qemu(vmid).delete(purge=1)
        )
        await wait_task(pve, "pve-task:" + upid)

    for chunk in range(0, len(ids), 16):
        await asyncio.gather(*(remove(i) for i in ids[chunk : chunk + 16]))


async def make_owned_vms(provider: Provider, owners: list[Owner]) -> list[str]:
    """One tagged VM per owner, straight through the API (no clone, no waiting per VM)."""
    pve = _pve(provider)
    resources = await pve.session.call("test_list", lambda p: p.cluster.resources.get(type="vm"))
    first = max([int(r["vmid"]) for r in resources] + [TEMPLATE_VMID + 100]) + 1
    ids = []

    async def make(vmid: int, owner: Owner) -> str:
        args = {
            "vmid": vmid,
            "name": owner.hypervisor_name(),
            "memory": 512,
            "cores": 1,
            "tags": vc.pve_tags(owner, {}),
            "description": vc.description_for(None, owner, {}),
        }
        upid = await pve.session.call("test_create", lambda p: p.nodes(NODE).qemu.post(**args))
        await wait_task(pve, "pve-task:" + upid)
        return vc.vm_id(NODE, vmid)

    for chunk in range(0, len(owners), 16):
        part = owners[chunk : chunk + 16]
        ids += await asyncio.gather(*(make(first + chunk + i, o) for i, o in enumerate(part)))
    return ids


async def expire_session(provider: Provider) -> None:
    """Replace the login ticket the session holds with one the server never issued: the
    server answers 401, exactly as for an expired or revoked ticket."""
    _pve(provider).session.force_expire()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def unreachable_provider(request: pytest.FixtureRequest) -> Provider:
    endpoint = f"https://127.0.0.1:{_closed_port()}"
    creds = {"token_id": PRIVATE_TOKEN_ID, "token_secret": str(uuid.uuid4())}
    return create_provider(_config(endpoint, creds, key="contract/unreachable"), _limiter(request))


async def bad_credentials_provider(request: pytest.FixtureRequest) -> tuple[Provider, str]:
    info = request.getfixturevalue("pve_info")
    secret = f"wrong-{uuid.uuid4()}"
    creds = {"token_id": info.token_id, "token_secret": secret}
    return create_provider(_config(info.url, creds, key="contract/bad"), _limiter(request)), secret


# ----------------------------------------------------------- private fakepve


class PrivatePve:
    """A fakepve of its own for one test: served from a thread with its own event loop.

    ``pve`` is the FakePve object (fault injection: ``flaky_network``, ``slow_network``,
    ``revoke_tickets``; coroutines such as ``hold_config_lock`` go through ``run``).
    """

    def __init__(self, *, time_scale: float = 0.0, latency_s: float = 0.0) -> None:
        self.password = f"pw-{uuid.uuid4().hex[:12]}"
        self.token_secret = str(uuid.uuid4())
        self.pve = FakePve(user="root@pam", password=self.password, host="127.0.0.1", port=0)
        self.pve.time_scale = time_scale
        self.pve.apitokens[PRIVATE_TOKEN_ID] = self.token_secret
        for n in ("pve1", "pve2", "pve3"):
            self.pve.add_node(n)
        for t in TEMPLATES:
            self.pve.add_vm(
                t["vmid"], t["name"], node=NODE, config=dict(t["config"]), template=True
            )
        if latency_s:
            self.pve.slow_network(latency_s)
        self._pki_dir = tempfile.mkdtemp(prefix="fakepve-private-")
        self._pki = make_cert(self._pki_dir, hosts=("127.0.0.1",))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.pve.start(self._pki[0], self._pki[1]))
        self.providers: list[Provider] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.pve.port}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def make_provider(
        self, limiter: TokenLimiter, *, token: bool = False, **defaults: str
    ) -> ProxmoxProvider:
        creds = (
            {"token_id": PRIVATE_TOKEN_ID, "token_secret": self.token_secret}
            if token
            else {"username": "root@pam", "password": self.password}
        )
        made = create_provider(
            _config(self.url, creds, key=f"private/{uuid.uuid4().hex[:6]}", **defaults), limiter
        )
        self.providers.append(made)
        return made

    async def restart(self) -> None:
        """Stop serving and serve again on the same port, as a restarted pveproxy; the
        restarted fake also forgets its login tickets."""
        await asyncio.to_thread(self.run, self.pve.stop())
        self.pve.tickets = {}
        await asyncio.to_thread(self.run, self.pve.start(self._pki[0], self._pki[1]))

    async def stop(self) -> None:
        for p in self.providers:
            await p.close()
        await asyncio.to_thread(self.run, self.pve.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 10)
        self.loop.close()
        shutil.rmtree(self._pki_dir, ignore_errors=True)


class PrivateEndpoint:
    def __init__(self, server: PrivatePve, provider: Provider) -> None:
        self.server = server
        self.provider = provider

    async def restart(self) -> None:
        await self.server.restart()

    async def stop(self) -> None:
        await self.server.stop()


async def start_private(request: pytest.FixtureRequest, *, latency_ms: int = 0) -> PrivateEndpoint:
    # Latency only applies with a non-zero time scale (fakepve scales every pause).
    server = await asyncio.to_thread(
        PrivatePve, time_scale=1.0 if latency_ms else 0.0, latency_s=latency_ms / 1000
    )
    return PrivateEndpoint(server, server.make_provider(_limiter(request)))
