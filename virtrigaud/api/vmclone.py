"""VMClone (vmclone): a new VirtualMachine made from a VM, snapshot, template or image."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

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
    DNS_SUBDOMAIN,
    Annotations,
    Duration,
    Labels,
    LocalObjectReference,
    ObjectRef,
    ShortText,
)
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.virtualmachine import (
    IPV4_PATTERN,
    MAC_PATTERN,
    DiskSpec,
    Placement,
    UserData,
    VirtualMachineResources,
    VMNetworkRef,
)

FINALIZER = "clone.infra.virtrigaud.io/finalizer"


class CloneSource(ApiModel):
    """What to clone: exactly one of vmRef, snapshotRef, templateRef and imageRef."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.vmRef) ? 1 : 0) + (has(self.snapshotRef) ? 1 : 0) "
                "+ (has(self.templateRef) ? 1 : 0) + (has(self.imageRef) ? 1 : 0) == 1",
                "spec.source must set exactly one of vmRef, snapshotRef, templateRef and "
                "imageRef; remove the others",
            )
        )
    )

    vm_ref: LocalObjectReference | None = None
    """A VirtualMachine in the same namespace."""
    snapshot_ref: LocalObjectReference | None = None
    """A VMSnapshot in the same namespace."""
    template_ref: ObjectRef | None = None
    """A hypervisor template, named by a VMImage."""
    image_ref: ObjectRef | None = None
    """A VMImage."""


class CloneTarget(ApiModel):
    """The VirtualMachine the clone becomes."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    """Name of the VirtualMachine to create."""
    namespace: Annotated[str, Field(max_length=63)] | None = None
    """Namespace of the new VirtualMachine; the VMClone's own when unset."""
    provider_ref: ObjectRef | None = None
    """Provider of the new VM; the source's when unset."""
    class_ref: ObjectRef | None = None
    """VMClass of the new VM; the source's when unset."""
    placement_ref: LocalObjectReference | None = None
    """VMPlacementPolicy of the new VM."""
    networks: Annotated[list[VMNetworkRef], Field(max_length=10)] = Field(default_factory=list)
    """Network interfaces of the new VM; the source's when empty."""
    disks: Annotated[list[DiskSpec], Field(max_length=20)] = Field(default_factory=list)
    """Disks of the new VM beyond the root disk; the source's when empty."""
    placement: Placement | None = None
    """Placement hints for the new VM."""
    resources: VirtualMachineResources | None = None
    """CPU and memory overrides for the new VM."""
    labels: Labels = Field(default_factory=dict)
    """Labels for the new VirtualMachine."""
    annotations: Annotations = Field(default_factory=dict)
    """Annotations for the new VirtualMachine."""


class RetryPolicy(ApiModel):
    """Retries of a failed clone."""

    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    """Retries before the clone is Failed (0-10)."""
    retry_delay: Duration = "5m"
    """Wait before the first retry (a duration, e.g. 5m)."""
    backoff_multiplier: Annotated[int, Field(ge=1, le=10)] = 2
    """Factor the wait grows by per retry (1-10)."""


class ClonePerformance(ApiModel):
    """How hard the clone may push the hypervisor."""

    priority: Literal["Low", "Normal", "High"] = "Normal"
    """Priority of the clone operation."""
    io_throttling: bool = False
    """Throttle disk I/O while cloning."""
    max_iops: Annotated[int, Field(ge=100, le=100000)] | None = None
    """Most IOPS while cloning (100-100000)."""
    concurrent_disks: Annotated[int, Field(ge=1, le=10)] = 2
    """Disks copied at once (1-10)."""


class CloneStorage(ApiModel):
    """Where and how the clone's disks are stored."""

    datastore: ShortText | None = None
    """Datastore (Proxmox VE: storage) for the cloned disks."""
    folder: ShortText | None = None
    """vSphere VM folder for the clone."""
    disk_format: Literal["thin", "thick", "eagerzeroedthick", "ssd", "hdd", "nvme"] | None = None
    """Provisioning type of the cloned disks."""
    prefer_thin_provisioning: bool = True
    """Thin-provision the cloned disks where possible."""
    storage_class: Annotated[str, Field(max_length=253)] | None = None
    """Storage class or pool for the cloned disks."""
    enable_compression: bool = False
    """Compress data while cloning."""


class CloneOptions(ApiModel):
    """How the clone is made."""

    type: Literal["FullClone", "LinkedClone", "InstantClone"] = "FullClone"
    """FullClone copies all disks; LinkedClone shares the source's disks copy-on-write;
    InstantClone also shares the running memory state (vSphere)."""
    power_on: bool = False
    """Power the new VM on once it exists."""
    timeout: Duration = "30m"
    """Fail the clone when it has not finished after this long (a duration, e.g. 30m)."""
    retry_policy: RetryPolicy | None = None
    """Retries of a failed clone."""
    include_snapshots: bool = False
    """Copy the source's snapshots too."""
    parallel: bool = False
    """Copy disks in parallel where the hypervisor can."""
    performance: ClonePerformance | None = None
    """How hard the clone may push the hypervisor."""
    storage: CloneStorage | None = None
    """Where and how the clone's disks are stored."""


class SecretValue(ApiModel):
    """A secret value, from a Secret (recommended) or inline."""

    secret_ref: LocalObjectReference | None = None
    """Secret holding the value."""
    secret_key: ShortText = "password"
    """Key of the value in the Secret."""
    value: Annotated[str, Field(max_length=1024)] | None = None
    """The value in plain text (visible to anyone who can read the VMClone)."""


class DomainJoin(ApiModel):
    """Join a Windows domain."""

    domain: ShortText
    """Domain to join."""
    username: ShortText
    """Account allowed to join computers."""
    password: SecretValue
    """Password of that account."""
    organizational_unit: Annotated[str, Field(max_length=500)] | None = None
    """OU for the computer account."""


class SysprepCustomization(ApiModel):
    """Windows sysprep settings."""

    enabled: bool = False
    """Run sysprep."""
    admin_password: SecretValue | None = None
    """Administrator password."""
    join_domain: DomainJoin | None = None
    """Join a domain."""
    product_key: Annotated[str, Field(max_length=64)] | None = None
    """Windows product key."""
    organization: ShortText | None = None
    """Registered organization."""
    owner: ShortText | None = None
    """Registered owner."""
    custom_commands: Annotated[
        list[Annotated[str, Field(max_length=1000)]], Field(max_length=20)
    ] = Field(default_factory=list)
    """Commands run during sysprep."""


class NetworkCustomization(ApiModel):
    """Guest network settings of one interface."""

    name: ShortText
    """The interface to configure (a name from target.networks or the source's)."""
    dhcp: bool | None = None
    """Use DHCP."""
    ip_address: Annotated[str, Field(pattern=IPV4_PATTERN, max_length=15)] | None = None
    """Static IPv4 address."""
    subnet_mask: Annotated[str, Field(pattern=IPV4_PATTERN, max_length=15)] | None = None
    """Subnet mask, e.g. 255.255.255.0."""
    gateway: Annotated[str, Field(pattern=IPV4_PATTERN, max_length=15)] | None = None
    """Default gateway."""
    dns: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=5)] = Field(
        default_factory=list
    )
    """DNS server addresses."""
    mac_address: Annotated[str, Field(pattern=MAC_PATTERN, max_length=17)] | None = None
    """MAC address of the interface."""


class CertificateSpec(ApiModel):
    """A certificate installed in the guest."""

    name: ShortText
    """Name of the certificate."""
    data: Annotated[str, Field(max_length=65536)] | None = None
    """PEM data, inline."""
    secret_ref: LocalObjectReference | None = None
    """Secret holding the PEM data."""
    secret_key: ShortText = "tls.crt"
    """Key of the PEM data in the Secret."""
    store: Literal["root", "ca", "my", "trust"] = "root"
    """Certificate store to install into."""


class GuestCommand(ApiModel):
    """A command run in the guest."""

    command: Annotated[str, Field(min_length=1, max_length=1000)]
    """The command."""
    arguments: Annotated[list[Annotated[str, Field(max_length=1000)]], Field(max_length=20)] = (
        Field(default_factory=list)
    )
    """Its arguments."""
    working_directory: Annotated[str, Field(max_length=500)] | None = None
    """Directory to run in."""
    run_as_user: ShortText | None = None
    """User to run as."""
    timeout: Duration = "5m"
    """Fail the command after this long (a duration, e.g. 5m)."""
    stage: Literal["pre-customization", "post-customization", "first-boot"] = "post-customization"
    """When to run the command."""


class CloneCustomization(ApiModel):
    """Guest customization of the clone."""

    hostname: Annotated[str, Field(max_length=63)] | None = None
    """Host name of the new VM."""
    domain: ShortText | None = None
    """DNS domain of the new VM."""
    time_zone: Annotated[str, Field(max_length=100)] | None = None
    """Time zone, e.g. Europe/Berlin."""
    networks: Annotated[list[NetworkCustomization], Field(max_length=10)] = Field(
        default_factory=list
    )
    """Guest network settings per interface."""
    user_data: UserData | None = None
    """cloud-init or Ignition data for the clone."""
    sysprep: SysprepCustomization | None = None
    """Windows sysprep settings."""
    guest_commands: Annotated[list[GuestCommand], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Commands run in the guest."""
    certificates: Annotated[list[CertificateSpec], Field(max_length=10)] = Field(
        default_factory=list
    )
    """Certificates installed in the guest."""
    tags: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)
    """Tags for the new VM."""


class CloneMetadata(ApiModel):
    """Descriptive data about the clone operation."""

    created_by: ShortText | None = None
    """Who or what asked for the clone."""
    project: ShortText | None = None
    """Project the clone belongs to."""
    environment: Literal["dev", "staging", "prod", "test", "qa", "uat"] | None = None
    """Environment of the clone."""
    purpose: (
        Literal["backup", "testing", "migration", "development", "production", "staging"] | None
    ) = None
    """Why the clone is made."""
    tags: Annotated[dict[str, Annotated[str, Field(max_length=255)]], Field(max_length=50)] = Field(
        default_factory=dict
    )
    """Key/value tags."""


class VMCloneSpec(ApiModel):
    """Desired state of a VMClone."""

    source: CloneSource
    """What to clone."""
    target: CloneTarget
    """The VirtualMachine the clone becomes."""
    options: CloneOptions | None = None
    """How the clone is made."""
    customization: CloneCustomization | None = None
    """Guest customization of the clone."""
    metadata: CloneMetadata | None = None
    """Descriptive data about the clone operation."""


class DiskCloneProgress(ApiModel):
    """Progress of the disk being copied."""

    name: ShortText
    """Name of the disk."""
    total_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the disk, in bytes."""
    completed_bytes: Annotated[int, Field(ge=0)] | None = None
    """Bytes copied so far."""
    percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    """Progress in percent (0-100)."""
    transfer_rate: Annotated[int, Field(ge=0)] | None = None
    """Current rate, in bytes per second."""


class CloneProgress(ApiModel):
    """Progress of the clone."""

    overall_percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    """Progress in percent (0-100)."""
    total_disks: Annotated[int, Field(ge=0)] | None = None
    """Disks to copy."""
    completed_disks: Annotated[int, Field(ge=0)] | None = None
    """Disks copied."""
    current_disk: DiskCloneProgress | None = None
    """The disk being copied."""
    eta: Annotated[str, Field(max_length=64)] | None = None
    """Estimated time left (a duration)."""


class CustomizationStatus(ApiModel):
    """Progress of the guest customization."""

    started: bool | None = None
    """Customization has begun."""
    completed: bool | None = None
    """Customization has finished."""
    current_step: ShortText | None = None
    """The step running now."""
    completed_steps: Annotated[list[ShortText], Field(max_length=100)] = Field(default_factory=list)
    """Steps finished."""
    failed_steps: Annotated[list[ShortText], Field(max_length=100)] = Field(default_factory=list)
    """Steps that failed."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""


CloneType = Literal["FullClone", "LinkedClone", "InstantClone"]


class VMCloneStatus(ApiModel):
    """Observed state of a VMClone."""

    phase: (
        Literal["Pending", "Preparing", "Cloning", "Customizing", "Powering-On", "Ready", "Failed"]
        | None
    ) = None
    """Phase of the clone."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Details about the phase."""
    target_ref: LocalObjectReference | None = None
    """The VirtualMachine created."""
    target_vm_id: ShortText | None = None
    """Provider-specific id of the cloned VM."""
    task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task in progress (resumed after a restart or handover)."""
    actual_clone_type: CloneType | None = None
    """The clone type used (a linked clone falls back to full where unsupported)."""
    progress: CloneProgress | None = None
    """Progress of the clone."""
    customization_status: CustomizationStatus | None = None
    """Progress of the guest customization."""
    start_time: datetime | None = None
    """When the clone started."""
    completion_time: datetime | None = None
    """When the clone finished."""
    retry_count: Annotated[int, Field(ge=0)] | None = None
    """Retries so far."""
    last_retry_time: datetime | None = None
    """When the clone was last retried."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Cloning, Customizing, Failed."""


class VMClone(KubeObject):
    """A request to clone a VM, snapshot, template or image into a new VirtualMachine."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmclones",
        short_names=["vmclone"],
        printer_columns=[
            PrinterColumn(name="Source", type="string", json_path=".spec.source.vmRef.name"),
            PrinterColumn(name="Target", type="string", json_path=".spec.target.name"),
            PrinterColumn(name="Type", type="string", json_path=".status.actualCloneType"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(
                name="Progress", type="integer", json_path=".status.progress.overallPercentage"
            ),
            age_column(),
        ],
    )

    kind: Literal["VMClone"] = "VMClone"
    spec: VMCloneSpec
    status: VMCloneStatus = Field(default_factory=VMCloneStatus)
