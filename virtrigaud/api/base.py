"""The base of every API model: camelCase JSON names, lossless round-trips, CEL attachments."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.config import JsonDict

from virtrigaud import API_VERSION

# Words that Kubernetes API conventions (and the Go original's JSON tags) spell as
# initialisms when they are not the first word of a field name.
_INITIALISMS = {
    "id": "ID",
    "ids": "IDs",
    "url": "URL",
    "mib": "MiB",
    "gib": "GiB",
    "vm": "VM",
    "vms": "VMs",
    "ip": "IP",
    "mac": "MAC",
    "cidr": "CIDR",
    "cpu": "CPU",
    "iops": "IOPS",
    "numa": "NUMA",
    "tpm": "TPM",
    "pvc": "PVC",
    "fd": "FD",
    "idx": "IDX",
}


def camel_alias(field_name: str) -> str:
    """`memory_mib` -> `memoryMiB`, `console_url` -> `consoleURL`, `vm_ref` -> `vmRef`,
    `trunk_vlan_ids` -> `trunkVlanIDs`."""
    first, *rest = field_name.split("_")
    return first + "".join(_INITIALISMS.get(word, word[:1].upper() + word[1:]) for word in rest)


class ApiModel(BaseModel):
    """Base of all spec/status parts.

    Unknown keys are kept (`extra="allow"`) so that a read-modify-write by this code of an
    object written against a newer CRD does not drop the newer fields. Field docstrings
    become the CRD's descriptions.
    """

    model_config = ConfigDict(
        alias_generator=camel_alias,
        populate_by_name=True,
        extra="allow",
        use_attribute_docstrings=True,
        use_enum_values=False,
        validate_default=False,
    )


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry. The message must name the field and the fix."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> JsonDict:
    """A `json_schema_extra` carrying CEL rules, for `Field(...)` or `ConfigDict(...)`."""
    entries: list[JsonValue] = [dict(rule) for rule in rules]
    return {"x-kubernetes-validations": entries}


class OwnerReference(ApiModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(ApiModel):
    """The parts of metav1.ObjectMeta the controllers read; everything else is kept as extra."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    owner_references: list[OwnerReference] | None = None


class PrinterColumn(BaseModel):
    """One `additionalPrinterColumns` entry of a CRD."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str | None = None


class ScaleSubresource(BaseModel):
    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str | None = None


class KindInfo(BaseModel):
    """What the CRD needs beyond the schema: names, columns, subresources."""

    plural: str
    short_names: list[str]
    printer_columns: list[PrinterColumn]
    scale: ScaleSubresource | None = None


class KubeObject(ApiModel):
    """A whole API object (apiVersion, kind, metadata, spec, status) of one of our kinds."""

    kind_info: ClassVar[KindInfo]

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> Self:
        """Parse an object as the API server returns it."""
        return cls.model_validate(obj)

    def to_api(self) -> dict[str, Any]:
        """The JSON-ready dict to send to the API server (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def age_column() -> PrinterColumn:
    return PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp")
