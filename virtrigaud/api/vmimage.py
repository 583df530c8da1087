"""VMImage (vmimg): a bootable image, described per hypervisor type."""

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
    Duration,
    LocalObjectReference,
    NamespaceName,
    ObjectName,
    Quantity,
    ShortText,
    matching,
)
from virtrigaud.api.conditions import Conditions

Url = Annotated[str, Field(max_length=2048, pattern=r"^(https?|oci|docker)://.+$")]

ChecksumPattern = r"^((md5|sha1|sha256|sha512):)?[0-9a-fA-F]+$"
Checksum = Annotated[
    str,
    Field(max_length=160),
    *matching(
        ChecksumPattern,
        "must be a hex digest, optionally prefixed with its algorithm, e.g. "
        "9f86d08188... or sha256:9f86d08188...",
    ),
]
ChecksumType = Literal["md5", "sha1", "sha256", "sha512"]
ImageFormat = Literal["qcow2", "raw", "vmdk", "vhd", "vhdx", "iso", "ova", "ovf"]


class ContentLibraryItem(ApiModel):
    """An item of a vSphere content library."""

    library: ShortText
    """Name of the content library."""
    item: ShortText
    """Name of the library item."""
    version: ShortText | None = None
    """Item version; the latest when unset."""


class VSphereImageSource(ApiModel):
    """The image on vSphere: an existing template, a content library item or an OVA."""

    template_name: ShortText | None = None
    """An existing vSphere template to clone: a name (searched everywhere) or an inventory path."""
    content_library: ContentLibraryItem | None = None
    """A content library item to deploy."""
    ova_url: Url | None = None
    """An OVA/OVF to deploy, by http(s) URL."""
    checksum: Checksum | None = None
    """Expected checksum of the OVA, hex (algorithm from checksumType)."""
    checksum_type: ChecksumType = "sha256"
    """Algorithm of checksum."""
    provider_ref: LocalObjectReference | None = None
    """The vSphere Provider to import the OVA through."""


class LibvirtImageSource(ApiModel):
    """The image on libvirt: a volume on the host or a URL to download into a pool."""

    path: Annotated[str, Field(max_length=4096)] | None = None
    """A volume: an absolute path on the host, or a volume name in storagePool."""
    url: Annotated[str, Field(max_length=2048, pattern=r"^(https?|ftp)://.+$")] | None = None
    """A disk image to download into the storage pool (http, https or ftp)."""
    storage_pool: ShortText | None = None
    """libvirt storage pool holding (or receiving) the volume."""
    format: ImageFormat = "qcow2"
    """Format of the image file."""
    checksum: Checksum | None = None
    """Expected checksum of the downloaded file, hex (algorithm from checksumType)."""
    checksum_type: ChecksumType = "sha256"
    """Algorithm of checksum."""


class ProxmoxImageSource(ApiModel):
    """The image on Proxmox VE: a template to clone."""

    template_id: Annotated[int, Field(ge=100, le=999999999)] | None = None
    """VMID of the template to clone."""
    template_name: ShortText | None = None
    """Name of the template to clone (templateID wins when both are set)."""
    node: ShortText | None = None
    """Node holding the template."""
    storage: ShortText | None = None
    """Storage for the cloned disks, e.g. local-lvm."""
    format: Literal["raw", "qcow2", "vmdk"] = "qcow2"
    """Disk format of full clones."""
    full_clone: bool = True
    """Full clone (independent disks) rather than a linked clone."""


class BasicAuth(ApiModel):
    """HTTP basic authentication from a Secret."""

    secret_ref: LocalObjectReference
    """Secret with the user name and password."""
    username_key: ShortText = "username"
    """Key of the user name in the Secret."""
    password_key: ShortText = "password"
    """Key of the password in the Secret."""


class BearerAuth(ApiModel):
    """HTTP bearer token authentication from a Secret."""

    secret_ref: LocalObjectReference
    """Secret with the token."""
    token_key: ShortText = "token"
    """Key of the token in the Secret."""


class ClientCertAuth(ApiModel):
    """TLS client certificate authentication from a Secret."""

    secret_ref: LocalObjectReference
    """Secret with the certificate and key."""
    cert_key: ShortText = "tls.crt"
    """Key of the PEM certificate in the Secret."""
    key_key: ShortText = "tls.key"
    """Key of the PEM private key in the Secret."""


class HTTPAuthentication(ApiModel):
    """How to authenticate the download; set one."""

    basic_auth: BasicAuth | None = None
    """HTTP basic authentication."""
    bearer: BearerAuth | None = None
    """Bearer token."""
    client_cert: ClientCertAuth | None = None
    """TLS client certificate."""


class HTTPImageSource(ApiModel):
    """A disk image downloaded over http(s)."""

    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://.+$")]
    """The http(s) URL of the image."""
    checksum: Checksum | None = None
    """Expected checksum, hex (algorithm from checksumType or a prefix such as sha256:)."""
    checksum_type: ChecksumType = "sha256"
    """Algorithm of checksum."""
    headers: Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=32)] = (
        Field(default_factory=dict)
    )
    """Extra HTTP request headers."""
    authentication: HTTPAuthentication | None = None
    """Credentials for the download."""
    timeout: Duration = "30m"
    """Give up the download after this long (a duration, e.g. 30m)."""


class RegistryImageSource(ApiModel):
    """A disk image stored in an OCI registry."""

    image: Annotated[str, Field(min_length=1, max_length=1024)]
    """OCI image reference holding the disk, e.g. registry.example.com/images/ubuntu:22.04."""
    pull_secret_ref: LocalObjectReference | None = None
    """Secret with registry credentials."""
    format: ImageFormat = "qcow2"
    """Format of the disk inside the image."""


class DataVolumeImageSource(ApiModel):
    """A CDI DataVolume holding the image."""

    name: ObjectName
    """Name of the DataVolume."""
    namespace: NamespaceName | None = None
    """Namespace of the DataVolume; the VMImage's own when unset."""


class ImageSource(ApiModel):
    """Where the image comes from; one entry per hypervisor type it is offered on."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.vsphere) || has(self.libvirt) || has(self.proxmox) "
                "|| has(self.http) || has(self.registry) || has(self.dataVolume)",
                "spec.source needs at least one of vsphere, libvirt, proxmox, http, registry "
                "or dataVolume",
            )
        )
    )

    vsphere: VSphereImageSource | None = None
    """The image on vSphere Providers."""
    libvirt: LibvirtImageSource | None = None
    """The image on libvirt Providers."""
    proxmox: ProxmoxImageSource | None = None
    """The image on Proxmox VE Providers."""
    http: HTTPImageSource | None = None
    """A download to import onto any Provider."""
    registry: RegistryImageSource | None = None
    """An OCI registry image to import onto any Provider."""
    data_volume: DataVolumeImageSource | None = None
    """A CDI DataVolume."""


class ImageOptimization(ApiModel):
    """Transformations applied while importing."""

    convert_format: ImageFormat | None = None
    """Convert the image to this format."""
    enable_compression: bool = False
    """Compress the stored image."""
    enable_delta_sync: bool = False
    """Transfer only changed blocks when the image is updated."""
    remove_unused_space: bool = False
    """Sparsify the image (drop unused blocks)."""


class VSphereImageStorage(ApiModel):
    """Where an import lands on vSphere."""

    datastore: ShortText | None = None
    """Datastore for the imported image."""
    folder: ShortText | None = None
    """VM folder for the imported template."""
    disk_type: Literal["thin", "thick", "eagerzeroedthick"] | None = None
    """Disk provisioning type."""
    thin_provisioned: bool | None = None
    """Thin-provision the disks."""


class LibvirtImageStorage(ApiModel):
    """Where an import lands on libvirt."""

    storage_pool: ShortText | None = None
    """Storage pool for the imported volume."""
    allocation_policy: Literal["eager", "lazy"] | None = None
    """Allocate the volume's space at once (eager) or on write (lazy)."""
    preallocation: Literal["off", "metadata", "falloc", "full"] | None = None
    """qcow2 preallocation mode."""


class ImageStorage(ApiModel):
    """Storage options of an import."""

    preferred_format: ImageFormat | None = None
    """Format to store the image in."""
    compression: bool = False
    """Compress during the import."""
    vsphere: VSphereImageStorage | None = None
    """vSphere storage options."""
    libvirt: LibvirtImageStorage | None = None
    """libvirt storage options."""


class ImagePrepare(ApiModel):
    """How and when the image is imported onto a Provider."""

    on_missing: Literal["Import", "Fail", "Wait"] = "Import"
    """What to do when the image is not on the target Provider yet."""
    timeout: Duration = "30m"
    """Give up preparing after this long (a duration, e.g. 30m)."""
    force: bool = False
    """Re-import even if the image is present."""
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    """Attempts after a failed import (0-10)."""
    validate_checksum: bool = True
    """Compare the image's checksum with the one given in the source."""
    optimization: ImageOptimization | None = None
    """Transformations applied while importing."""
    storage: ImageStorage | None = None
    """Where the import lands."""


class ImageMetadata(ApiModel):
    """Descriptive data about the image."""

    display_name: ShortText | None = None
    """Human-readable name."""
    description: Annotated[str, Field(max_length=1024)] | None = None
    """What the image is."""
    version: Annotated[str, Field(max_length=100)] | None = None
    """Version of the image."""
    architecture: Literal["amd64", "arm64", "x86_64", "aarch64"] = "amd64"
    """CPU architecture of the image."""
    tags: Annotated[dict[str, Annotated[str, Field(max_length=255)]], Field(max_length=64)] = Field(
        default_factory=dict
    )
    """Key/value tags for finding the image."""
    annotations: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)
    ] = Field(default_factory=dict)
    """Free-form annotations."""


class KernelInfo(ApiModel):
    """The kernel of the image's OS."""

    type: Literal["linux", "windows", "freebsd", "other"] | None = None
    """Kernel type."""
    version: Annotated[str, Field(max_length=100)] | None = None
    """Kernel version."""


class Distribution(ApiModel):
    """The operating system in the image."""

    name: (
        Literal[
            "ubuntu",
            "centos",
            "rhel",
            "fedora",
            "debian",
            "suse",
            "windows",
            "freebsd",
            "coreos",
            "other",
        ]
        | None
    ) = None
    """Distribution name."""
    version: Annotated[str, Field(max_length=100)] | None = None
    """Distribution version, e.g. 22.04."""
    variant: Annotated[str, Field(max_length=100)] | None = None
    """Variant, e.g. server or desktop."""
    family: Literal["linux", "windows", "bsd", "other"] | None = None
    """OS family."""
    kernel: KernelInfo | None = None
    """Kernel of the OS."""


class ImageProviderStatus(ApiModel):
    """The image on one Provider."""

    available: bool
    """Whether the image is ready on the Provider."""
    id: ShortText | None = None
    """Provider-specific identifier of the image."""
    path: Annotated[str, Field(max_length=4096)] | None = None
    """Where the image is on the Provider."""
    size: Quantity | None = None
    """Size of the image on the Provider, a quantity."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    last_updated: datetime | None = None
    """When this entry last changed."""


class ImportProgress(ApiModel):
    """Progress of an import."""

    total_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the image, in bytes."""
    transferred_bytes: Annotated[int, Field(ge=0)] | None = None
    """Bytes transferred so far."""
    percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    """Progress in percent (0-100)."""
    transfer_rate: Annotated[int, Field(ge=0)] | None = None
    """Current rate, in bytes per second."""
    eta: Annotated[str, Field(max_length=64)] | None = None
    """Estimated time left (a duration)."""
    start_time: datetime | None = None
    """When the import started."""


class VMImageSpec(ApiModel):
    """Desired state of a VMImage."""

    source: ImageSource
    """Where the image comes from."""
    prepare: ImagePrepare | None = None
    """How and when the image is imported onto a Provider."""
    metadata: ImageMetadata | None = None
    """Descriptive data about the image."""
    distribution: Distribution | None = None
    """The operating system in the image."""


class VMImageStatus(ApiModel):
    """Observed state of a VMImage."""

    ready: bool | None = None
    """Whether the image can be used."""
    phase: (
        Literal[
            "Pending", "Downloading", "Importing", "Converting", "Optimizing", "Ready", "Failed"
        ]
        | None
    ) = None
    """Preparation phase."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Details about the phase."""
    available_on: Annotated[list[ShortText], Field(max_length=256)] = Field(default_factory=list)
    """Providers the image is ready on."""
    used_by_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that use this image."""
    provider_status: Annotated[dict[str, ImageProviderStatus], Field(max_length=256)] = Field(
        default_factory=dict
    )
    """Per Provider: whether and where the image is available."""
    import_progress: ImportProgress | None = None
    """Progress of the running import."""
    checksum: Annotated[str, Field(max_length=160)] | None = None
    """Checksum of the prepared image."""
    format: ImageFormat | None = None
    """Format of the prepared image."""
    size: Quantity | None = None
    """Size of the prepared image, a quantity."""
    last_prepare_time: datetime | None = None
    """When the image was last prepared."""
    prepare_task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task of a preparation in progress."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Downloading, Importing, Validated."""


class VMImage(KubeObject):
    """A bootable image that VirtualMachines reference."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmimages",
        short_names=["vmimg"],
        printer_columns=[
            PrinterColumn(name="Ready", type="boolean", json_path=".status.ready"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            age_column(),
        ],
    )

    kind: Literal["VMImage"] = "VMImage"
    spec: VMImageSpec
    status: VMImageStatus = Field(default_factory=VMImageStatus)
