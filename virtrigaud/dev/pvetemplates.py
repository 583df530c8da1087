"""The template guests the dev stack's Proxmox starts with (all on node pve1)."""

from __future__ import annotations

from typing import Any

TEMPLATES: list[dict[str, Any]] = [
    {
        "vmid": 9000,
        "name": "tmpl-debian-12",
        "template": True,
        "config": {
            "memory": "2048",
            "cores": "2",
            "ostype": "l26",
            "scsi0": "local-lvm:base-9000-disk-0,size=8G",
            "scsihw": "virtio-scsi-single",
            "net0": "virtio=BC:24:11:00:90:00,bridge=vmbr0",
        },
    },
    {
        "vmid": 9001,
        "name": "tmpl-ubuntu-24.04",
        "template": True,
        "config": {
            "memory": "2048",
            "cores": "2",
            "ostype": "l26",
            "scsi0": "local-lvm:base-9001-disk-0,size=10G",
            "scsihw": "virtio-scsi-single",
            "net0": "virtio=BC:24:11:00:90:01,bridge=vmbr0",
        },
    },
]
