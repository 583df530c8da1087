"""Which reconciler serves which kind: what a shard process builds at start."""

from __future__ import annotations

from virtrigaud.controllers.dispatch import Dispatcher, Factory
from virtrigaud.shards.reconciler import Reconciler, ShardContext


def _virtual_machines(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.virtualmachine.reconciler import VMReconciler

    return VMReconciler(ctx)


def _providers(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.provider.reconciler import ProviderReconciler

    return ProviderReconciler(ctx)


def _vm_classes(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.vmclass.reconciler import VMClassReconciler

    return VMClassReconciler(ctx)


def _vm_images(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.vmimage.reconciler import VMImageReconciler

    return VMImageReconciler(ctx)


def _vm_networks(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.vmnetworkattachment.reconciler import (
        VMNetworkAttachmentReconciler,
    )

    return VMNetworkAttachmentReconciler(ctx)


def _vm_snapshots(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.vmsnapshot.reconciler import VMSnapshotReconciler

    return VMSnapshotReconciler(ctx)


def _vm_sets(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.vmset.reconciler import VMSetReconciler

    return VMSetReconciler(ctx)


def _vm_clones(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.vmclone.reconciler import VMCloneReconciler

    return VMCloneReconciler(ctx)


def _vm_placement_policies(ctx: ShardContext) -> Reconciler:
    from virtrigaud.controllers.vmplacementpolicy.reconciler import VMPlacementPolicyReconciler

    return VMPlacementPolicyReconciler(ctx)


FACTORIES: dict[str, Factory] = {
    "VirtualMachine": _virtual_machines,
    "Provider": _providers,
    "VMClass": _vm_classes,
    "VMImage": _vm_images,
    "VMNetworkAttachment": _vm_networks,
    "VMSnapshot": _vm_snapshots,
    "VMSet": _vm_sets,
    "VMClone": _vm_clones,
    "VMPlacementPolicy": _vm_placement_policies,
}


def build(ctx: ShardContext) -> Dispatcher:
    """The shard's dispatcher with every kind's reconciler (the actor's default factory)."""
    return Dispatcher({kind: factory(ctx) for kind, factory in FACTORIES.items()})
