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
    """Boot firmware. UEFI and EFI mean the same."""

    BIOS = "BIOS"
    UEFI = "UEFI"
    EFI = "EFI"


class ClassDiskType(StrEnum):
    """Disk provisioning type (provider-specific)."""

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
    """Settings of the VM's root disk."""

    type: ClassDiskType = ClassDiskType.THIN
    """Provisioning type of the root disk."""
    size: Quantity = Field("40Gi", json_schema_extra=_positive_quantity("spec.diskDefaults.size"))
    """Size of the root disk, a quantity such as 40Gi."""
    iops: Annotated[int, Field(ge=100, le=100000)] | None = None
    """IOPS limit of the root disk (100-100000); unlimited when unset."""
    storage_class: Annotated[str, Field(max_length=253)] | None = None
    """Storage class or pool for the root disk (provider-specific)."""


class VMResourceLimits(ApiModel):
    """CPU and memory limits, reservations and shares."""

    cpu_limit: Annotated[int, Field(ge=100, le=100000)] | None = None
    """Most CPU the VM may use, in MHz (100-100000); unlimited when unset."""
    cpu_reservation: Annotated[int, Field(ge=0, le=100000)] | None = None
    """CPU guaranteed to the VM, in MHz."""
    memory_limit: Quantity | None = None
    """Most memory the VM may use, a quantity such as 8Gi; unlimited when unset."""
    memory_reservation: Quantity | None = None
    """Memory guaranteed to the VM, a quantity such as 4Gi."""
    cpu_shares: Annotated[int, Field(ge=1, le=1000000)] | None = None
    """Relative CPU priority against other VMs (higher wins)."""


class PerformanceProfile(ApiModel):
    """Performance-related hardware settings."""

    latency_sensitivity: Literal["low", "normal", "high"] = "normal"
    """Latency sensitivity (vSphere): low, normal or high."""
    cpu_hot_add_enabled: bool = False
    """Allow adding CPUs while the VM runs."""
    memory_hot_add_enabled: bool = False
    """Allow adding memory while the VM runs."""
    virtualization_based_security: bool = False
    """Enable virtualization-based security (Windows guests)."""
    nested_virtualization: bool = False
    """Expose hardware virtualization to the guest."""
    hyper_threading_policy: Literal["auto", "prefer", "avoid", "require"] = "auto"
    """How the VM's vCPUs use hyperthreads."""


class EncryptionPolicy(ApiModel):
    """VM encryption."""

    enabled: bool = False
    """Encrypt the VM."""
    key_provider: Literal["standard", "hardware", "external"] | None = None
    """Where encryption keys come from."""
    require_encryption: bool = False
    """Fail instead of creating an unencrypted VM when encryption is unavailable."""


class SecurityProfile(ApiModel):
    """Security-related hardware settings."""

    secure_boot: bool = False
    """UEFI secure boot (needs firmware UEFI)."""
    tpm_enabled: bool = False
    """Add a virtual TPM."""
    tpm_version: Literal["1.2", "2.0"] | None = None
    """Version of the virtual TPM."""
    vtd_enabled: bool = False
    """Expose Intel VT-d / AMD-Vi (IOMMU) to the guest."""
    encryption_policy: EncryptionPolicy | None = None
    """VM encryption."""


class VMClassSpec(ApiModel):
    """A VM size and hardware profile."""

    cpu: Annotated[int, Field(ge=1, le=128)]
    """Number of virtual CPUs (1-128)."""
    memory: Quantity = Field(json_schema_extra=_positive_quantity("spec.memory"))
    """Memory as a Kubernetes quantity, e.g. 4Gi."""
    firmware: Firmware = Firmware.BIOS
    """Boot firmware: BIOS, UEFI or EFI."""
    disk_defaults: DiskDefaults | None = None
    """Settings of the root disk."""
    guest_tools_policy: Literal["install", "skip", "upgrade", "uninstall"] = "install"
    """What to do with guest tools (VMware Tools, qemu-guest-agent)."""
    extra_config: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]],
        Field(max_length=50),
    ] = Field(default_factory=dict)
    """Provider-specific key/value settings (e.g. vSphere extraConfig)."""
    resource_limits: VMResourceLimits | None = None
    """CPU and memory limits, reservations and shares."""
    performance_profile: PerformanceProfile | None = None
    """Performance-related hardware settings."""
    security_profile: SecurityProfile | None = None
    """Security-related hardware settings."""

    def memory_mib(self) -> int:
        return quantity_to_mib(self.memory)


class ClassValidationResult(ApiModel):
    """Whether the class works on one Provider."""

    valid: bool
    """Whether the class can be used on the Provider."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    warnings: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    """Settings the Provider ignores or adjusts."""
    last_validated: datetime | None = None
    """When this was last checked."""


class VMClassStatus(ApiModel):
    """Observed state of a VMClass."""

    used_by_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that use this class."""
    supported_providers: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Providers the class can be used on."""
    validation_results: Annotated[dict[str, ClassValidationResult], Field(max_length=256)] = Field(
        default_factory=dict
    )
    """Per Provider: whether the class can be used there."""
    last_validated: datetime | None = None
    """When the class was last checked against the Providers."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Validated."""


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
