"""Which spec fields this release acts on, per kind and Provider type: the one table.

The API accepts every field of the Go VirtRigaud's v1beta1 kinds so that its manifests
apply unchanged, but accepting a field is not acting on it. This table says, for every
field a kind accepts, which Provider types honour it; ``ignored_fields`` reads it to tell
a user which fields set on an object have no effect, and docs/field-support.md is
rendered from it (a test fails when the two differ).

An entry covers its path and everything below it; the longest matching entry decides.
``only_for`` marks a per-hypervisor block (e.g. ``spec.source.vsphere`` of a VMImage):
for other Provider types the block is not addressed to them, so it is neither honoured
nor reported. Kinds the VirtualMachine reconcile reads (VirtualMachine, VMClass,
Provider) list every field explicitly; a test fails when a new field has no entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from virtrigaud.api.provider import ProviderType

VSPHERE = ProviderType.VSPHERE
LIBVIRT = ProviderType.LIBVIRT
PROXMOX = ProviderType.PROXMOX
ALL: frozenset[ProviderType] = frozenset(ProviderType)
NONE: frozenset[ProviderType] = frozenset()


@dataclass(frozen=True)
class Support:
    """Who honours one field path (``[]`` stands for any list index)."""

    path: str
    honoured_by: frozenset[ProviderType]
    note: str = ""
    only_for: frozenset[ProviderType] | None = None


def on(path: str, *types: ProviderType, note: str = "") -> Support:
    """Honoured by the given Provider types (all of them when none are given)."""
    return Support(path, frozenset(types) if types else ALL, note)


def off(path: str, note: str) -> Support:
    """Accepted and stored, acted on by no Provider type in this release."""
    return Support(path, NONE, note)


def block(path: str, for_type: ProviderType, note: str) -> Support:
    """A block addressed to one Provider type; not acted on unless an entry below says so."""
    return Support(path, NONE, note, only_for=frozenset({for_type}))


NO_CONTROLLER = "no controller for this kind in this release: stored and validated only"

VIRTUAL_MACHINE = (
    on("spec.providerRef"),
    on("spec.classRef"),
    on("spec.imageRef"),
    on("spec.importedDisk.diskID"),
    on("spec.importedDisk.path"),
    off("spec.importedDisk.format", "the disk is used as it is; its format is not converted"),
    on("spec.importedDisk.source", note="informational"),
    on("spec.importedDisk.migrationRef", note="informational"),
    off("spec.importedDisk.sizeGiB", "not compared with the disk"),
    on("spec.networks[].name"),
    on("spec.networks[].networkRef"),
    on("spec.networks[].macAddress"),
    on(
        "spec.networks[].ipAddress",
        PROXMOX,
        note="Proxmox VE: cloud-init ipconfig; vSphere and libvirt leave addressing to the guest",
    ),
    on("spec.networks[].prefix", PROXMOX, note="Proxmox VE: cloud-init ipconfig"),
    on("spec.networks[].gateway", PROXMOX, note="Proxmox VE: cloud-init ipconfig"),
    off("spec.networks[].dns", "DNS servers are not passed to the guest"),
    on("spec.disks[].name"),
    on("spec.disks[].sizeGiB"),
    off("spec.disks[].type", "new disks get the hypervisor's default provisioning"),
    off(
        "spec.disks[].expandPolicy",
        "disks grow online where the hypervisor allows it, otherwise PowerCycleRequired says so",
    ),
    off("spec.disks[].storageClass", "disks go to the VM's datastore or storage pool"),
    off("spec.disks[].scsi", "disks go on the first SCSI controller"),
    on(
        "spec.userData.cloudInit",
        VSPHERE,
        PROXMOX,
        note="vSphere: guestinfo; Proxmox VE: the keys PVE's cloud-init has (others are "
        "refused); libvirt: recorded in the domain metadata, no NoCloud ISO yet",
    ),
    off("spec.userData.ignition", "Ignition configs are not delivered to the guest"),
    on(
        "spec.metaData.cloudInit",
        VSPHERE,
        note="vSphere: guestinfo; Proxmox VE generates meta-data itself",
    ),
    on("spec.placement.cluster", VSPHERE, note="Proxmox VE refuses it (the VM fails)"),
    on("spec.placement.host", VSPHERE, PROXMOX, note="Proxmox VE: the node"),
    on("spec.placement.datastore", VSPHERE, PROXMOX, note="Proxmox VE: the storage"),
    on("spec.placement.storagePod", VSPHERE, note="Proxmox VE refuses it (the VM fails)"),
    on("spec.placement.folder", VSPHERE, note="Proxmox VE refuses it (the VM fails)"),
    on("spec.placement.resourcePool", VSPHERE, PROXMOX, note="Proxmox VE: the pool"),
    on("spec.powerState"),
    on("spec.tags"),
    on("spec.resources.cpu"),
    on("spec.resources.memoryMiB"),
    off("spec.resources.gpu", "no GPU passthrough yet"),
    on(
        "spec.placementRef",
        VSPHERE,
        PROXMOX,
        note="the policy's host rules choose the host (Proxmox VE: the node) before the "
        "create (see VMPlacementPolicy); a VM that exists is not moved",
    ),
    on("spec.snapshot.revertToRef", note="once per VMSnapshot; clear it to allow another"),
    off("spec.lifecycle.preStop", "lifecycle hooks are not built yet"),
    off("spec.lifecycle.postStart", "lifecycle hooks are not built yet"),
    on("spec.lifecycle.gracefulShutdownTimeout"),
)

VM_CLASS = (
    on("spec.cpu"),
    on("spec.memory"),
    on(
        "spec.firmware",
        note="vSphere: VMs made without an image; clones keep the template's firmware",
    ),
    off("spec.diskDefaults", "the root disk comes from the image (grow it with spec.disks)"),
    off("spec.guestToolsPolicy", "guest tools are left as the image has them"),
    on(
        "spec.extraConfig",
        VSPHERE,
        note="written into a new VM's extraConfig (create only: existing VMs keep theirs); "
        "keys VirtRigaud writes itself (virtrigaud.*, guestinfo.virtrigaud.*, guestinfo "
        "userdata/metadata with spec.userData) fail the VM naming the key",
    ),
    off("spec.resourceLimits", "no limits, reservations or shares are set"),
    off("spec.performanceProfile", "not applied to the hypervisor VM"),
    off("spec.securityProfile", "not applied to the hypervisor VM"),
)

PROVIDER = (
    on("spec.type"),
    on("spec.endpoint"),
    on("spec.credentialSecretRef.name"),
    off(
        "spec.credentialSecretRef.namespace",
        "only a Secret in the Provider's own namespace is read",
    ),
    on("spec.insecureSkipVerify"),
    on("spec.defaults.datastore", VSPHERE),
    on("spec.defaults.storagePod", VSPHERE),
    on("spec.defaults.cluster", VSPHERE),
    on("spec.defaults.folder", VSPHERE),
    on("spec.defaults.resourcePool", VSPHERE, PROXMOX, note="Proxmox VE: the pool"),
    on("spec.defaults.network", note="for interfaces without a networkRef"),
    on("spec.defaults.node", PROXMOX),
    on("spec.defaults.storagePool", LIBVIRT, PROXMOX, note="Proxmox VE: the storage"),
    on("spec.rateLimit", note="one token bucket per Provider, shared by all shards"),
    on("spec.allowedNamespaces"),
    on(
        "spec.healthCheck",
        note="the Provider controller probes the endpoint at interval, within timeout, and "
        "counts failureThreshold/successThreshold before Healthy changes",
    ),
    off("spec.connectionPooling", "each shard keeps one session per endpoint"),
    on("spec.runtime.mode", note="Remote: the shards call a provider.v1 server over gRPC"),
    on(
        "spec.runtime.image",
        note="set: the controller runs the server (a Deployment and a Service it owns); unset: "
        "the server runs elsewhere and nothing is managed",
    ),
    on("spec.runtime.imagePullPolicy", note="of the managed Deployment's container"),
    on("spec.runtime.imagePullSecrets", note="of the managed Deployment's pods"),
    on("spec.runtime.replicas", note="of the managed Deployment"),
    on("spec.runtime.resources", note="of the managed container (default 100m/128Mi to 1/512Mi)"),
    on("spec.runtime.nodeSelector", note="of the managed Deployment's pods"),
    on("spec.runtime.tolerations", note="of the managed Deployment's pods"),
    on("spec.runtime.affinity", note="of the managed Deployment's pods"),
    on(
        "spec.runtime.securityContext",
        note="of the managed container (default: non-root, "
        "read-only root filesystem, no capabilities)",
    ),
    on("spec.runtime.env", note="of the managed container"),
    on(
        "spec.runtime.livenessProbe",
        note="of the managed container (default: grpc on the plaintext health port 8081)",
    ),
    on(
        "spec.runtime.readinessProbe",
        note="of the managed container (default: grpc on the plaintext health port 8081)",
    ),
    on("spec.runtime.logLevel", note="the managed server's `--log-level`"),
    on(
        "spec.runtime.logFormat",
        note="the managed server's `--log-format` (json: one object per line)",
    ),
    on(
        "spec.runtime.service.port",
        note="the gRPC port of the Service the server is reached at (and of a managed server)",
    ),
    on("spec.runtime.service.tls.enabled", note="false: plaintext, on purpose only"),
    on(
        "spec.runtime.service.tls.secretRef",
        note="the controller's client certificate and CA; a managed server mounts the same "
        "Secret (its certificate names the Service) and admits only certificates naming it",
    ),
    off(
        "spec.runtime.service.tls.insecureSkipVerify",
        "refused: the provider server's certificate is always verified",
    ),
)

VM_IMAGE = (
    off(
        "spec",
        "the VMImage controller checks the image on each Provider its VMs use and imports "
        "only from spec.source.vsphere.ovaURL; other sources and the prepare options not "
        "listed here are not acted on",
    ),
    block("spec.source.vsphere", VSPHERE, "vSphere images"),
    on("spec.source.vsphere.templateName", VSPHERE),
    on(
        "spec.source.vsphere.ovaURL",
        VSPHERE,
        note="imported as a template (ImportVApp and the NFC lease) when the template is "
        "missing; named templateName, else virtrigaud-image-<namespace>-<name>",
    ),
    on(
        "spec.source.vsphere.checksum",
        VSPHERE,
        note="the downloaded OVA must have this digest, else nothing is imported and the "
        "image fails naming both digests",
    ),
    on("spec.source.vsphere.checksumType", VSPHERE, note="unless checksum has a prefix"),
    on("spec.prepare.validateChecksum", VSPHERE, note="false: the OVA's checksum is not checked"),
    on(
        "spec.prepare.storage.vsphere.datastore",
        VSPHERE,
        note="where an imported template's files go (else the Provider's default datastore)",
    ),
    on(
        "spec.prepare.storage.vsphere.folder",
        VSPHERE,
        note="the VM folder an imported template is put in (else the Provider's default)",
    ),
    on(
        "spec.prepare.onMissing",
        VSPHERE,
        note="Import (the default) imports the ovaURL; Fail (phase Failed) and Wait (phase "
        "Pending, reason WaitingForImage) report the missing template without importing",
    ),
    block("spec.source.libvirt", LIBVIRT, "libvirt images"),
    on("spec.source.libvirt.path", LIBVIRT),
    on("spec.source.libvirt.storagePool", LIBVIRT, note="with a volume name in path"),
    block("spec.source.proxmox", PROXMOX, "Proxmox VE images"),
    on("spec.source.proxmox.templateID", PROXMOX),
    on("spec.source.proxmox.templateName", PROXMOX, note="used when templateID is unset"),
    on("spec.source.proxmox.node", PROXMOX),
    on(
        "spec.source.proxmox.storage",
        PROXMOX,
        note="where a full clone's disks go (a VM's spec.placement storage wins)",
    ),
    on(
        "spec.source.proxmox.fullClone",
        PROXMOX,
        note="false: a linked clone of the template (a VM's spec.placement.cloneMode wins)",
    ),
)

VM_NETWORK_ATTACHMENT = (
    off(
        "spec",
        "no VMNetworkAttachment controller in this release: networks are not created or "
        "configured; a VirtualMachine connects to the network marked yes",
    ),
    block("spec.network.vsphere", VSPHERE, "vSphere networks"),
    on("spec.network.vsphere.portgroup", VSPHERE),
    block("spec.network.libvirt", LIBVIRT, "libvirt networks"),
    on("spec.network.libvirt.networkName", LIBVIRT),
    on("spec.network.libvirt.bridge.name", LIBVIRT, note="used as the network name"),
    block("spec.network.proxmox", PROXMOX, "Proxmox VE networks"),
    on("spec.network.proxmox.bridge", PROXMOX),
)

VM_SNAPSHOT = (
    on("spec.vmRef"),
    on("spec.snapshotConfig.name", note="the hypervisor snapshot's name (one-off snapshots)"),
    on("spec.snapshotConfig.description"),
    on(
        "spec.snapshotConfig.includeMemory",
        note="vSphere: only while the VM runs; libvirt: a running domain's snapshot always "
        "holds its memory",
    ),
    off("spec.snapshotConfig.quiesce", "snapshots are taken without quiescing the guest"),
    off("spec.snapshotConfig.type", "every snapshot is a standard one"),
    off("spec.snapshotConfig.compression", "the hypervisor's default is used"),
    off("spec.snapshotConfig.encryption", "snapshots are not encrypted"),
    off("spec.snapshotConfig.consistencyLevel", "snapshots are crash-consistent"),
    on("spec.retentionPolicy.maxAge"),
    on("spec.retentionPolicy.maxCount", note="counts the snapshots a schedule took"),
    on("spec.retentionPolicy.deleteOnVMDelete"),
    on("spec.retentionPolicy.preservePinned"),
    on("spec.retentionPolicy.gracePeriod"),
    on("spec.schedule.enabled"),
    on("spec.schedule.cronSpec"),
    on("spec.schedule.timezone"),
    on("spec.schedule.suspend"),
    on("spec.schedule.concurrencyPolicy"),
    off(
        "spec.schedule.successfulJobsHistoryLimit",
        "the snapshots a schedule took are its history (see maxCount)",
    ),
    off(
        "spec.schedule.failedJobsHistoryLimit",
        "failed snapshots stay as VMSnapshots in phase Failed",
    ),
    on("spec.metadata.pinned"),
    off("spec.metadata.tags", "stored only: not written to the hypervisor"),
    off("spec.metadata.application", "stored only"),
    off("spec.metadata.purpose", "stored only"),
    off("spec.metadata.environment", "stored only"),
)

VM_SET = (
    on("spec.replicas"),
    on("spec.selector"),
    on("spec.template"),
    on("spec.updateStrategy.type"),
    on("spec.updateStrategy.rollingUpdate.maxUnavailable"),
    on("spec.updateStrategy.rollingUpdate.maxSurge"),
    on("spec.updateStrategy.rollingUpdate.partition"),
    on(
        "spec.updateStrategy.rollingUpdate.podManagementPolicy",
        note="applies to scaling; without rollingUpdate the set scales in parallel",
    ),
    on("spec.minReadySeconds"),
    on("spec.ordinals.start"),
    off(
        "spec.revisionHistoryLimit",
        "no revision objects are kept: replicas carry their template's hash",
    ),
    off("spec.serviceName", "no network identity is managed for the replicas"),
    off("spec.volumeClaimTemplates", "no volume claims are made"),
    off("spec.persistentVolumeClaimRetentionPolicy", "no volume claims are made"),
)

VM_CLONE = (
    on("spec.source.vmRef"),
    off("spec.source.snapshotRef", "cloning from a snapshot is not built (refused)"),
    off("spec.source.templateRef", "use a VirtualMachine with an imageRef (refused)"),
    off("spec.source.imageRef", "use a VirtualMachine with an imageRef (refused)"),
    on("spec.target.name"),
    off("spec.target.namespace", "the target is made in the clone's namespace (refused)"),
    on("spec.target.providerRef", note="must name the source's Provider"),
    on("spec.target.classRef"),
    on(
        "spec.target.placementRef",
        VSPHERE,
        note="copied to the VirtualMachine, which is moved to the host its policy chose "
        "when it adopts the clone",
    ),
    on("spec.target.networks"),
    on("spec.target.disks"),
    on("spec.target.placement"),
    on("spec.target.resources"),
    on("spec.target.labels"),
    on("spec.target.annotations"),
    on(
        "spec.options.type",
        note="FullClone everywhere; LinkedClone on vSphere (from the source's current "
        "snapshot) and libvirt (qcow2 overlays), refused on Proxmox VE; InstantClone refused",
    ),
    on("spec.options.powerOn"),
    off("spec.options.timeout", "a clone runs as long as its hypervisor task"),
    off("spec.options.retryPolicy", "a failed clone stays Failed"),
    off("spec.options.includeSnapshots", "the clone has no snapshots"),
    off("spec.options.parallel", "the hypervisor copies disks as it does"),
    off("spec.options.performance", "not passed to the hypervisor"),
    off("spec.options.storage", "the target's placement decides the storage"),
    off("spec.customization", "guest customization is not built"),
    off("spec.metadata", "stored only"),
)

VM_PLACEMENT_POLICY = (
    off("spec", "not acted on in this release: stored and validated only"),
    on(
        "spec.antiAffinity.hostAntiAffinity",
        VSPHERE,
        PROXMOX,
        note="spread over the hosts of the VM's cluster (Proxmox VE: the online nodes), "
        "maxVMsPerHost each (1 when unset); scope unset is strict",
    ),
    on(
        "spec.affinity.hostAffinity",
        VSPHERE,
        PROXMOX,
        note="all on the host the first VM got, a preferredHosts one first",
    ),
    on("spec.hard.hosts", VSPHERE, PROXMOX, note="Proxmox VE: node names"),
    on("spec.hard.excludedHosts", VSPHERE, PROXMOX, note="Proxmox VE: node names"),
    on("spec.soft.hosts", VSPHERE, PROXMOX, note="preferred when hosts are otherwise equal"),
)

SUPPORT: Mapping[str, tuple[Support, ...]] = {
    "VirtualMachine": VIRTUAL_MACHINE,
    "Provider": PROVIDER,
    "VMClass": VM_CLASS,
    "VMImage": VM_IMAGE,
    "VMSnapshot": VM_SNAPSHOT,
    "VMClone": VM_CLONE,
    "VMMigration": (off("spec", NO_CONTROLLER),),
    "VMSet": VM_SET,
    "VMPlacementPolicy": VM_PLACEMENT_POLICY,
    "VMNetworkAttachment": VM_NETWORK_ATTACHMENT,
}

# Kinds whose every field must have its own entry (no fallback to a "spec" entry).
EXPLICIT_KINDS = ("VirtualMachine", "VMClass", "Provider")
