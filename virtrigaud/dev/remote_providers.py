"""The three simulators' providers as remote provider.v1 servers on loopback (dev stack).

``virtrigaud dev up --remote-providers`` runs this after the simulators are up: a private
CA (``state_dir/pki/ca``), a server certificate per provider server (SANs 127.0.0.1 and
localhost), one client certificate for the controller (``state_dir/pki/client``, SAN
``controller.virtrigaud.dev``, the only SAN the servers allow), and one
``virtrigaud provider serve`` process per simulator, credentials in 0600 files. What runs
is recorded in ``state_dir/remote-providers.json``; ``dev down`` stops it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from virtrigaud.dev.info import LibvirtInfo, PartInfo, ProxmoxInfo, StackInfo, VcsimInfo
from virtrigaud.dev.process import ProcessRecord, spawn, stop, wait_for_line
from virtrigaud.netports import free_ports
from virtrigaud.providers.remote.certs import CertificateAuthority, write_material

STATE_FILE = "remote-providers.json"
CLIENT_SAN = "controller.virtrigaud.dev"
_TYPES = {"vcsim": "vsphere", "libvirt": "libvirt", "proxmox": "proxmox"}


class RemoteServer(BaseModel):
    type: str
    address: str
    process: ProcessRecord
    metrics_port: int


class RemoteProvidersInfo(BaseModel):
    ca: str
    client_tls_dir: str
    """tls.crt, tls.key, ca.crt of the controller's client certificate."""
    servers: dict[str, RemoteServer]
    """By provider type (vsphere, libvirt, proxmox)."""

    def save(self, state_dir: Path) -> None:
        tmp = state_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(state_dir / STATE_FILE)


def load(state_dir: Path) -> RemoteProvidersInfo | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return RemoteProvidersInfo.model_validate_json(path.read_text())


def _serve_args(sim: PartInfo, cred_dir: Path) -> list[str]:
    cred_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds: dict[str, str]
    args: list[str]
    # The same placement defaults the dev stack's Provider objects use (the remote
    # provider applies its own defaults; the Provider controller passes spec.defaults).
    if isinstance(sim, VcsimInfo):
        creds = {"username": sim.username, "password": sim.password}
        args = ["--endpoint", sim.url, "--insecure-skip-verify"]
        args += ["--default", "datastore=LocalDS_0", "--default", "cluster=DC0_C0"]
    elif isinstance(sim, LibvirtInfo):
        creds, args = {}, ["--endpoint", sim.uri, "--default", "storage_pool=default-pool"]
    elif isinstance(sim, ProxmoxInfo):
        creds = {"token_id": sim.token_id, "token_secret": sim.token_secret}
        args = ["--endpoint", sim.url, "--insecure-skip-verify"]
        args += ["--default", "storage_pool=local-lvm", "--default", f"node={sim.nodes[0]}"]
    else:
        raise TypeError(type(sim).__name__)
    for key, value in creds.items():
        path = cred_dir / key
        path.touch(mode=0o600)
        path.write_text(value)
    return [*args, "--credentials-dir", str(cred_dir)]


def start(state_dir: Path, info: StackInfo, timeout: float = 60.0) -> RemoteProvidersInfo:
    """Start one provider server per running simulator (again if some already run)."""
    stop_all(state_dir)
    bin_dir = Path(sys.executable).parent
    pki = state_dir / "pki"
    ca = CertificateAuthority.create("VirtRigaud dev provider CA")
    (pki / "ca").mkdir(parents=True, exist_ok=True)
    (pki / "ca" / "ca.crt").write_bytes(ca.pem)
    client_dir = write_material(
        ca.material("controller", [CLIENT_SAN], server=False, client=True), pki / "client"
    )
    servers: dict[str, RemoteServer] = {}
    try:
        for sim, provider_type in _TYPES.items():
            part = info.part(sim)
            if part is None:
                continue
            base = state_dir / "remote-providers" / provider_type
            tls_dir = write_material(
                ca.material(provider_type, ["127.0.0.1", "localhost"], server=True, client=False),
                base / "tls",
            )
            args = _serve_args(part, base / "credentials")
            port, metrics_port = free_ports(2)
            argv = [
                str(bin_dir / "virtrigaud"),
                "provider",
                "serve",
                "--type",
                provider_type,
                "--name",
                f"dev/{provider_type}",
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-dir",
                str(tls_dir),
                "--allowed-san",
                CLIENT_SAN,
                "--metrics-port",
                str(metrics_port),
                *args,
            ]
            record = spawn(f"provider-{provider_type}", argv, base / "serve.log")
            servers[provider_type] = RemoteServer(
                type=provider_type,
                address=f"127.0.0.1:{port}",
                process=record,
                metrics_port=metrics_port,
            )
        for server in servers.values():
            wait_for_line(
                f"provider-{server.type}",
                server.process,
                r"^serving ",
                timeout,
                f"read {server.process.log}",
            )
    except BaseException:
        for server in servers.values():
            stop(server.process)
        raise
    result = RemoteProvidersInfo(
        ca=str(pki / "ca" / "ca.crt"), client_tls_dir=str(client_dir), servers=servers
    )
    result.save(state_dir)
    return result


def stop_all(state_dir: Path) -> None:
    current = load(state_dir)
    if current is None:
        return
    for server in current.servers.values():
        stop(server.process, grace=15.0)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
