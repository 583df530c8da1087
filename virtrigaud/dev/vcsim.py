"""The `vcsim` part: govmomi's vCenter simulator, with generated credentials."""

from __future__ import annotations

import re
import secrets
import time

from virtrigaud.dev import gobuild
from virtrigaud.dev.config import StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import VcsimInfo
from virtrigaud.dev.probe import https_get
from virtrigaud.dev.process import (
    LOOPBACK,
    ProcessRecord,
    choose_port,
    rollback,
    spawn,
    wait_for_line,
)

READY_LINE = r"^VCSIM_URL=(\S+) PID=(\d+)$"
USERNAME = "administrator@vsphere.local"


def _api_version(url: str) -> str | None:
    """The vim25 API version the simulator serves (from its vimServiceVersions.xml)."""
    got = https_get(url.removesuffix("/sdk") + "/sdk/vimServiceVersions.xml")
    if got is None or got[0] != 200:
        return None
    m = re.search(r"<version>([^<]+)</version>", got[1])
    return m.group(1) if m else None


def start(ctx: StartContext) -> VcsimInfo:
    binary = gobuild.build_vcsim(ctx.progress)
    port = choose_port("vcsim", ctx.config.vcsim_port, "--vcsim-port")
    password = secrets.token_urlsafe(12)
    inventory = ctx.config.vcsim
    began = time.monotonic()
    records: list[ProcessRecord] = []
    with rollback(records):
        ctx.report("start vcsim")
        rec = spawn(
            "vcsim",
            [
                str(binary),
                f"-l={LOOPBACK}:{port}",
                f"-username={USERNAME}",
                f"-password={password}",
                *inventory.flags(),
            ],
            ctx.log("vcsim"),
        )
        records.append(rec)
        # A large inventory takes seconds to build before the line appears.
        m = wait_for_line("vcsim", rec, READY_LINE, 120, "read logs/vcsim.log in the state dir")
        url = m.group(1)
        found = re.match(r"https?://([^:/]+):(\d+)", url)
        if found is None:
            raise StackError("vcsim", f"unexpected ready line URL {url!r}", "fix tools/vcsim")
        api = _api_version(url)
    return VcsimInfo(
        processes=records,
        version=f"vcsim (govmomi 0.24.2), vim25 {api or '?'}",
        address=url,
        started_at=time.time(),
        start_seconds=time.monotonic() - began,
        url=url,
        host=found.group(1),
        port=int(found.group(2)),
        username=USERNAME,
        password=password,
        inventory=inventory,
    )


def check(info: VcsimInfo) -> str | None:
    return None if _api_version(info.url) else "no answer on /sdk/vimServiceVersions.xml"
