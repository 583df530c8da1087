"""The generated CRDs are structural, complete and checked in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtrigaud import GROUP, VERSION
from virtrigaud.api.crdgen import SchemaError, _Translator, all_crds, rendered_crds
from virtrigaud.api.kinds import ALL_KINDS, kind_name

CRD_DIR = Path(__file__).resolve().parents[2] / "helm" / "virtrigaud" / "crds"
REGENERATE = "run `virtrigaud crds --output-dir helm/virtrigaud/crds` and commit the result"

SHORT_NAMES = {
    "VirtualMachine": "vm",
    "Provider": "prov",
    "VMClass": "vmclass",
    "VMImage": "vmimg",
    "VMSnapshot": "vmsnap",
    "VMClone": "vmclone",
    "VMMigration": "vmmig",
    "VMSet": "vmset",
    "VMPlacementPolicy": "vmpp",
    "VMNetworkAttachment": "vmnet",
}

# Keywords a structural schema may carry (apiextensions JSONSchemaProps, minus the ones the
# structural rules forbid outside special places: $ref, allOf, oneOf, not, nullable...).
ALLOWED_KEYS = {
    "type",
    "format",
    "description",
    "properties",
    "items",
    "required",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "additionalProperties",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
}


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


CRDS = all_crds()


def nodes() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for crd in CRDS:
        for path, node in walk(schema_of(crd)):
            yield crd["spec"]["names"]["kind"], path, node


def by_kind() -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in CRDS}


def resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    node = schema
    for part in json_path.strip(".").split("."):
        node = node["properties"][part]
    return node


# --- drift ----------------------------------------------------------------------------------


def test_checked_in_crds_match_the_models() -> None:
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in CRD_DIR.glob("*.yaml")}
    generated = rendered_crds()
    missing = sorted(set(generated) - set(on_disk))
    stale = sorted(set(on_disk) - set(generated))
    changed = sorted(n for n in generated if n in on_disk and on_disk[n] != generated[n])
    assert not (missing or stale or changed), (
        f"helm/virtrigaud/crds is out of date with virtrigaud/api (missing: {missing}, "
        f"no longer generated: {stale}, changed: {changed}): {REGENERATE}"
    )


def test_rendering_is_deterministic() -> None:
    assert rendered_crds() == rendered_crds()


# --- structural-schema rules ----------------------------------------------------------------


def test_every_node_has_a_type_or_is_int_or_string() -> None:
    untyped = [
        f"{kind}{path}"
        for kind, path, node in nodes()
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []


def test_only_structural_keywords_are_used() -> None:
    bad = [
        f"{kind}{path}: {sorted(set(node) - ALLOWED_KEYS)}"
        for kind, path, node in nodes()
        if set(node) - ALLOWED_KEYS
    ]
    assert bad == []


def test_any_of_appears_only_as_int_or_string() -> None:
    for kind, path, node in nodes():
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, f"{kind}{path}"
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], f"{kind}{path}"


def test_no_nullable_and_no_null_defaults() -> None:
    for kind, path, node in nodes():
        assert "nullable" not in node, f"{kind}{path}"
        assert node.get("default", 0) is not None, f"{kind}{path}"


def test_objects_declare_their_fields() -> None:
    """Free-form objects would need x-kubernetes-preserve-unknown-fields; none are wanted."""
    for kind, path, node in nodes():
        if node.get("type") == "object" and path != ".metadata":
            assert "properties" in node or "additionalProperties" in node, f"{kind}{path}"
            assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"


def test_cel_cost_is_bounded() -> None:
    """Unbounded strings, lists and maps make the API server reject CEL rules on cost."""
    for kind, path, node in nodes():
        where = f"{kind}{path}"
        free_text = "enum" not in node and "format" not in node
        if node.get("type") == "string" and free_text and path not in (".apiVersion", ".kind"):
            assert "maxLength" in node, f"{where} needs maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{where} needs maxItems"
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{where} needs maxProperties"


def test_list_map_keys_are_required_in_items() -> None:
    for kind, path, node in nodes():
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), f"{kind}{path}"


def test_status_carries_no_defaults() -> None:
    for crd in CRDS:
        for path, node in walk(schema_of(crd)["properties"]["status"]):
            assert "default" not in node, f"{crd['spec']['names']['kind']}.status{path}"


def test_every_cel_rule_has_a_message_naming_a_field() -> None:
    rules = [
        (kind, path, node, rule)
        for kind, path, node in nodes()
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 12
    for kind, path, node, rule in rules:
        if node.get("type") == "string":
            # A value check: the API server puts the field's path before the message.
            message = rule["message"]
            assert message.startswith(("must ", "spec.")), f"{kind}{path}: {message}"
        else:
            assert "spec." in rule["message"], f"{kind}{path}: {rule['message']}"
        if "fieldPath" in rule:
            # Raises KeyError when the path names no field of the node the rule sits on.
            assert resolve(node, rule["fieldPath"]), f"{kind}{path}: {rule['fieldPath']}"


def test_translator_refuses_unions_and_unknown_keywords() -> None:
    translator = _Translator({}, "Example")
    with pytest.raises(SchemaError, match=r"Example: field spec.x uses a union of 2 types"):
        translator.node({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, "spec.x")
    with pytest.raises(SchemaError, match="'uniqueItems'"):
        translator.node({"type": "array", "uniqueItems": True}, "spec.y")
    with pytest.raises(SchemaError, match="unresolvable reference"):
        translator.node({"$ref": "#/$defs/Missing"}, "spec.z")


def test_translator_makes_optionals_plain_and_exclusive_bounds_boolean() -> None:
    translator = _Translator({"Ref": {"type": "object", "properties": {}}}, "Example")
    optional = translator.node(
        {"anyOf": [{"$ref": "#/$defs/Ref"}, {"type": "null"}], "default": None}, "spec.r"
    )
    assert optional == {"type": "object", "properties": {}}
    positive = translator.node({"type": "number", "exclusiveMinimum": 0}, "spec.q")
    assert positive == {"type": "number", "minimum": 0, "exclusiveMinimum": True}


# --- names, subresources, columns -----------------------------------------------------------


def test_ten_namespaced_kinds_with_short_names_and_category() -> None:
    crds = by_kind()
    assert set(crds) == set(SHORT_NAMES)
    for kind, crd in crds.items():
        spec = crd["spec"]
        assert spec["group"] == GROUP
        assert spec["scope"] == "Namespaced"
        assert spec["names"]["shortNames"] == [SHORT_NAMES[kind]]
        assert spec["names"]["categories"] == ["virtrigaud"]
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{GROUP}"
        assert [v["name"] for v in spec["versions"]] == [VERSION]


def test_status_subresource_everywhere_and_scale_only_where_replicas_exist() -> None:
    for kind, crd in by_kind().items():
        version = crd["spec"]["versions"][0]
        assert version["subresources"]["status"] == {}
        scale = version["subresources"].get("scale")
        if scale is None:
            continue
        assert kind == "VMSet"
        schema = schema_of(crd)
        for key in ("specReplicasPath", "statusReplicasPath", "labelSelectorPath"):
            assert resolve(schema, scale[key])["type"] in ("integer", "string"), key


def test_virtual_machine_printer_columns_in_order() -> None:
    columns = by_kind()["VirtualMachine"]["spec"]["versions"][0]["additionalPrinterColumns"]
    default_columns = [c["name"] for c in columns if not c.get("priority")]
    assert default_columns == ["Phase", "Power", "Provider", "Class", "IPs", "Shard", "Age"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("Provider", ["Type", "Endpoint", "Healthy", "Connected VMs"]),
        ("VMMigration", ["Source", "Target", "Phase", "Progress"]),
        ("VMSnapshot", ["VM", "Phase", "Size", "Created", "Expires"]),
        ("VMSet", ["Desired", "Current", "Ready", "Updated"]),
    ],
)
def test_printer_columns_as_upstream(kind: str, expected: list[str]) -> None:
    columns = by_kind()[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns][: len(expected)] == expected


def test_printer_column_paths_exist_in_the_schema() -> None:
    for kind, crd in by_kind().items():
        schema = schema_of(crd)
        for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
            if column["jsonPath"].startswith(".metadata."):
                continue
            node = resolve(schema, column["jsonPath"])
            expected = {"string": {"string", "array"}, "date": {"string"}}.get(
                column["type"], {column["type"]}
            )
            assert node.get("type", "string") in expected, f"{kind} {column['name']}"


def test_go_compatible_field_names() -> None:
    vm = schema_of(by_kind()["VirtualMachine"])
    assert "sizeGiB" in resolve(vm, ".spec.disks")["items"]["properties"]
    assert {"memoryMiB", "cpu", "gpu"} <= set(resolve(vm, ".spec.resources")["properties"])
    assert {"consoleURL", "lastTaskRef", "reconfigureTaskRef", "shard"} <= set(
        resolve(vm, ".status")["properties"]
    )
    assert "diskID" in resolve(vm, ".spec.importedDisk")["properties"]
    provider = schema_of(by_kind()["Provider"])
    assert "connectedVMs" in resolve(provider, ".status")["properties"]
    runtime = resolve(provider, ".spec.runtime")
    assert "provider.v1 server" in runtime["description"]
    assert {"endpoint", "phase", "circuit"} <= set(
        resolve(provider, ".status.runtime")["properties"]
    )
    assert {"image", "service", "affinity", "env"} <= set(runtime["properties"])


def test_every_model_kind_generates_one_crd() -> None:
    assert [kind_name(m) for m in ALL_KINDS] == [c["spec"]["names"]["kind"] for c in CRDS]


def test_checked_in_files_are_single_documents() -> None:
    for path in CRD_DIR.glob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition", path.name
