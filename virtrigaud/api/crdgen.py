"""CustomResourceDefinitions generated from the Pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 schema: no
`$ref`, a `type` on every node, no `anyOf` except for int-or-string, boolean
`exclusiveMinimum`, nothing nullable. This module does that translation and refuses
anything it does not know how to translate, so that a model change cannot slip an invalid
construct into a CRD.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from virtrigaud import GROUP, VERSION
from virtrigaud.api.base import KubeObject
from virtrigaud.api.kinds import ALL_KINDS, kind_name

CATEGORY = "virtrigaud"
VALIDATIONS = "x-kubernetes-validations"

Schema = dict[str, Any]

# JSONSchemaProps fields that the generator passes through unchanged.
_PASSTHROUGH = {
    "type",
    "format",
    "description",
    "required",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    VALIDATIONS,
}
_DROPPED = {"title"}


class SchemaError(ValueError):
    """A model uses a construct that has no structural-schema equivalent."""


def _merge(base: Schema, overlay: Schema) -> Schema:
    """`overlay` (a field's own keys) wins over `base` (the referenced type); CEL rules add up."""
    merged = {**base, **overlay}
    rules = base.get(VALIDATIONS, []) + overlay.get(VALIDATIONS, [])
    if rules:
        merged[VALIDATIONS] = rules
    return merged


class _Translator:
    def __init__(self, defs: dict[str, Schema], where: str) -> None:
        self._defs = defs
        self._where = where

    def node(self, raw: Schema, path: str) -> Schema:
        raw = dict(raw)
        if "$ref" in raw:
            target = self._deref(raw.pop("$ref"), path)
            return self.node(_merge(target, raw), path)
        if "allOf" in raw:
            parts = raw.pop("allOf")
            if len(parts) != 1:
                raise self._error(path, "allOf with several members")
            return self.node(_merge(parts[0], raw), path)
        if "anyOf" in raw and not raw.get("x-kubernetes-int-or-string"):
            branches = [b for b in raw.pop("anyOf") if b != {"type": "null"}]
            if raw.get("default", ...) is None:
                del raw["default"]
            if len(branches) != 1:
                raise self._error(path, f"a union of {len(branches)} types")
            return self.node(_merge(branches[0], raw), path)
        return self._plain(raw, path)

    def _plain(self, raw: Schema, path: str) -> Schema:
        out: Schema = {}
        for key, value in raw.items():
            if key in _DROPPED:
                continue
            if key == "const":
                out["enum"] = [value]
            elif key == "exclusiveMinimum":
                out["minimum"], out["exclusiveMinimum"] = value, True
            elif key == "exclusiveMaximum":
                out["maximum"], out["exclusiveMaximum"] = value, True
            elif key == "properties":
                out["properties"] = {
                    name: self.described(self.node(sub, f"{path}.{name}"), f"{path}.{name}")
                    for name, sub in value.items()
                }
            elif key == "items":
                out["items"] = self.node(value, f"{path}[]")
            elif key == "additionalProperties":
                if isinstance(value, dict) and value:
                    out["additionalProperties"] = self.node(value, f"{path}{{}}")
                elif "properties" not in raw and value is True:
                    # A free-form map: say so explicitly, or the API server prunes it to {}.
                    out["x-kubernetes-preserve-unknown-fields"] = True
                # A model with extra="allow" says additionalProperties: true; the CRD keeps
                # to the declared fields (unknown ones are pruned by the server).
            elif key == "anyOf":
                out["anyOf"] = value
            elif key == "default" and value is None:
                continue
            elif key in _PASSTHROUGH:
                out[key] = copy.deepcopy(value)
            else:
                raise self._error(path, f"the JSON Schema keyword {key!r}")
        if "type" not in out and not out.get("x-kubernetes-int-or-string"):
            if "enum" in out and all(isinstance(v, str) for v in out["enum"]):
                out["type"] = "string"
            else:
                raise self._error(path, "a node without a type")
        if (
            out.get("type") == "object"
            and "properties" not in out
            and not (
                "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
            )
        ):
            out["x-kubernetes-preserve-unknown-fields"] = True
        return out

    def described(self, node: Schema, path: str) -> Schema:
        """Every field explains itself (`kubectl explain`), and states its default."""
        description = " ".join(str(node.get("description", "")).split())
        if not description:
            raise SchemaError(
                f"{self._where}: field {path} has no description; add a docstring under the "
                "field (or its type) in the model, with units and what unset means"
            )
        if "default" in node and "default" not in description.lower():
            description = f"{description} Defaults to {_default_text(node['default'])}."
        node["description"] = description
        return node

    def _deref(self, ref: str, path: str) -> Schema:
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix) :] not in self._defs:
            raise self._error(path, f"the unresolvable reference {ref!r}")
        return self._defs[ref[len(prefix) :]]

    def _error(self, path: str, what: str) -> SchemaError:
        return SchemaError(
            f"{self._where}: field {path} uses {what}, which a structural CRD schema cannot "
            "express; change the model's type annotation for that field"
        )


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, separators=(",", ":"))


def openapi_schema(model: type[KubeObject]) -> Schema:
    """The structural openAPIV3Schema of one kind."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    translator = _Translator(defs, model.__name__)
    props = raw["properties"]
    properties: Schema = {
        "apiVersion": {
            "type": "string",
            "description": "Versioned schema of this representation of an object.",
        },
        "kind": {"type": "string", "description": "REST resource this object represents."},
        "metadata": {"type": "object"},
        "spec": translator.described(translator.node(props["spec"], "spec"), "spec"),
        "status": translator.described(translator.node(props["status"], "status"), "status"),
    }
    schema: Schema = {"type": "object", "properties": properties}
    if model.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    if "spec" in raw.get("required", []):
        schema["required"] = ["spec"]
    # A status is produced by a controller: no defaults there, or every status write of a
    # partial status would grow fields the controller never set.
    _strip_defaults(properties["status"])
    return schema


def _strip_defaults(node: Schema) -> None:
    node.pop("default", None)
    for sub in node.get("properties", {}).values():
        _strip_defaults(sub)
    if isinstance(node.get("items"), dict):
        _strip_defaults(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        _strip_defaults(node["additionalProperties"])


def crd(model: type[KubeObject]) -> Schema:
    """The CustomResourceDefinition of one kind."""
    info = model.kind_info
    kind = kind_name(model)
    singular = kind.lower()
    version: Schema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(model)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {
                key: value
                for key, value in {
                    "name": col.name,
                    "type": col.type,
                    "jsonPath": col.json_path,
                    "description": col.description or None,
                    "priority": col.priority or None,
                    "format": col.format,
                }.items()
                if value is not None
            }
            for col in info.printer_columns
        ],
    }
    if info.scale is not None:
        scale = {
            "specReplicasPath": info.scale.spec_replicas_path,
            "statusReplicasPath": info.scale.status_replicas_path,
        }
        if info.scale.label_selector_path:
            scale["labelSelectorPath"] = info.scale.label_selector_path
        version["subresources"]["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "virtrigaud"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": info.plural,
                "singular": singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def all_crds() -> list[Schema]:
    return [crd(model) for model in ALL_KINDS]


def crd_filename(crd_obj: Schema) -> str:
    return f"{crd_obj['spec']['group']}_{crd_obj['spec']['names']['plural']}.yaml"


def to_yaml(crd_obj: Schema) -> str:
    """Deterministic YAML: sorted keys, no line wrapping (long regexes and CEL rules stay whole)."""
    return yaml.safe_dump(crd_obj, sort_keys=True, width=1_000_000, allow_unicode=True)


def rendered_crds() -> dict[str, str]:
    """File name -> YAML text, for every CRD."""
    return {crd_filename(c): to_yaml(c) for c in all_crds()}


def write_crds(directory: Path) -> list[Path]:
    """Write one file per CRD into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_crds().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
