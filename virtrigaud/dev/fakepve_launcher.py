"""Serve fakepve (unmodified, as a library in its own process) set up for the dev stack.

Run as ``python -m virtrigaud.dev.fakepve_launcher --port 0 --nodes 3 ...`` with the
password and token secret in the environment (VIRTRIGAUD_PVE_PASSWORD,
VIRTRIGAUD_PVE_TOKEN_SECRET), never on the command line. The stock fakepve CLI cannot
register API tokens or empty nodes, which is why this launcher exists. Prints
``FAKEPVE_URL=https://127.0.0.1:PORT PID=N`` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile

from fakepve import FakePve
from fakepve.certs import make_cert

from virtrigaud.dev.pvetemplates import TEMPLATES


async def serve(args: argparse.Namespace) -> None:
    pve = FakePve(
        user=args.user,
        password=os.environ["VIRTRIGAUD_PVE_PASSWORD"],
        host=args.host,
        port=args.port,
    )
    pve.time_scale = args.time_scale
    pve.apitokens[args.token_id] = os.environ["VIRTRIGAUD_PVE_TOKEN_SECRET"]
    for i in range(1, args.nodes + 1):
        pve.add_node(f"pve{i}")
    for t in TEMPLATES:
        pve.add_vm(t["vmid"], t["name"], node="pve1", config=dict(t["config"]), template=True)
    tmp = tempfile.mkdtemp(prefix="fakepve-")
    try:
        certfile, keyfile, _ = make_cert(tmp, hosts=(args.host,))
        await pve.start(certfile, keyfile)
    finally:
        # The key is loaded; the files are not needed any more.
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"FAKEPVE_URL={pve.url} PID={os.getpid()}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="fakepve_launcher")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="root@pam")
    parser.add_argument("--token-id", default="root@pam!virtrigaud")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--time-scale", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
