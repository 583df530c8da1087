"""A provider's Capabilities as Provider status reports them."""

from __future__ import annotations

from virtrigaud.api.provider import ReportedCapabilities
from virtrigaud.providers.base import Capabilities


def capability_names(caps: Capabilities) -> list[str]:
    """status.capabilities: the names of what the provider can do."""
    flags = [
        ("Snapshots", caps.snapshots),
        ("MemorySnapshots", caps.memory_snapshots),
        ("LinkedClones", caps.linked_clones),
        ("OnlineCPUChange", caps.online_cpu_change),
        ("OnlineMemoryChange", caps.online_memory_change),
        ("OnlineDiskGrow", caps.online_disk_grow),
        ("GracefulShutdown", caps.graceful_shutdown),
        ("ImageImport", caps.image_import),
    ]
    return [name for name, present in flags if present]


def reported(caps: Capabilities) -> ReportedCapabilities:
    """status.reportedCapabilities: the flags this controller knows (others stay unset)."""
    return ReportedCapabilities(
        supports_reconfigure_online=caps.online_cpu_change and caps.online_memory_change,
        supports_disk_expansion_online=caps.online_disk_grow,
        supports_snapshots=caps.snapshots,
        supports_memory_snapshots=caps.memory_snapshots,
        supports_linked_clones=caps.linked_clones,
        supports_image_import=caps.image_import,
    )
