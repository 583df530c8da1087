"""The oldest hypervisor versions VirtRigaud works with, and the check a probe applies.

The floors are the oldest versions whose APIs the providers use: vSphere 6.5 (the API
level of every call the vSphere provider makes, and what vcsim reports), Proxmox VE 7.0
(the first release of its current API for clones, tags and tasks) and libvirt 6.0 (the
library the libvirt provider was built and tested against is newer; older ones lack
domain metadata calls it relies on).
"""

from __future__ import annotations

import re

from virtrigaud.providers.base import Cause, TerminalError

MINIMUM_VERSIONS: dict[str, tuple[int, ...]] = {
    "vsphere": (6, 5),
    "proxmox": (7, 0),
    "libvirt": (6, 0),
}


def parse_version(text: str) -> tuple[int, ...] | None:
    """The leading dotted numbers of a version string ("9.0.10" -> (9, 0, 10))."""
    m = re.search(r"\d+(?:\.\d+)*", text)
    return tuple(int(p) for p in m.group(0).split(".")) if m else None


def libvirt_version(number: int) -> str:
    """libvirt's packed version number (major * 1,000,000 + minor * 1,000 + release)."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def check_version(provider_type: str, version: str, where: str) -> None:
    """Raise a TerminalError (cause UNSUPPORTED_VERSION) for a version below the floor;
    an unreadable version passes (the probe reports it as it is)."""
    floor = MINIMUM_VERSIONS.get(provider_type)
    found = parse_version(version)
    if floor is None or found is None or found >= floor:
        return
    wanted = ".".join(str(p) for p in floor)
    raise TerminalError(
        f"{where} runs version {version}, older than {wanted}, the oldest VirtRigaud supports "
        f"for {provider_type}; upgrade it or point spec.endpoint at a supported one",
        field="spec.endpoint",
        cause=Cause.UNSUPPORTED_VERSION,
    )
