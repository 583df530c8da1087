"""The ten kinds of group infra.virtrigaud.io/v1beta1, in the order CRDs are written."""

from __future__ import annotations

from virtrigaud.api.base import KubeObject
from virtrigaud.api.provider import Provider
from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.api.vmclass import VMClass
from virtrigaud.api.vmclone import VMClone
from virtrigaud.api.vmimage import VMImage
from virtrigaud.api.vmmigration import VMMigration
from virtrigaud.api.vmnetworkattachment import VMNetworkAttachment
from virtrigaud.api.vmplacementpolicy import VMPlacementPolicy
from virtrigaud.api.vmset import VMSet
from virtrigaud.api.vmsnapshot import VMSnapshot

ALL_KINDS: tuple[type[KubeObject], ...] = (
    VirtualMachine,
    Provider,
    VMClass,
    VMImage,
    VMSnapshot,
    VMClone,
    VMMigration,
    VMSet,
    VMPlacementPolicy,
    VMNetworkAttachment,
)


def kind_name(model: type[KubeObject]) -> str:
    """The `kind` string of a model class (its Literal default)."""
    value = model.model_fields["kind"].default
    if not isinstance(value, str):
        raise TypeError(f"{model.__name__}.kind has no string default")
    return value


def model_for_kind(kind: str) -> type[KubeObject]:
    for model in ALL_KINDS:
        if kind_name(model) == kind:
            return model
    known = ", ".join(kind_name(m) for m in ALL_KINDS)
    raise KeyError(f"{kind!r} is not a kind of group infra.virtrigaud.io; known kinds: {known}")
