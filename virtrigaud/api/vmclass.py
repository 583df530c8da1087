"""VMClass (vmclass): a size and hardware profile for VirtualMachines."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from pydantic.config import JsonDict

from virtrigaud.api.base import (
    ApiModel,
    KindInfo,
    KubeObject,
    PrinterColumn,
    age_column,
    cel,
    validations,
)
from virtrigaud.api.common import (
    POSITIVE_QUANTITY_RULE,
    Quantity,
    ShortText,
    quantity_to_mib,
)
from virtrigaud.api.conditions import Conditions


class Firmware(StrEnum):
    BIOS = "BIOS"
    UEFI = "UEFI"
    EFI = "EFI"


class ClassDiskType(StrEnum):
    THIN = "thin"
    THICK = "thick"
    EAGER_ZEROED_THICK = "eagerzeroedthick"
    SSD = "ssd"
    HDD = "hdd"
    NVME = "nvme"


def _positive_quantity(field: str) -> JsonDict:
    return validations(
        cel(
            POSITIVE_QUANTITY_RULE,
            f"{field} must be a quantity greater than 0, e.g. 4Gi or 512Mi",
        )
    )


class DiskDefaults(ApiModel):
    type: ClassDiskType = ClassDiskType.THIN
    """Default provisioning type."""
    size: Quantity = Field("40Gi", json_schema_extra=_positive_quantity("spec.diskDefaults.size"))
    """Default root disk size."""
    iops: Annotated[int, Field(ge=100, le=100000)] | None = None
    storage_class: Annotated[str, Field(max_length=253)] | None = None


class VMResourceLimits(ApiModel):
    cpu_limit: Annotated[int, Field(ge=100, le=100000)] | None = None
    """CPU limit in MHz."""
    cpu_reservation: Annotated[int, Field(ge=0, le=100000)] | None = None
    """Guaranteed CPU in MHz."""
    memory_limit: Quantity | None = None
    memory_reservation: Quantity | None = None
    cpu_shares: Annotated[int, Field(ge=1, le=1000000)] | None = None


class PerformanceProfile(ApiModel):
    latency_sensitivity: Literal["low", "normal", "high"] = "normal"
    cpu_hot_add_enabled: bool = False
    memory_hot_add_enabled: bool = False
    virtualization_based_security: bool = False
    nested_virtualization: bool = False
    hyper_threading_policy: Literal["auto", "prefer", "avoid", "require"] = "auto"


class EncryptionPolicy(ApiModel):
    enabled: bool = False
    key_provider: Literal["standard", "hardware", "external"] | None = None
    require_encryption: bool = False


class SecurityProfile(ApiModel):
    secure_boot: bool = False
    tpm_enabled: bool = False
    tpm_version: Literal["1.2", "2.0"] | None = None
    vtd_enabled: bool = False
    encryption_policy: EncryptionPolicy | None = None


class VMClassSpec(ApiModel):
    """A VM size and hardware profile."""

    cpu: Annotated[int, Field(ge=1, le=128)]
    """Number of virtual CPUs (1-128)."""
    memory: Quantity = Field(json_schema_extra=_positive_quantity("spec.memory"))
    """Memory as a Kubernetes quantity, e.g. 4Gi."""
    firmware: Firmware = Firmware.BIOS
    disk_defaults: DiskDefaults | None = None
    guest_tools_policy: Literal["install", "skip", "upgrade", "uninstall"] = "install"
    extra_config: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]],
        Field(max_length=50),
    ] = Field(default_factory=dict)
    """Provider-specific key/value settings (e.g. vSphere extraConfig)."""
    resource_limits: VMResourceLimits | None = None
    performance_profile: PerformanceProfile | None = None
    security_profile: SecurityProfile | None = None

    def memory_mib(self) -> int:
        return quantity_to_mib(self.memory)


class VMClassStatus(ApiModel):
    used_by_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that use this class."""
    supported_providers: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    last_validated: datetime | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


class VMClass(KubeObject):
    """A VM size and hardware profile referenced by VirtualMachines."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmclasses",
        short_names=["vmclass"],
        printer_columns=[
            PrinterColumn(name="CPU", type="integer", json_path=".spec.cpu"),
            PrinterColumn(name="Memory", type="string", json_path=".spec.memory"),
            PrinterColumn(name="Firmware", type="string", json_path=".spec.firmware"),
            PrinterColumn(name="Used By", type="integer", json_path=".status.usedByVMs"),
            age_column(),
        ],
    )

    kind: Literal["VMClass"] = "VMClass"
    spec: VMClassSpec
    status: VMClassStatus = Field(default_factory=VMClassStatus)
