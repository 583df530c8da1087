"""Our CRDs accept every spec field of the Go VirtRigaud's v1beta1 API, with its types, enum
values and defaults, and keep its status field names.

The facts come from the original's generated CRDs: the shared research list of spec
paths (../shared/research/upstream-api-spec-paths.json, when present) and the copy in
tests/api/data/upstream_v1beta1.json, which adds each path's type, enum and default.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtrigaud.api.crdgen import all_crds

REPO = Path(__file__).resolve().parents[2]
FACTS = json.loads((Path(__file__).parent / "data" / "upstream_v1beta1.json").read_text())
SHARED_CANDIDATES = (
    REPO.parent / "shared" / "research" / "upstream-api-spec-paths.json",
    Path("/work/shared/research/upstream-api-spec-paths.json"),
)

# Where ours deliberately accepts less than the original, and why. Anything else that the
# original accepts and ours does not fails the tests below.
ENUM_EXCEPTIONS = {
    ("Provider", "spec.type"): {"firecracker", "qemu"},  # no provider for them in either
    # The original lists the YAML numbers 1.2 and 2 for a string field, so no string can
    # match them; ours accepts "1.2" and "2.0".
    ("VMClass", "spec.securityProfile.tpmVersion"): {"1.2", "2"},
}
# Where ours is a superset of the original's type.
WIDER_TYPES = {
    ("integer", "number"),  # Provider.spec.rateLimit.qps: fractional rates allowed
    ("string", "int-or-string"),  # quantities: 100Gi or 107374182400
}
STATUS_EXEMPT = {
    # The original's VM adoption controller does not exist here (VMs are not adopted), and
    # no provider Deployment is managed, so no field reports its replicas.
    "Provider": (
        "status.adoption",
        "status.runtime.serviceRef",
        "status.runtime.readyReplicas",
        "status.runtime.availableReplicas",
    ),
}


def shared_spec_paths() -> dict[str, list[str]]:
    for path in SHARED_CANDIDATES:
        if path.exists():
            data: dict[str, list[str]] = json.loads(path.read_text())
            return data
    pytest.skip(
        "the shared research list upstream-api-spec-paths.json is not here (looked in "
        f"{', '.join(str(p) for p in SHARED_CANDIDATES)}); "
        "tests/api/data/upstream_v1beta1.json carries the same paths and is checked below"
    )


def flatten(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field path the way the original's list writes them: `a.b`, list items `a[].b`."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from flatten(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from flatten(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from flatten(node["additionalProperties"], f"{path}{{}}")


def our_fields(crds: list[dict[str, Any]], part: str) -> dict[str, dict[str, dict[str, Any]]]:
    out = {}
    for crd in crds:
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][part]
        out[crd["spec"]["names"]["kind"]] = dict(flatten(schema, part))
    return out


def missing_paths(
    crds: list[dict[str, Any]], expected: dict[str, list[str]], part: str = "spec"
) -> list[str]:
    ours = our_fields(crds, part)
    return [f"{kind}.{p}" for kind, paths in expected.items() for p in paths if p not in ours[kind]]


def type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    return str(node.get("type", "object"))


def test_every_upstream_spec_path_is_in_our_crds() -> None:
    expected = shared_spec_paths()
    missing = missing_paths(all_crds(), expected)
    total = sum(len(paths) for paths in expected.values())
    assert total == 1167
    assert not missing, (
        f"{len(missing)} of the original's {total} spec paths are missing: {missing}"
    )


def test_the_path_check_notices_a_missing_field() -> None:
    crds = copy.deepcopy(all_crds())
    provider = next(c for c in crds if c["spec"]["names"]["kind"] == "Provider")
    spec = provider["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec["properties"]["runtime"]["properties"]["service"]["properties"]["tls"]
    missing = missing_paths(crds, {k: list(v) for k, v in FACTS["spec"].items()})
    assert "Provider.spec.runtime.service.tls.secretRef.name" in missing
    assert len(missing) == 5  # tls and its four fields


def test_the_copied_facts_match_the_shared_list() -> None:
    expected = shared_spec_paths()
    assert {k: sorted(v) for k, v in expected.items()} == {
        k: sorted(v) for k, v in FACTS["spec"].items()
    }


def test_types_enums_and_defaults_match_the_original() -> None:
    ours = our_fields(all_crds(), "spec")
    problems = []
    for kind, facts in FACTS["spec"].items():
        for path, fact in facts.items():
            node = ours[kind].get(path)
            if node is None:
                problems.append(f"{kind}.{path}: missing")
                continue
            theirs, mine = fact["type"], type_of(node)
            if theirs != mine and (theirs, mine) not in WIDER_TYPES:
                problems.append(f"{kind}.{path}: type {mine}, the original's is {theirs}")
            if "enum" in fact and "enum" in node:
                refused = set(fact["enum"]) - {str(v) for v in node["enum"]}
                refused -= ENUM_EXCEPTIONS.get((kind, path), set())
                if refused:
                    problems.append(f"{kind}.{path}: enum lacks {sorted(refused)}")
            if "default" in fact and node.get("default") != fact["default"]:
                problems.append(
                    f"{kind}.{path}: default {node.get('default')!r}, "
                    f"the original's is {fact['default']!r}"
                )
    assert not problems, "\n".join(problems)


def test_the_original_status_field_names_are_kept() -> None:
    ours = our_fields(all_crds(), "status")
    missing = [
        f"{kind}.{path}"
        for kind, paths in FACTS["status"].items()
        for path in paths
        if path not in ours[kind] and not path.startswith(STATUS_EXEMPT.get(kind, ("~",)))
    ]
    assert not missing, missing
    kept = sum(1 for kind, paths in FACTS["status"].items() for path in paths if path in ours[kind])
    assert kept >= 270, kept
