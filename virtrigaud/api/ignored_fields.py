"""The fields set on an object that its Provider type (or this release) does not act on.

Pure: the object's spec as the API server stores it, the kind and the Provider type in;
field paths out, read against ``field_support.SUPPORT``. A field counts as set when it
holds something other than its schema default: the API server fills defaults in, so a
default cannot be told apart from a value the user wrote, and the default is what every
Provider does anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from virtrigaud.api.crdgen import Schema, openapi_schema
from virtrigaud.api.field_support import SUPPORT, Support
from virtrigaud.api.kinds import model_for_kind
from virtrigaud.api.provider import ProviderType

# A path as segments: "spec", "disks", "[]" (pattern) or "[2]" (concrete), "scsi", ...
Segments = tuple[str, ...]


def join(segments: Sequence[str]) -> str:
    """("spec", "disks", "[0]", "scsi") -> "spec.disks[0].scsi"."""
    out = ""
    for seg in segments:
        out += seg if seg.startswith("[") or not out else f".{seg}"
    return out


def split(path: str) -> Segments:
    """ "spec.disks[].scsi" -> ("spec", "disks", "[]", "scsi")."""
    out: list[str] = []
    for part in path.split("."):
        name, bracket, rest = part.partition("[")
        out.append(name)
        while bracket:
            index, _, rest = rest.partition("]")
            out.append(f"[{index}]")
            _, bracket, rest = rest.partition("[")
    return tuple(out)


@functools.cache
def spec_schema(kind: str) -> Schema:
    """The structural schema of a kind's spec, as the CRD carries it."""
    schema: Schema = openapi_schema(model_for_kind(kind))["properties"]["spec"]
    return schema


def _is_set(value: Any, node: Schema) -> bool:
    if value is None or value == "" or value == [] or value == {}:
        return False
    return "default" not in node or value != node["default"]


def set_leaves(value: Any, node: Schema, at: Segments) -> Iterator[tuple[Segments, Segments]]:
    """(concrete path, pattern path) of every leaf in value that holds a non-default value.

    Objects with declared fields are walked; so are lists of such objects; anything else
    (scalars, lists of scalars, maps) is a leaf.
    """
    props = node.get("properties")
    items = node.get("items")
    if props and isinstance(value, Mapping):
        for name, sub in value.items():
            if name in props:
                for concrete, pattern in set_leaves(sub, props[name], (*at, name)):
                    yield concrete, pattern
    elif isinstance(items, dict) and items.get("properties") and isinstance(value, list):
        for i, element in enumerate(value):
            for concrete, pattern in set_leaves(element, items, (*at, "[]")):
                yield (*concrete[: len(at)], f"[{i}]", *concrete[len(at) + 1 :]), pattern
    elif _is_set(value, node):
        yield at, at


def _covers(entry: Segments, pattern: Segments) -> bool:
    return pattern[: len(entry)] == entry


def entries_for(kind: str, pattern: Segments) -> list[Support]:
    """The table's entries covering a field, shortest path first."""
    found = [s for s in SUPPORT.get(kind, ()) if _covers(split(s.path), pattern)]
    return sorted(found, key=lambda s: len(split(s.path)))


@functools.lru_cache(maxsize=4096)
def _verdict(kind: str, pattern: Segments, ptype: ProviderType) -> int | None:
    """For one field pattern: None when honoured (or addressed to another Provider type),
    else how many leading segments of its path to report. A pass reconciles thousands of
    VMs with the same few patterns, so this is looked up once per pattern."""
    entries = entries_for(kind, pattern)
    if any(e.only_for is not None and ptype not in e.only_for for e in entries):
        return None  # addressed to another Provider type
    decisive = entries[-1] if entries else None
    if decisive is not None and ptype in decisive.honoured_by:
        return None
    return _report_depth(kind, decisive, pattern)


def ignored_fields(kind: str, spec: Mapping[str, Any], provider_type: str) -> list[str]:
    """Field paths set in ``spec`` that a ``provider_type`` Provider does not act on.

    Each path is the table entry's path with the object's list indices, e.g.
    ``spec.disks[1].scsi`` for any of that disk's scsi settings; sorted, no repeats.
    """
    ptype = ProviderType(provider_type)
    out: set[str] = set()
    for concrete, pattern in set_leaves(spec, spec_schema(kind), ("spec",)):
        depth = _verdict(kind, pattern, ptype)
        if depth is not None:
            out.add(join(concrete[:depth]))
    return sorted(out)


def _report_depth(kind: str, decisive: Support | None, pattern: Segments) -> int:
    """How much of a field's path to name: the entry's own path, unless the entry is a
    catch-all with more specific entries below it (then the field itself), and never just
    "spec"."""
    if decisive is None:
        return len(pattern)
    depth = len(split(decisive.path))
    if any(
        len(split(s.path)) > depth and _covers(split(decisive.path), split(s.path))
        for s in SUPPORT.get(kind, ())
    ):
        return len(pattern)
    return max(depth, 2)
