"""A Proxmox VE simulator of a test's own whose clones are slow: fakepve (unmodified, served
from a thread of the test process) with templates on an RBD storage and fakepve's "slow
Ceph" scenario, so every clone task runs for `clone_seconds` while the API answers at
once."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from fakepve import FakePve
from fakepve.certs import make_cert

T = TypeVar("T")

TOKEN_ID = "root@pam!slow"
TEMPLATE_ID = 9100
NODE = "pve1"


class SlowClonePve:
    def __init__(self, clone_seconds: float, templates: int = 3) -> None:
        self.token_secret = str(uuid.uuid4())
        self.pve = FakePve(user="root@pam", password=uuid.uuid4().hex, host="127.0.0.1", port=0)
        self.pve.time_scale = 1.0
        self.pve.apitokens[TOKEN_ID] = self.token_secret
        for n in ("pve1", "pve2"):
            self.pve.add_node(n)
        self.pve.add_ceph_storage("ceph-pool")
        for vmid in range(TEMPLATE_ID, TEMPLATE_ID + templates):
            self.pve.add_vm(
                vmid,
                f"tmpl-slow-{vmid}",
                node=NODE,
                template=True,
                config={
                    "memory": "1024",
                    "cores": "1",
                    "ostype": "l26",
                    "scsi0": f"ceph-pool:base-{vmid}-disk-0,size=4G",
                    "scsihw": "virtio-scsi-single",
                    "net0": f"virtio=BC:24:11:00:{vmid % 100:02d}:00,bridge=vmbr0",
                },
            )
        self.pve.ceph_slow(clone_seconds)
        pki = make_cert(tempfile.mkdtemp(prefix="slowpve-"), hosts=("127.0.0.1",))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.pve.start(pki[0], pki[1]))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.pve.port}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def guests_named(self) -> dict[str, int]:
        """How many non-template guests carry each name (counted on the simulator)."""
        counts: dict[str, int] = {}
        for vm in list(self.pve.vms):
            if not vm.template:
                counts[vm.name] = counts.get(vm.name, 0) + 1
        return counts

    def stop(self) -> None:
        self.run(self.pve.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
