"""Where a new VM goes: placement names (spec.placement, then Provider defaults) to objects.

The names are resolved against an index of the inventory read in one property-collector
pass and kept for the session; a name the index does not know triggers one re-read before
it is reported as missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from virtrigaud.providers.base import TerminalError
from virtrigaud.providers.vsphere.inventory import PC
from virtrigaud.providers.vsphere.sdk import vim
from virtrigaud.providers.vsphere.session import Connection

INDEX_COST = 3  # CreateContainerView + RetrieveContents + DestroyView

_TYPES: dict[str, tuple[Any, list[str]]] = {
    "datacenter": (vim.Datacenter, ["name", "vmFolder"]),
    "folder": (vim.Folder, ["name", "childType"]),
    "cluster": (vim.ClusterComputeResource, ["name", "resourcePool"]),
    "compute": (vim.ComputeResource, ["name", "resourcePool"]),
    "host": (vim.HostSystem, ["name", "parent"]),
    "resource_pool": (vim.ResourcePool, ["name", "owner"]),
    "datastore": (vim.Datastore, ["name", "summary.freeSpace", "summary.accessible"]),
    "storage_pod": (vim.StoragePod, ["name", "childEntity"]),
    "network": (vim.Network, ["name"]),
    "portgroup": (
        vim.dvs.DistributedVirtualPortgroup,
        ["name", "key", "config.distributedVirtualSwitch"],
    ),
    "switch": (vim.DistributedVirtualSwitch, ["name", "uuid"]),
}

PLACEMENT_KEYS = (
    "datacenter",
    "cluster",
    "host",
    "resource_pool",
    "datastore",
    "storage_pod",
    "folder",
)


@dataclass
class Item:
    obj: Any
    props: dict[str, Any]


class InventoryIndex:
    """Inventory objects by kind and name (the first object wins when names repeat)."""

    def __init__(self, items: dict[str, dict[str, Item]], by_ref: dict[str, Item]) -> None:
        self.items = items
        self.by_ref = by_ref

    @staticmethod
    def read(conn: Connection) -> InventoryIndex:
        """Three SOAP requests (see INDEX_COST)."""
        types = [t for t, _ in _TYPES.values()]
        view = conn.content.viewManager.CreateContainerView(conn.content.rootFolder, types, True)
        try:
            traverse = PC.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView
            )
            spec = PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                propSet=[PC.PropertySpec(type=t, pathSet=paths) for t, paths in _TYPES.values()],
            )
            result = conn.content.propertyCollector.RetrieveContents([spec]) or []
        finally:
            view.DestroyView()
        items: dict[str, dict[str, Item]] = {kind: {} for kind in _TYPES}
        by_ref: dict[str, Item] = {}
        for content in result:
            props = {p.name: p.val for p in content.propSet or []}
            item = Item(content.obj, props)
            by_ref[content.obj._moId] = item
            for kind, (obj_type, _) in _TYPES.items():
                if isinstance(content.obj, obj_type):
                    items[kind].setdefault(str(props.get("name", "")), item)
        return InventoryIndex(items, by_ref)

    def get(self, kind: str, name: str) -> Item | None:
        return self.items[kind].get(name)

    def first(self, kind: str) -> Item | None:
        return next(iter(self.items[kind].values()), None)


@dataclass(frozen=True)
class Placement:
    folder: Any
    pool: Any
    datastore: Any
    datastore_name: str
    host: Any | None


class MissingName(Exception):
    """A placement or network name the index does not have (yet)."""

    def __init__(self, kind: str, name: str, field: str) -> None:
        self.kind, self.name, self.field = kind, name, field
        super().__init__(f"{kind} {name!r}")

    def terminal(self, endpoint: str) -> TerminalError:
        return TerminalError(
            f"{self.kind.replace('_', ' ')} {self.name!r} does not exist on vCenter {endpoint}; "
            "use an existing name",
            field=self.field,
        )


def _choose(
    placement: Mapping[str, str], defaults: Mapping[str, str], key: str
) -> tuple[str | None, str]:
    if placement.get(key):
        return placement[key], f"spec.placement.{key}"
    if defaults.get(key):
        return defaults[key], f"Provider spec.defaults.{key}"
    return None, ""


def resolve(
    index: InventoryIndex, placement: Mapping[str, str], defaults: Mapping[str, str]
) -> Placement:
    """Pure: raises MissingName for a name the index lacks, TerminalError for a bad setup."""

    def need(kind: str, key: str) -> Item | None:
        name, field = _choose(placement, defaults, key)
        if name is None:
            return None
        item = index.get(kind, name)
        if item is None:
            raise MissingName(kind, name, field)
        return item

    datacenter = need("datacenter", "datacenter") or index.first("datacenter")
    if datacenter is None:
        raise TerminalError("vCenter has no datacenter to create VMs in", field="spec.endpoint")
    folder = need("folder", "folder")
    host = need("host", "host")
    pool_item = need("resource_pool", "resource_pool")
    cluster = need("cluster", "cluster")
    if pool_item is not None:
        pool = pool_item.obj
    elif cluster is not None:
        pool = cluster.props["resourcePool"]
    elif host is not None:
        parent = index.by_ref.get(host.props["parent"]._moId)
        if parent is None:
            raise TerminalError(f"host {host.props['name']!r} has no compute resource")
        pool = parent.props["resourcePool"]
    else:
        compute = index.first("cluster") or index.first("compute")
        if compute is None:
            raise TerminalError("vCenter has no cluster or host to create VMs on")
        pool = compute.props["resourcePool"]
    datastore = need("datastore", "datastore")
    if datastore is None:
        pod = need("storage_pod", "storage_pod")
        if pod is not None:
            members = [index.by_ref.get(d._moId) for d in pod.props.get("childEntity") or []]
            candidates = [m for m in members if m is not None]
            if not candidates:
                raise TerminalError(
                    f"datastore cluster {pod.props['name']!r} has no datastores",
                    field="spec.placement.storagePod",
                )
            datastore = max(candidates, key=lambda m: int(m.props.get("summary.freeSpace") or 0))
        else:
            datastore = index.first("datastore")
    if datastore is None:
        raise TerminalError("vCenter has no datastore for new VMs; set spec.placement.datastore")
    return Placement(
        folder=folder.obj if folder is not None else datacenter.props["vmFolder"],
        pool=pool,
        datastore=datastore.obj,
        datastore_name=str(datastore.props["name"]),
        host=host.obj if host is not None else None,
    )


def nic_backing(index: InventoryIndex, network: str, field: str) -> Any:
    """The NIC backing for a standard portgroup or a distributed portgroup by name."""
    portgroup = index.get("portgroup", network)
    if portgroup is not None:
        switch = index.by_ref.get(portgroup.props["config.distributedVirtualSwitch"]._moId)
        if switch is None:
            raise MissingName("network", network, field)
        return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(
                portgroupKey=portgroup.props["key"], switchUuid=switch.props["uuid"]
            )
        )
    item = index.get("network", network)
    if item is None:
        raise MissingName("network", network, field)
    return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
        deviceName=network, network=item.obj
    )


def hosts_of_pool(index: InventoryIndex, pool: Any) -> list[str]:
    """The names of the hosts of the cluster (or standalone host) that owns ``pool``,
    sorted."""
    item = index.by_ref.get(pool._moId)
    owner = item.props.get("owner") if item is not None else None
    if owner is None:
        return []
    return sorted(
        str(h.props["name"])
        for h in index.items["host"].values()
        if h.props["parent"]._moId == owner._moId
    )
