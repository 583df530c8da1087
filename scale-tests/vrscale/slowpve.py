"""A fakepve of the scale run's own, with injected network latency (fakepve's slow_network),
for the latency-bound scaling scenario; the dev stack's Proxmox has no latency option.

Run as ``python -m vrscale.slowpve --port 0 --latency-ms 100`` with the token secret in
VRSCALE_PVE_TOKEN_SECRET; prints ``SLOWPVE_URL=https://127.0.0.1:PORT`` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from virtrigaud.dev.process import ProcessRecord, free_port, spawn, stop, wait_for_line
from virtrigaud.dev.pvetemplates import TEMPLATES

TOKEN_ID = "root@pam!vrscale"
EXTRA_TEMPLATE_BASE = 9100
"""Copies of the first template (--extra-templates) get vmids from here."""
TIME_SCALE = 0.01
"""Real seconds per PVE second: fakepve applies latency only with a non-zero scale, and
scales it too, so the latency is given in PVE seconds (latency / TIME_SCALE)."""


async def serve(args: argparse.Namespace) -> None:
    from fakepve import FakePve
    from fakepve.certs import make_cert

    pve = FakePve(
        user="root@pam", password=secrets.token_urlsafe(12), host=args.host, port=args.port
    )
    pve.time_scale = TIME_SCALE
    pve.apitokens[TOKEN_ID] = os.environ["VRSCALE_PVE_TOKEN_SECRET"]
    for i in range(1, args.nodes + 1):
        pve.add_node(f"pve{i}")
    for t in TEMPLATES:
        pve.add_vm(t["vmid"], t["name"], node="pve1", config=dict(t["config"]), template=True)
    base = TEMPLATES[0]
    for k in range(args.extra_templates):
        vmid = EXTRA_TEMPLATE_BASE + k
        config = dict(base["config"], scsi0=f"local-lvm:base-{vmid}-disk-0,size=8G")
        pve.add_vm(vmid, f"{base['name']}-{k}", node="pve1", config=config, template=True)
    pve.slow_network(args.latency_ms / 1000 / TIME_SCALE)
    tmp = tempfile.mkdtemp(prefix="slowpve-")
    try:
        certfile, keyfile, _ = make_cert(tmp, hosts=(args.host,))
        await pve.start(certfile, keyfile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"SLOWPVE_URL={pve.url}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="slowpve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--latency-ms", type=int, default=100)
    p.add_argument("--extra-templates", type=int, default=0)
    asyncio.run(serve(p.parse_args()))


@dataclass
class SlowPve:
    record: ProcessRecord
    url: str
    token_id: str
    token_secret: str

    def stop(self) -> None:
        stop(self.record, grace=3.0)


def start(log_dir: Path, latency_ms: int, extra_templates: int = 0) -> SlowPve:
    secret = str(uuid.uuid4())
    here = str(Path(__file__).resolve().parent.parent)
    rec = spawn(
        "slowpve",
        [
            sys.executable,
            "-m",
            "vrscale.slowpve",
            f"--port={free_port()}",
            f"--latency-ms={latency_ms}",
            f"--extra-templates={extra_templates}",
        ],
        log_dir / "slowpve.log",
        env={"VRSCALE_PVE_TOKEN_SECRET": secret, "PYTHONPATH": here},
    )
    try:
        m = wait_for_line("slowpve", rec, r"^SLOWPVE_URL=(\S+)$", 30, f"read {log_dir}/slowpve.log")
    except BaseException:
        stop(rec)
        raise
    return SlowPve(rec, m.group(1), TOKEN_ID, secret)


if __name__ == "__main__":
    main()
