"""The `proxmox` part: fakepve in its own process, with an API token, nodes and templates."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import secrets
import sys
import time
import uuid

from virtrigaud.dev.config import StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import ProxmoxInfo
from virtrigaud.dev.probe import https_get
from virtrigaud.dev.process import (
    LOOPBACK,
    ProcessRecord,
    choose_port,
    rollback,
    spawn,
    wait_for_line,
)
from virtrigaud.dev.pvetemplates import TEMPLATES

READY_LINE = r"^FAKEPVE_URL=(https://[^:\s]+:(\d+)) PID=\d+$"


def _version(url: str, token_id: str, token_secret: str) -> str | None:
    got = https_get(
        url + "/api2/json/version",
        headers={"Authorization": f"PVEAPIToken={token_id}={token_secret}"},
    )
    if got is None or got[0] != 200:
        return None
    try:
        data = json.loads(got[1])["data"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(data.get("version", "?"))


def start(ctx: StartContext) -> ProxmoxInfo:
    if importlib.util.find_spec("fakepve") is None:
        raise StackError(
            "proxmox", "the fakepve package is not installed", "pip install 'fakepve[crypto]'"
        )
    opts = ctx.config.proxmox
    port = choose_port("proxmox", ctx.config.proxmox_port, "--proxmox-port")
    token_id = f"{opts.token_user}!{opts.token_name}"
    token_secret = str(uuid.uuid4())
    password = secrets.token_urlsafe(12)
    nodes = [f"pve{i}" for i in range(1, opts.nodes + 1)]
    began = time.monotonic()
    records: list[ProcessRecord] = []
    with rollback(records):
        ctx.report("start fakepve")
        rec = spawn(
            "fakepve",
            [
                sys.executable,
                "-m",
                "virtrigaud.dev.fakepve_launcher",
                f"--host={LOOPBACK}",
                f"--port={port}",
                f"--user={opts.token_user}",
                f"--token-id={token_id}",
                f"--nodes={opts.nodes}",
                f"--time-scale={opts.time_scale}",
            ],
            ctx.log("fakepve"),
            env={"VIRTRIGAUD_PVE_PASSWORD": password, "VIRTRIGAUD_PVE_TOKEN_SECRET": token_secret},
        )
        records.append(rec)
        m = wait_for_line("proxmox", rec, READY_LINE, 60, "read logs/fakepve.log in the state dir")
        url, served_port = m.group(1), int(m.group(2))
        pve_version = _version(url, token_id, token_secret)
        if pve_version is None:
            raise StackError(
                "proxmox", "fakepve refused the registered API token", "read logs/fakepve.log"
            )
    host = re.sub(r"^https://|:\d+$", "", url)
    return ProxmoxInfo(
        processes=records,
        version=f"fakepve {importlib.metadata.version('fakepve')} (PVE {pve_version})",
        address=url,
        started_at=time.time(),
        start_seconds=time.monotonic() - began,
        url=url,
        host=host,
        port=served_port,
        user=opts.token_user,
        password=password,
        token_id=token_id,
        token_name=opts.token_name,
        token_secret=token_secret,
        nodes=nodes,
        templates=[int(t["vmid"]) for t in TEMPLATES],
        time_scale=opts.time_scale,
    )


def check(info: ProxmoxInfo) -> str | None:
    if _version(info.url, info.token_id, info.token_secret) is None:
        return "no answer (or token refused) on /api2/json/version"
    return None
