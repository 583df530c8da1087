"""One smoke per dev-stack server: a real client logs in and does one real thing."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
import uuid

import libvirt
import pytest
import redis
from proxmoxer import ProxmoxAPI
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from virtrigaud.dev.info import ProxmoxInfo, RayInfo, VcsimInfo
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import SECRETS

pytestmark = pytest.mark.stack


def test_pyvmomi_logs_in_to_vcsim_and_lists_vms(vcsim_info: VcsimInfo) -> None:
    si = SmartConnect(  # type: ignore[no-untyped-call]
        host=vcsim_info.host,
        port=vcsim_info.port,
        user=vcsim_info.username,
        pwd=vcsim_info.password,
        disableSslCertValidation=True,
    )
    try:
        content = si.RetrieveContent()
        assert content.about.apiType == "VirtualCenter"
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        # Other tests of the session add (and delete, meanwhile) VMs of their own; count
        # the model's.
        names = sorted(n for n in map(_name_if_present, view.view) if n.startswith("DC"))
        view.Destroy()
    finally:
        Disconnect(si)  # type: ignore[no-untyped-call]
    inv = vcsim_info.inventory
    per_dc = inv.clusters * inv.pools * inv.vms_per_pool + inv.standalone_hosts * inv.vms_per_pool
    assert len(names) == inv.datacenters * per_dc
    assert all(n.startswith("DC0_") for n in names)


def _name_if_present(vm: vim.VirtualMachine) -> str:
    try:
        return str(vm.name)
    except vmodl.fault.ManagedObjectNotFound:
        return ""  # deleted between the view's listing and this read


def test_vcsim_refuses_a_wrong_password(vcsim_info: VcsimInfo) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(  # type: ignore[no-untyped-call]
            host=vcsim_info.host,
            port=vcsim_info.port,
            user=vcsim_info.username,
            pwd=vcsim_info.password + "x",
            disableSslCertValidation=True,
        )


def test_libvirt_domain_defined_in_one_process_is_seen_by_another(libvirt_uri: str) -> None:
    name = f"dev-{uuid.uuid4().hex[:8]}"
    xml = (
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>128</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )
    define = textwrap.dedent(
        f"""
        import libvirt
        conn = libvirt.open({libvirt_uri!r})
        conn.defineXML({xml!r})
        conn.close()
        """
    )
    # The defining process exits before we look: only the daemon (and its keeper) hold state.
    subprocess.run([sys.executable, "-c", define], check=True, timeout=60)
    conn = libvirt.open(libvirt_uri)
    try:
        dom = conn.lookupByName(name)
        assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        dom.undefine()
    finally:
        conn.close()
    check = textwrap.dedent(
        f"""
        import libvirt, sys
        conn = libvirt.open({libvirt_uri!r})
        sys.exit(0 if {name!r} not in [d.name() for d in conn.listAllDomains()] else 3)
        """
    )
    assert subprocess.run([sys.executable, "-c", check], timeout=60).returncode == 0


def test_proxmoxer_logs_in_with_the_api_token(pve_info: ProxmoxInfo) -> None:
    api = ProxmoxAPI(
        pve_info.host,
        port=pve_info.port,
        user=pve_info.user,
        token_name=pve_info.token_name,
        token_value=pve_info.token_secret,
        verify_ssl=False,
    )
    assert api.version.get()["version"].startswith("9.")
    assert sorted(n["node"] for n in api.nodes.get()) == pve_info.nodes
    templates = [g for g in api.nodes("pve1").qemu.get() if g.get("template")]
    assert sorted(int(g["vmid"]) for g in templates) == pve_info.templates


def test_redis_answers_ping(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as r:
        assert r.ping() is True
        assert r.config_get("save") == {"save": ""}


def test_ray_actor_round_trip_from_another_process(ray_info: RayInfo) -> None:
    script = textwrap.dedent(
        f"""
        import ray
        ray.init(address={ray_info.address!r}, logging_level="ERROR", log_to_driver=False)
        assert ray.util.get_node_ip_address() == "127.0.0.1"

        @ray.remote(num_cpus=0)
        class Echo:
            def add(self, x):
                return x + 1

        echo = Echo.remote()
        print("RESULT", ray.get(echo.add.remote(41)))
        ray.shutdown()
        """
    )
    env = {**os.environ, **ray_info.env}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RESULT 42" in out.stdout


async def test_credential_secrets_match_the_simulators(
    kubeconfig: str, vcsim_info: VcsimInfo, libvirt_uri: str, pve_info: ProxmoxInfo
) -> None:
    async with KubeClient.from_kubeconfig(kubeconfig) as kube:

        async def data(name: str) -> dict[str, str]:
            secret = await kube.get(SECRETS, name, "default")
            return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

        assert await data("vsphere-credentials") == {
            "username": vcsim_info.username,
            "password": vcsim_info.password,
        }
        assert await data("libvirt-credentials") == {"uri": libvirt_uri}
        assert await data("proxmox-credentials") == {
            "token_id": pve_info.token_id,
            "token_secret": pve_info.token_secret,
        }
