"""The VMSet reconcile: keep ``spec.replicas`` VirtualMachines made from the template.

A pass finds the set's VirtualMachines, plans what to create and delete (plan.py) and
does at most ``BATCH`` of it, concurrently; it never talks to a hypervisor (each
VirtualMachine is reconciled on its own shard) and never waits for one. It finds its VMs
in one of three ways, cheapest first: a pass working through a backlog takes what the
last pass left (expectations.py); a set whose VMs are all there at its revision takes
how many are Ready from the counts the leader delivers with it (leader/members.py, at
most once a second while they change); any other pass lists them (one label-selected
LIST). While the plan holds more creates or deletes than one pass does, the next pass
follows at once (``BACKLOG_POLL``), so the set's own writes never hold its VMs up; while
it only waits for its VMs to become available it looks again after ``PROGRESS_POLL``
seconds (longer for big sets: ``VMS_PER_POLL_SECOND``) or when their counts change, and
every ``STEADY_POLL`` seconds once it is converged.

Each VirtualMachine carries an ownerReference to the set (controller), the template's
labels and annotations, and the labels ``vmset.infra.virtrigaud.io/name``, ``/ordinal`` and
``/revision`` (a hash of the template). Deleting the set deletes its VirtualMachines first
(the set's finalizer stays until they are gone); with ``propagationPolicy: Orphan`` it
only drops their ownerReferences and leaves them. The API server used for development has
no garbage collector, so the set finishes the ``orphan`` and ``foregroundDeletion``
finalizers itself, as the collector would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from virtrigaud.api.conditions import get_condition, set_condition
from virtrigaud.api.corev1 import LabelSelector
from virtrigaud.api.vmset import VMSet, VMSetStatus
from virtrigaud.controllers.common import objects
from virtrigaud.controllers.common.fields import report_unsupported_fields
from virtrigaud.controllers.common.objects import read_object
from virtrigaud.controllers.vmset.expectations import Expectations
from virtrigaud.controllers.vmset.plan import Pace, Replica, count_of, plan
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_SETS
from virtrigaud.leader.members import (
    MEMBERS_FIELD,
    ORDINAL_LABEL,
    REVISION_LABEL,
    ready_condition,
    waiting_for_a_fix,
)
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

log = logging.getLogger(__name__)

JSON = dict[str, Any]
API_VERSION = "infra.virtrigaud.io/v1beta1"
FINALIZER = "vmset.infra.virtrigaud.io/finalizer"
SET_LABEL = "vmset.infra.virtrigaud.io/name"
ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"

BATCH = 500  # creates plus deletes per pass
# API writes in flight per pass. Each create waits mostly on a busy API server, so the set
# creates about as fast as it keeps requests in flight: at 1,000 VMs (scale-tests vmset,
# 2 shared cores) its VMs all existed after 17 s with 32 in flight, 15 s with 48 and 9 s
# with 100 (the shard's client holds 64 connections, so the rest queue there), and the
# sooner they exist the sooner they are Ready.
CONCURRENCY = 100
# The plan holds more than one pass does: the next pass (planned from what this one left,
# no LIST) comes at once. Measured at 1,000 VMs with 100 per pass and the poll below, the
# set took 59 s to create its VMs, which took 73 s to be Ready (scale-tests vmset).
BACKLOG_POLL = 0.05
PROGRESS_POLL = 1.0  # seconds between passes while a small set is converging
# A big set lists many VMs per pass: one pass per this many VMs' worth of seconds (a set of
# 1,000 looks every 5 s), so its LISTs stay a small load on the API server.
VMS_PER_POLL_SECOND = 200
# A converged set looks again this often. Under the leader, its VMs' changes reach it
# sooner, within about a second, through the counts delivered with it; this is the
# backstop (and all there is without them).
STEADY_POLL = 30.0
READY = "Ready"
PROGRESSING = "Progressing"


def template_revision(obj: JSON) -> str:
    template = (obj.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def selector_string(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for req in selector.match_expressions or []:
        values = ",".join(req.values)
        if req.operator == "In":
            parts.append(f"{req.key} in ({values})")
        elif req.operator == "NotIn":
            parts.append(f"{req.key} notin ({values})")
        elif req.operator == "Exists":
            parts.append(req.key)
        else:
            parts.append(f"!{req.key}")
    return ",".join(parts)


def selects(selector: LabelSelector, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.match_labels or {}).items()):
        return False
    for req in selector.match_expressions or []:
        present = req.key in labels
        value = labels.get(req.key)
        if (
            (req.operator == "In" and value not in req.values)
            or (req.operator == "NotIn" and present and value in req.values)
            or (req.operator == "Exists" and not present)
            or (req.operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _ready_since(vm: JSON) -> datetime | None:
    """When the VM became Ready (at its current generation), or None when it is not."""
    cond = ready_condition(vm)
    if cond is None:
        return None
    at = cond.get("lastTransitionTime") or ""
    return datetime.fromisoformat(at.replace("Z", "+00:00")) if at else datetime.now(UTC)


def _first_waiting(vms: list[JSON]) -> str:
    """'VirtualMachine ns/x is not Ready: REASON: message' for the first VM (by name) that
    is Pending or Failed for a reason other than its hypervisor being busy, so a set whose
    VMs all wait for the same fix (a missing class, a Provider that does not grant the
    namespace) says so itself; "" when there is none."""
    for vm in sorted(vms, key=lambda v: str(v["metadata"]["name"])):
        cond = waiting_for_a_fix(vm)
        if cond is not None:
            meta = vm["metadata"]
            return (
                f"VirtualMachine {meta.get('namespace')}/{meta['name']} is not Ready: "
                f"{cond.get('reason')}: {str(cond.get('message') or '')[:300]}"
            )
    return ""


def _dump(status: VMSetStatus) -> JSON:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _same(obj: JSON, status: JSON) -> bool:
    return _dump(VMSetStatus.model_validate(obj.get("status") or {})) == status


class VMSetReconciler:
    def __init__(self, ctx: ShardContext) -> None:
        self.ctx = ctx
        self.expectations = Expectations()

    async def forget(self, key: str) -> None:
        self.expectations.forget(key)

    async def reconcile(self, key: str, obj: JSON | None) -> ReconcileResult:
        if obj is None:
            obj = await read_object(self.ctx.kube, VM_SETS, key)
            if obj is None:
                return ReconcileResult()
        obj = dict(obj)
        members = obj.pop(MEMBERS_FIELD, None)  # never written back
        run = _Pass(self.ctx, obj, key, self.expectations, members)
        if obj["metadata"].get("deletionTimestamp"):
            self.expectations.forget(key)
            return ReconcileResult(requeue_after=await run.finalize())
        return ReconcileResult(requeue_after=await run.converge())


class _Pass:
    def __init__(
        self,
        ctx: ShardContext,
        obj: JSON,
        key: str,
        expectations: Expectations,
        members: JSON | None = None,
    ) -> None:
        self.ctx = ctx
        self.obj = obj
        self.key = key
        self.expectations = expectations
        self.members = members
        self.set = VMSet.from_api(obj)
        self.status = VMSetStatus.model_validate(obj.get("status") or {})
        self.namespace = str(obj["metadata"].get("namespace") or "default")
        self.name = str(obj["metadata"]["name"])
        self.uid = str(obj["metadata"]["uid"])
        self.generation = int(obj["metadata"].get("generation") or 0)

    def ref(self) -> str:
        return f"VMSet {self.namespace}/{self.name}"

    # ------------------------------------------------------------------ reading

    async def owned(self) -> list[JSON]:
        listed = await self.ctx.kube.list(
            VIRTUAL_MACHINES, self.namespace, label_selector=f"{SET_LABEL}={self.name}"
        )
        return [
            vm
            for vm in listed.get("items", [])
            if any(
                o.get("uid") == self.uid and o.get("controller")
                for o in vm["metadata"].get("ownerReferences") or []
            )
        ]

    def replica(self, vm: JSON, now: datetime) -> Replica | None:
        labels = vm["metadata"].get("labels") or {}
        try:
            ordinal = int(labels.get(ORDINAL_LABEL, ""))
        except ValueError:
            return None
        since = _ready_since(vm)
        min_ready = timedelta(seconds=self.set.spec.min_ready_seconds)
        deleting = bool(vm["metadata"].get("deletionTimestamp"))
        available = not deleting and since is not None and now - since >= min_ready
        return Replica(
            vm["metadata"]["name"],
            ordinal,
            str(labels.get(REVISION_LABEL, "")),
            available,
            deleting,
        )

    def counted(self, update: str) -> list[Replica] | None:
        """The replicas, from the leader's counts of the set's VMs (leader/members.py),
        when those show exactly one VM per wanted ordinal at ``update`` and nothing for
        the plan to do; None: list them. Not with minReadySeconds (availability needs
        each VM's Ready time), nor while a VM waits for a fix (named by the listing)."""
        m = self.members
        pace = self.pace()
        if (
            m is None
            or m.get("uid") != self.uid
            or self.set.spec.min_ready_seconds
            or m.get("deleting")
            or m.get("waiting")
            or m.get("vms") != pace.desired
            or m.get("revisions") != ({update: pace.desired} if pace.desired else {})
            or (pace.desired and m.get("ordinals") != [pace.start, pace.start + pace.desired - 1])
        ):
            return None
        ready = int(m.get("ready") or 0)
        return [
            Replica(f"{self.name}-{o}-{update[:6]}", o, update, available=i < ready)
            for i, o in enumerate(range(pace.start, pace.start + pace.desired))
        ]

    def pace(self) -> Pace:
        spec = self.set.spec
        strategy = spec.update_strategy
        rolling = strategy.rolling_update if strategy else None
        desired = spec.replicas
        max_surge = count_of(rolling.max_surge if rolling else "25%", desired, round_up=True)
        max_unavailable = count_of(
            rolling.max_unavailable if rolling else "25%", desired, round_up=False
        )
        if max_surge == 0 and max_unavailable == 0:
            max_unavailable = 1  # as Deployments do: otherwise nothing could ever move
        return Pace(
            desired=desired,
            start=spec.ordinals.start if spec.ordinals else 0,
            strategy=strategy.type if strategy else "RollingUpdate",
            max_surge=max_surge,
            max_unavailable=max_unavailable,
            partition=(rolling.partition or 0) if rolling else 0,
            ordered=bool(rolling and rolling.pod_management_policy == "OrderedReady"),
        )

    # ------------------------------------------------------------------ converge

    async def converge(self) -> float | None:
        spec = self.set.spec
        labels = spec.template.metadata.labels
        if not selects(spec.selector, labels):
            message = (
                f"{self.ref()}: spec.selector does not select spec.template.metadata.labels "
                f"({labels}); the set's VirtualMachines would not be its own. Make the "
                "template's labels match the selector"
            )
            await self.report(False, "SelectorMismatch", message, warn=True)
            return None
        await report_unsupported_fields(
            self.status.conditions,
            self.generation,
            "VMSet",
            self.obj.get("spec") or {},
            None,
            "the VMSet controller",
            self.warn,
        )
        self.obj, _ = await objects.set_finalizer(self.ctx.kube, VM_SETS, self.obj, FINALIZER, True)
        update = template_revision(self.obj)
        # A pass working through a backlog plans from what the last one left (no LIST).
        expected = self.expectations.take(self.key, self.uid, self.generation, update)
        # A set whose VMs are all there, at its revision, learns how many are Ready from
        # the counts the leader hands over with it (no LIST).
        counted = self.counted(update) if expected is None else None
        listed = expected is None and counted is None
        vms = await self.owned() if listed else []
        now = datetime.now(UTC)
        if expected is not None:
            replicas = expected
        elif counted is not None:
            replicas = counted
        else:
            replicas = [r for r in (self.replica(vm, now) for vm in vms) if r is not None]
        current = self.status.current_revision
        if current is None:
            revisions = Counter(r.revision for r in replicas if not r.deleting)
            current = revisions.most_common(1)[0][0] if revisions else update
        pace = self.pace()
        todo = plan(replicas, pace, update, current)
        deletes = todo.delete[:BATCH]
        creates = todo.create[: BATCH - len(deletes)]
        created = await self.apply(creates, deletes, update)
        backlog = len(todo.create) + len(todo.delete) > len(creates) + len(deletes)
        if backlog:
            self.expectations.expect(
                self.key, self.uid, self.generation, update, replicas, created, deletes
            )

        live = [r for r in replicas if not r.deleting and r.name not in deletes]
        wanted = range(pace.start, pace.start + pace.desired)
        in_range = [r for r in live if r.ordinal in wanted]
        done = (
            not todo.create
            and not todo.delete
            and len(live) == pace.desired
            and all(r.revision == update and r.available for r in live)
            and not any(r.deleting for r in replicas)
        )
        if done:
            current = update
        self.status.replicas = len(live) + len(creates)
        if listed:
            self.status.ready_replicas = sum(
                1
                for vm in vms
                if _ready_since(vm) is not None and not vm["metadata"].get("deletionTimestamp")
            )
        elif counted is not None and self.members is not None:
            self.status.ready_replicas = int(self.members.get("ready") or 0)
        # else (a backlog pass): as the last LIST found them
        self.status.available_replicas = sum(1 for r in in_range if r.available)
        self.status.updated_replicas = sum(1 for r in live if r.revision == update) + len(
            [c for c in creates if c[1] == update]
        )
        self.status.current_replicas = sum(1 for r in live if r.revision == current)
        self.status.current_revision = current
        self.status.update_revision = update
        self.status.selector = selector_string(spec.selector)
        self.status.observed_generation = self.generation
        if done:
            message = f"{pace.desired} of {pace.desired} VirtualMachines available at {update}"
            set_condition(
                self.status.conditions,
                PROGRESSING,
                False,
                "Converged",
                message,
                observed_generation=self.generation,
            )
            await self.report(True, "Converged", message)
            return STEADY_POLL
        message = (
            f"{self.status.available_replicas} of {pace.desired} available, "
            f"{self.status.updated_replicas} at revision {update}; "
            f"{len(creates)} created and {len(deletes)} deleted in this pass"
        )
        stuck = _first_waiting(vms)
        if stuck:
            message += f"; {stuck}"
        reason = "Updating" if any(r.revision != update for r in live) else "Scaling"
        set_condition(
            self.status.conditions,
            PROGRESSING,
            True,
            reason,
            message,
            observed_generation=self.generation,
        )
        await self.report(False, reason, message)
        if backlog:
            return BACKLOG_POLL
        return max(PROGRESS_POLL, len(replicas) / VMS_PER_POLL_SECOND)

    async def apply(
        self, creates: list[tuple[int, str]], deletes: list[str], update: str
    ) -> list[Replica]:
        """Delete and create concurrently; the replicas created (or found existing)."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def create(ordinal: int, revision: str) -> Replica:
            async with gate:
                name, revision = await self.create_vm(ordinal, revision, update)
                return Replica(name, ordinal, revision, available=False)

        async def delete(name: str) -> None:
            async with gate:
                try:
                    await self.ctx.kube.delete(VIRTUAL_MACHINES, name, self.namespace)
                except ApiError as e:
                    if not e.not_found:
                        raise

        done = await asyncio.gather(
            *(create(o, r) for o, r in creates), *(delete(n) for n in deletes)
        )
        created = [r for r in done if isinstance(r, Replica)]
        if creates:
            await self.event(
                "Normal", "SuccessfulCreate", f"created {len(creates)} VirtualMachines"
            )
        if deletes:
            await self.event(
                "Normal", "SuccessfulDelete", f"deleted {len(deletes)} VirtualMachines"
            )
        return created

    async def create_vm(self, ordinal: int, revision: str, update: str) -> tuple[str, str]:
        """Create one VirtualMachine; its name and revision (the template's when no
        sibling of ``revision`` is left to copy)."""
        template: JSON = (self.obj.get("spec") or {}).get("template") or {}
        if revision != update:
            # Ordinals below the partition keep the current revision: made again from the
            # template of a sibling of that revision; with none left, from the new one.
            found = await self.template_of(revision)
            if found is None:
                revision = update
            else:
                template = found
        meta = template.get("metadata") or {}
        labels = {
            **(meta.get("labels") or {}),
            SET_LABEL: self.name,
            ORDINAL_LABEL: str(ordinal),
            REVISION_LABEL: revision,
        }
        name = f"{self.name}-{ordinal}-{revision[:6]}"
        body = {
            "apiVersion": API_VERSION,
            "kind": "VirtualMachine",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": meta.get("annotations") or {},
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "VMSet",
                        "name": self.name,
                        "uid": self.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
        }
        try:
            await self.ctx.kube.create(VIRTUAL_MACHINES, body)
        except ApiError as e:
            if e.status != 409:
                raise
        return name, revision

    async def template_of(self, revision: str) -> JSON | None:
        listed = await self.ctx.kube.list(
            VIRTUAL_MACHINES,
            self.namespace,
            label_selector=f"{SET_LABEL}={self.name},{REVISION_LABEL}={revision}",
        )
        for vm in listed.get("items", []):
            meta = vm["metadata"]
            labels = {
                k: v
                for k, v in (meta.get("labels") or {}).items()
                if k not in (SET_LABEL, ORDINAL_LABEL, REVISION_LABEL)
            }
            return {
                "metadata": {"labels": labels, "annotations": meta.get("annotations") or {}},
                "spec": vm.get("spec") or {},
            }
        return None

    # ------------------------------------------------------------------ delete

    async def finalize(self) -> float | None:
        finalizers = self.obj["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers:
            return None
        vms = await self.owned()
        if ORPHAN in finalizers:
            for vm in vms:
                refs = [
                    o
                    for o in vm["metadata"].get("ownerReferences") or []
                    if o.get("uid") != self.uid
                ]
                await self.ctx.kube.patch(
                    VIRTUAL_MACHINES,
                    vm["metadata"]["name"],
                    self.namespace,
                    {"metadata": {"ownerReferences": refs or None}},
                )
            await self.event("Normal", "Orphaned", f"left {len(vms)} VirtualMachines behind")
            for finalizer in (ORPHAN, FINALIZER):
                self.obj = await objects.ensure_finalizer(
                    self.ctx.kube, VM_SETS, self.obj, finalizer, False
                )
            return None
        going = [vm for vm in vms if not vm["metadata"].get("deletionTimestamp")][:BATCH]
        if going:
            await self.apply([], [vm["metadata"]["name"] for vm in going], "")
        if vms:
            return PROGRESS_POLL
        for finalizer in (FOREGROUND, FINALIZER):
            self.obj = await objects.ensure_finalizer(
                self.ctx.kube, VM_SETS, self.obj, finalizer, False
            )
        return None

    # ------------------------------------------------------------------ status

    async def report(self, ready: bool, reason: str, message: str, warn: bool = False) -> None:
        before = get_condition(self.status.conditions, READY)
        changed = set_condition(
            self.status.conditions,
            READY,
            ready,
            reason,
            message,
            observed_generation=self.generation,
        )
        self.obj = await objects.write_status(
            self.ctx.kube, VM_SETS, self.obj, _dump(self.status), _same
        )
        if changed and (before is None or before.reason != reason):
            await self.event("Warning" if warn else "Normal", reason, message)

    async def warn(self, reason: str, message: str) -> None:
        await self.event("Warning", reason, message)

    async def event(self, type_: str, reason: str, message: str) -> None:
        if type_ == "Warning":
            await self.ctx.events.warning(self.obj, reason, f"{self.ref()}: {message}")
        else:
            await self.ctx.events.normal(self.obj, reason, f"{self.ref()}: {message}")
