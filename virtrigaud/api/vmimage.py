"""VMImage (vmimg): a bootable image, described per hypervisor type."""

from __future__ import annotations

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
from virtrigaud.api.common import Duration, LocalObjectReference, ObjectRef, ShortText
from virtrigaud.api.conditions import Conditions

Url = Annotated[str, Field(max_length=2048, pattern=r"^(https?|oci|docker)://.+$")]

Checksum = Annotated[str, Field(max_length=160, pattern=r"^(sha256|sha512):[0-9a-f]+$")]


class VSphereImageSource(ApiModel):
    template_name: ShortText | None = None
    """An existing vSphere template to clone."""
    content_library: ShortText | None = None
    """Content library holding the item (with templateName as the item name)."""
    ova_url: Url | None = None
    """An OVA/OVF to deploy."""


class LibvirtImageSource(ApiModel):
    path: Annotated[str, Field(max_length=4096)] | None = None
    """A volume path on the libvirt host."""
    url: Url | None = None
    """A qcow2/raw image to download into the storage pool."""
    storage_pool: ShortText | None = None
    format: Literal["qcow2", "raw"] = "qcow2"


class ProxmoxImageSource(ApiModel):
    template_id: Annotated[int, Field(ge=100, le=999999999)] | None = None
    """VMID of a Proxmox VE template to clone."""
    node: ShortText | None = None
    """Node holding the template."""
    storage: ShortText | None = None


class HTTPImageSource(ApiModel):
    url: Url
    checksum: Checksum | None = None
    """Expected checksum, e.g. sha256:ab12..."""
    headers_secret_ref: LocalObjectReference | None = None
    """A Secret whose keys are sent as HTTP headers."""


class RegistryImageSource(ApiModel):
    image: Annotated[str, Field(min_length=1, max_length=1024)]
    """OCI image reference holding the disk."""
    pull_secret_ref: LocalObjectReference | None = None


class ImageSource(ApiModel):
    """Where the image comes from; one entry per hypervisor type it is offered on."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.vsphere) || has(self.libvirt) || has(self.proxmox) "
                "|| has(self.http) || has(self.registry)",
                "spec.source needs at least one of vsphere, libvirt, proxmox, http or registry",
            )
        )
    )

    vsphere: VSphereImageSource | None = None
    libvirt: LibvirtImageSource | None = None
    proxmox: ProxmoxImageSource | None = None
    http: HTTPImageSource | None = None
    registry: RegistryImageSource | None = None


class ImagePrepare(ApiModel):
    on_missing: Literal["Import", "Fail", "Wait"] = "Import"
    """What to do when the image is not on the target Provider yet."""
    timeout: Duration = "30m"
    """Give up preparing after this long."""
    force: bool = False
    """Re-import even if the image is present."""


class ImageProviderStatus(ApiModel):
    available: bool
    id: ShortText | None = None
    path: Annotated[str, Field(max_length=4096)] | None = None
    message: Annotated[str, Field(max_length=4096)] | None = None


class VMImageSpec(ApiModel):
    source: ImageSource
    prepare: ImagePrepare | None = None
    """How and when the image is imported onto a Provider."""


class VMImageStatus(ApiModel):
    ready: bool | None = None
    phase: Literal["Pending", "Downloading", "Importing", "Ready", "Failed"] | None = None
    message: Annotated[str, Field(max_length=32768)] | None = None
    available_on: Annotated[list[ObjectRef], Field(max_length=256)] = Field(default_factory=list)
    """Providers the image is ready on."""
    provider_status: Annotated[dict[str, ImageProviderStatus], Field(max_length=256)] = Field(
        default_factory=dict
    )
    """Per Provider (namespace/name): whether and where the image is available."""
    import_progress: Annotated[int, Field(ge=0, le=100)] | None = None
    """Import progress in percent."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


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
