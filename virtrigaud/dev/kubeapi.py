"""The `kube` part: etcd plus kubelite (the upstream apiextensions-apiserver) on loopback.

With ``StackConfig.kube_rbac`` kubelite authenticates bearer tokens from kube/tokens.csv
and authorizes with RBAC, logging every decision to kube/authz.log (see kubeauth and
authzlog); the admin kubeconfig then carries a system:masters token.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import requests

from virtrigaud.dev import gobuild, kubeauth
from virtrigaud.dev.config import StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import KubeInfo
from virtrigaud.dev.kuberest import DevKube
from virtrigaud.dev.process import (
    LOOPBACK,
    ProcessRecord,
    choose_port,
    rollback,
    spawn,
    wait_until,
)
from virtrigaud.netports import free_ports

FIX_LOGS = "read logs/etcd.log and logs/kubelite.log in the state dir"


def _etcd_healthy(url: str) -> bool:
    try:
        r = requests.get(url + "/health", timeout=1)
    except requests.RequestException:
        return False
    return r.status_code == 200 and '"true"' in r.text


def ca_file(info: KubeInfo) -> str:
    return str(Path(info.kubeconfig).parent / "certs" / "apiserver.crt")


def start(ctx: StartContext) -> KubeInfo:
    etcd = gobuild.etcd_binary(ctx.progress)
    kubelite = gobuild.build_kubelite(ctx.progress)
    port = choose_port("kube", ctx.config.kube_port, "--kube-port")
    home = ctx.part_dir("kube")
    data = home / "etcd"
    # A fresh cluster on every start: tests and demos begin from a known state.
    shutil.rmtree(data, ignore_errors=True)
    client_port, peer_port = free_ports(2)
    etcd_url = f"http://{LOOPBACK}:{client_port}"
    peer_url = f"http://{LOOPBACK}:{peer_port}"
    began = time.monotonic()
    records: list[ProcessRecord] = []
    with rollback(records):
        ctx.report("start etcd")
        etcd_rec = spawn(
            "etcd",
            [
                str(etcd),
                "--name=default",
                f"--data-dir={data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Test data only: no fsync, and a small WAL, keep it fast and light.
                "--unsafe-no-fsync",
                "--snapshot-count=5000",
                "--log-level=warn",
            ],
            ctx.log("etcd"),
        )
        records.append(etcd_rec)
        wait_until("kube", "etcd healthy", lambda: _etcd_healthy(etcd_url), etcd_rec, 60, FIX_LOGS)
        ctx.report("start kubelite")
        certs = home / "certs"
        token, access = _access_control(home, ctx.config.kube_rbac)
        api_rec = spawn(
            "kubelite",
            [
                str(kubelite),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={port}",
                f"--bind-address={LOOPBACK}",
                f"--cert-dir={certs}",
                *access,
            ],
            ctx.log("kubelite"),
        )
        records.append(api_rec)
        server = f"https://{LOOPBACK}:{port}"
        kubeconfig = home / "kubeconfig"
        user = kubeauth.ADMIN_USER if ctx.config.kube_rbac else "dev"
        kubeauth.write_kubeconfig(kubeconfig, server, token, user=user)
        info = KubeInfo(
            processes=records,
            version="",
            address=server,
            started_at=0.0,
            start_seconds=0.0,
            server=server,
            kubeconfig=str(kubeconfig),
            etcd_url=etcd_url,
            token=token,
            rbac=ctx.config.kube_rbac,
            token_file=str(home / "tokens.csv") if ctx.config.kube_rbac else "",
            authz_log=str(home / "authz.log") if ctx.config.kube_rbac else "",
        )
        ca = Path(ca_file(info))
        wait_until("kube", "its serving certificate", ca.exists, api_rec, 60, FIX_LOGS)
        client = DevKube(server, str(ca), token)
        try:
            wait_until("kube", "/readyz ok", lambda: _ready(client), api_rec, 60, FIX_LOGS)
            version = client.get_json("/version").get("gitVersion", "?")
        finally:
            client.close()
    info.version = f"kubelite {version}"
    info.start_seconds = time.monotonic() - began
    info.started_at = time.time()
    return info


def _access_control(home: Path, rbac: bool) -> tuple[str, list[str]]:
    """The admin token and kubelite's access flags; a fresh token file and log per start."""
    if not rbac:
        return kubeauth.NO_AUTH_TOKEN, []
    token = kubeauth.new_token()
    tokens, log = home / "tokens.csv", home / "authz.log"
    kubeauth.write_token_file(
        tokens, [(token, kubeauth.ADMIN_USER, kubeauth.ADMIN_USER, kubeauth.ADMIN_GROUPS)]
    )
    log.unlink(missing_ok=True)
    shutil.rmtree(home / "users", ignore_errors=True)
    flags = [
        f"--token-auth-file={tokens}",
        "--authorization-mode=RBAC",
        f"--authorization-log-file={log}",
    ]
    return token, flags


def _ready(client: DevKube) -> bool:
    try:
        status, text = client.get_text("/readyz")
    except requests.RequestException:
        return False
    return status == 200 and text.strip() == "ok"


def check(info: KubeInfo) -> str | None:
    """None when healthy, else what is wrong."""
    client = DevKube(info.server, ca_file(info), info.token, timeout=3)
    try:
        status, text = client.get_text("/readyz")
    except requests.RequestException as e:
        return f"/readyz unreachable: {type(e).__name__}"
    finally:
        client.close()
    if status != 200:
        return f"/readyz answered {status}: {text.strip()[:200]}"
    return None


def open_client(info: KubeInfo) -> DevKube:
    client = DevKube(info.server, ca_file(info), info.token)
    if check(info) is not None:
        client.close()
        raise StackError("kube", "the API server is not ready", "run `virtrigaud dev up`")
    return client
