"""docs/field-support.md, rendered from the field support table (a test fails on drift)."""

from __future__ import annotations

from pathlib import Path

from virtrigaud.api.field_support import SUPPORT, Support
from virtrigaud.api.kinds import ALL_KINDS, kind_name
from virtrigaud.api.provider import ProviderType

COLUMNS = (
    (ProviderType.VSPHERE, "vSphere"),
    (ProviderType.LIBVIRT, "libvirt"),
    (ProviderType.PROXMOX, "Proxmox VE"),
)

HEADER = """\
# Field support

<!-- Generated from virtrigaud/api/field_support.py by `make crds`; do not edit. -->

The API accepts every field of the Go VirtRigaud's `infra.virtrigaud.io/v1beta1` kinds, so
manifests written for it apply unchanged. Accepting a field is not acting on it: the tables
below say, per kind and Provider type, which fields this release honours.

- **yes**: a Provider of that type acts on the field.
- **no**: the field is accepted and stored, and has no effect.
- **—**: the block is addressed to another Provider type.

An entry covers the field and everything below it. A VirtualMachine whose spec (or whose
VMClass's spec) sets a field marked **no** for its Provider's type gets the condition
`FieldsNotSupported` (status `True`, reason `NotSupportedBy<Type>`) listing the field
paths, and one Warning Event `FieldsNotSupported` each time that list changes; everything
else on the VM still converges. A field left at its default value is not reported: the API
server fills defaults in, so they cannot be told apart from values written by hand.
"""


def _cell(entry: Support, ptype: ProviderType, addressed: bool) -> str:
    if not addressed:
        return "—"
    return "yes" if ptype in entry.honoured_by else "no"


def _kind_section(kind: str) -> list[str]:
    entries = SUPPORT[kind]
    lines = [f"## {kind}", ""]
    lines.append("| Field | " + " | ".join(name for _, name in COLUMNS) + " | Notes |")
    lines.append("|---|" + "---|" * len(COLUMNS) + "---|")
    for entry in entries:
        scopes = [
            e.only_for
            for e in entries
            if e.only_for is not None
            and (entry.path == e.path or entry.path.startswith(f"{e.path}."))
        ]
        cells = [
            _cell(entry, ptype, all(ptype in scope for scope in scopes)) for ptype, _ in COLUMNS
        ]
        note = entry.note.replace("|", "\\|")
        lines.append(f"| `{entry.path}` | " + " | ".join(cells) + f" | {note} |")
    lines.append("")
    return lines


def render() -> str:
    lines = [HEADER]
    for model in ALL_KINDS:
        lines += _kind_section(kind_name(model))
    return "\n".join(lines).rstrip("\n") + "\n"


def write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
