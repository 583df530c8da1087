"""The VirtRigaud API (infra.virtrigaud.io/v1beta1): typed models, the source of the CRDs."""

from virtrigaud.api.base import KubeObject, ObjectMeta
from virtrigaud.api.conditions import Condition, get_condition, set_condition
from virtrigaud.api.kinds import ALL_KINDS, model_for_kind
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

__all__ = [
    "ALL_KINDS",
    "Condition",
    "KubeObject",
    "ObjectMeta",
    "Provider",
    "VMClass",
    "VMClone",
    "VMImage",
    "VMMigration",
    "VMNetworkAttachment",
    "VMPlacementPolicy",
    "VMSet",
    "VMSnapshot",
    "VirtualMachine",
    "get_condition",
    "model_for_kind",
    "set_condition",
]
