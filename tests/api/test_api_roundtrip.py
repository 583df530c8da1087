"""Manifests written for the Go VirtRigaud's v1beta1 API apply to ours with strict field
validation and read back unchanged; `kubectl explain` has a description for every field."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_stack import deep_subset, kubectl, run_kubectl

from virtrigaud.api.crdgen import all_crds
from virtrigaud.api.kinds import ALL_KINDS, kind_name, model_for_kind

pytestmark = pytest.mark.stack
pytest_plugins = ["api_stack"]

MANIFESTS = Path(__file__).parent / "data" / "v1beta1-full-manifests.yaml"
DOCS = list(yaml.safe_load_all(MANIFESTS.read_text()))


def drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [drop_empty(v) for v in value]
    return value


def in_namespace(doc: dict[str, Any], ns: str) -> dict[str, Any]:
    return {**doc, "metadata": {**doc["metadata"], "namespace": ns}}


async def apply_strict(kubeconfig: str, doc: dict[str, Any]) -> tuple[int, str, str]:
    return await run_kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--field-manager=roundtrip",
        "--validate=strict",
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(doc).encode(),
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d["kind"]))
async def test_manifest_applies_strictly_and_reads_back_unchanged(
    kubeconfig: str, ns: str, doc: dict[str, Any]
) -> None:
    status, _, err = await apply_strict(kubeconfig, in_namespace(doc, ns))
    assert status == 0, err
    plural = next(
        c["spec"]["names"]["plural"]
        for c in all_crds()
        if c["spec"]["names"]["kind"] == doc["kind"]
    )
    stored = json.loads(
        await kubectl(
            kubeconfig,
            "get",
            f"{plural}.infra.virtrigaud.io",
            doc["metadata"]["name"],
            "-n",
            ns,
            "-o",
            "json",
        )
    )
    # Every field written is there with the value written (the server adds defaults).
    assert deep_subset(doc["spec"], stored["spec"], "spec") == []
    # Our models read and write the stored object without losing or changing anything
    # (they spell an unset list or map as empty).
    model = model_for_kind(doc["kind"])
    assert drop_empty(model.from_api(stored).to_api()["spec"]) == drop_empty(stored["spec"])


async def test_strict_validation_refuses_an_unknown_field(kubeconfig: str, ns: str) -> None:
    """The check above can fail: a field neither API has is refused, not dropped."""
    doc = next(d for d in DOCS if d["kind"] == "VMNetworkAttachment")
    bad = in_namespace(doc, ns)
    bad["metadata"]["name"] = "typo"
    bad["spec"] = {**bad["spec"], "qos": {**bad["spec"]["qos"], "ingresLimit": 1000}}
    status, _, err = await apply_strict(kubeconfig, bad)
    assert status != 0
    assert ".spec.qos.ingresLimit: field not declared in schema" in err
    status, _, err = await run_kubectl(
        kubeconfig, "create", "--validate=strict", "-f", "-", stdin=json.dumps(bad).encode()
    )
    assert status != 0
    assert 'unknown field "spec.qos.ingresLimit"' in err


# --- kubectl explain --------------------------------------------------------------------------

NO_DESCRIPTION = "<no description>"


def object_paths(node: dict[str, Any], path: str) -> list[str]:
    """Every field of node that has fields of its own (kubectl explain lists their children)."""
    out = []
    target = node.get("items", node) if node.get("type") == "array" else node
    if target.get("properties"):
        out.append(path)
        for name, sub in target["properties"].items():
            out += object_paths(sub, f"{path}.{name}")
    return out


async def explain_all(kubeconfig: str, paths: list[str], at_once: int = 4) -> list[str]:
    gate = asyncio.Semaphore(at_once)

    async def one(path: str) -> str:
        async with gate:
            return await kubectl(kubeconfig, "explain", path)

    return list(await asyncio.gather(*(one(p) for p in paths)))


async def test_kubectl_explain_vm_spec_recursive_lists_every_field(
    kubeconfig: str, crds_installed: None
) -> None:
    out = await kubectl(kubeconfig, "explain", "vm.spec", "--recursive")
    for field in ("providerRef", "importedDisk", "gracefulShutdownTimeout", "revertToRef"):
        assert re.search(rf"^\s+{field}\s+<", out, re.M), field


async def undocumented_by_explain(kubeconfig: str, kind: str, parts: tuple[str, ...]) -> list[str]:
    """Fields `kubectl explain` shows without a description, under the given parts."""
    crd = next(c for c in all_crds() if c["spec"]["names"]["kind"] == kind)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    resource = f"{crd['spec']['names']['plural']}.infra.virtrigaud.io"
    paths = [p for part in parts for p in object_paths(schema["properties"][part], part)]
    # Each `kubectl explain` of an object prints every child field with its description.
    outputs = await explain_all(kubeconfig, [f"{resource}.{path}" for path in paths])
    return [
        f"{path}: {lines[i - 1].strip()}"
        for path, out in zip(paths, outputs, strict=True)
        for lines in [out.splitlines()]
        for i, line in enumerate(lines)
        if NO_DESCRIPTION in line and i > 0
    ]


async def test_kubectl_explain_vm_finds_no_field_without_a_description(
    kubeconfig: str, crds_installed: None
) -> None:
    """Every object of vm.spec and vm.status, one `kubectl explain` each."""
    assert await undocumented_by_explain(kubeconfig, "VirtualMachine", ("spec", "status")) == []


@pytest.mark.parametrize("model", ALL_KINDS, ids=kind_name)
async def test_kubectl_explain_shows_each_kinds_top_fields_described(
    kubeconfig: str, crds_installed: None, model: Any
) -> None:
    for part in ("spec", "status"):
        out = await kubectl(kubeconfig, "explain", f"{kind_name(model).lower()}.{part}")
        assert "FIELDS:" in out and NO_DESCRIPTION not in out


def undescribed(node: dict[str, Any], path: str) -> list[str]:
    out = [] if node.get("description") else [path]
    for name, sub in node.get("properties", {}).items():
        out += undescribed(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += [p for p in undescribed(node["items"], f"{path}[]") if p != f"{path}[]"]
    if isinstance(node.get("additionalProperties"), dict):
        out += [
            p
            for p in undescribed(node["additionalProperties"], f"{path}{{}}")
            if p != f"{path}{{}}"
        ]
    return out


async def test_the_schema_kubectl_explain_reads_describes_every_field_of_every_kind(
    kubeconfig: str, crds_installed: None
) -> None:
    """All kinds at once, from the OpenAPI v3 document the server publishes for kubectl
    (the source of `kubectl explain`), down to the last field."""
    doc = json.loads(
        await kubectl(kubeconfig, "get", "--raw", "/openapi/v3/apis/infra.virtrigaud.io/v1beta1")
    )
    schemas = doc["components"]["schemas"]
    missing = []
    for model in ALL_KINDS:
        published = schemas[f"io.virtrigaud.infra.v1beta1.{kind_name(model)}"]
        for part in ("spec", "status"):
            missing += [
                f"{kind_name(model)}.{p}" for p in undescribed(published["properties"][part], part)
            ]
    assert missing == []
