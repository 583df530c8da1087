"""Descriptors of the API resources VirtRigaud reads and writes, and their URL paths."""

from __future__ import annotations

from dataclasses import dataclass

from virtrigaud import GROUP, VERSION


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, name: str, namespace: str | None = None) -> str:
        if self.namespaced and not namespace:
            raise ValueError(f"{self.kind} {name!r}: a namespace is required")
        return f"{self.collection_path(namespace)}/{name}"


def _ours(plural: str, kind: str) -> Resource:
    return Resource(GROUP, VERSION, plural, kind)


VIRTUAL_MACHINES = _ours("virtualmachines", "VirtualMachine")
PROVIDERS = _ours("providers", "Provider")
VM_CLASSES = _ours("vmclasses", "VMClass")
VM_IMAGES = _ours("vmimages", "VMImage")
VM_SNAPSHOTS = _ours("vmsnapshots", "VMSnapshot")
VM_CLONES = _ours("vmclones", "VMClone")
VM_MIGRATIONS = _ours("vmmigrations", "VMMigration")
VM_SETS = _ours("vmsets", "VMSet")
VM_PLACEMENT_POLICIES = _ours("vmplacementpolicies", "VMPlacementPolicy")
VM_NETWORK_ATTACHMENTS = _ours("vmnetworkattachments", "VMNetworkAttachment")

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SECRETS = Resource("", "v1", "secrets", "Secret")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
EVENTS = Resource("", "v1", "events", "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
SERVICES = Resource("", "v1", "services", "Service")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
CRDS = Resource(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
)
