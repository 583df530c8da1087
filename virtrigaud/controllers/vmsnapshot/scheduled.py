"""A VMSnapshot with an enabled schedule takes no snapshot itself: at each firing of
``spec.schedule.cronSpec`` it creates a VMSnapshot of the same VM (labelled with the
schedule's name, named after the firing), and it keeps ``retentionPolicy.maxCount`` of
them by deleting the oldest (their finalizers delete the hypervisor snapshots).
``maxAge`` is copied to each snapshot taken, which expires on its own.

The pass never waits: it acts on what is due at the clock's now and asks to be looked at
again at the next firing. Firings missed while no shard ran the schedule are caught up by
one snapshot for the latest of them. Deleting the schedule leaves the snapshots it took
(each is an ordinary VMSnapshot; delete them with ``-l
snapshot.infra.virtrigaud.io/schedule=NAME``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from virtrigaud.api.common import parse_duration
from virtrigaud.api.vmsnapshot import SnapshotPhase
from virtrigaud.controllers.vmsnapshot.passbase import (
    JSON,
    READY,
    SCHEDULE_LABEL,
    SCHEDULED,
    SCHEDULED_AT,
    Failed,
    SnapshotPassBase,
)
from virtrigaud.controllers.vmsnapshot.schedule import (
    ScheduleError,
    Taken,
    over_count,
    parse_cron,
    seconds_until,
)
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VM_SNAPSHOTS

API_VERSION = "infra.virtrigaud.io/v1beta1"
SETTLED = {SnapshotPhase.READY, SnapshotPhase.EXPIRED, SnapshotPhase.FAILED}


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _phase(child: JSON) -> SnapshotPhase | None:
    value = (child.get("status") or {}).get("phase")
    return SnapshotPhase(value) if value in set(SnapshotPhase) else None


class ScheduledSnapshots(SnapshotPassBase):
    async def run(self) -> float | None:
        schedule = self.snap.spec.schedule
        assert schedule is not None and schedule.cron_spec is not None
        try:
            cron = parse_cron(schedule.cron_spec, schedule.timezone)
        except ScheduleError as e:
            raise Failed("InvalidSchedule", f"{e.field}: {e.message}") from e
        policy = self.snap.spec.retention_policy
        max_age = policy.max_age if policy is not None else None
        if max_age is not None and parse_duration(max_age) <= timedelta(0):
            raise Failed(
                "InvalidRetention",
                f"spec.retentionPolicy.maxAge {max_age!r} must be longer than 0; "
                "set a duration such as 168h or remove it",
            )
        children = await self.children()
        now = self.clock()
        since = self.status.last_schedule_time or _time(
            self.obj["metadata"].get("creationTimestamp")
        )
        assert since is not None
        if not schedule.suspend:
            due = cron.last_at_or_before(now, since)
            if due is not None:
                children = await self.fire(due, children, schedule.concurrency_policy)
                self.status.last_schedule_time = due
        if policy is not None:
            await self.keep(children, policy.max_count, policy.preserve_pinned)
        following = cron.next_after(max(now, self.status.last_schedule_time or since))
        kept = len(children)
        state = "suspended" if schedule.suspend else f"next at {following:%Y-%m-%dT%H:%M:%SZ}"
        message = f"schedule {schedule.cron_spec!r} ({schedule.timezone}): {state}; {kept} kept"
        self.phase(SnapshotPhase.READY, message)
        self.condition(READY, True, "Scheduled", message)
        self.condition(
            SCHEDULED, not schedule.suspend, "Suspended" if schedule.suspend else "Active", message
        )
        self.status.observed_generation = self.generation
        await self.save()
        return None if schedule.suspend else seconds_until([following], now)

    async def children(self) -> list[JSON]:
        listed = await self.ctx.kube.list(
            VM_SNAPSHOTS, self.namespace, label_selector=f"{SCHEDULE_LABEL}={self.name}"
        )
        return [
            c
            for c in listed.get("items", [])
            if not c["metadata"].get("deletionTimestamp")
            and (c.get("spec") or {}).get("vmRef", {}).get("name") == self.snap.spec.vm_ref.name
        ]

    def child_name(self, due: datetime) -> str:
        return f"{self.name[:48]}-{due:%Y%m%d%H%M}"

    async def fire(self, due: datetime, children: list[JSON], policy: str) -> list[JSON]:
        running = [c for c in children if _phase(c) not in SETTLED]
        name = self.child_name(due)
        if any(c["metadata"]["name"] == name for c in children):
            return children
        if running and policy == "Forbid":
            await self.event(
                "Normal",
                "Skipped",
                f"skipped the firing at {due:%Y-%m-%dT%H:%M:%SZ}: "
                f"{running[0]['metadata']['name']} is still being taken "
                "(spec.schedule.concurrencyPolicy Forbid)",
            )
            return children
        if running and policy == "Replace":
            for child in running:
                await self.delete_child(child, "replaced by a newer firing")
            children = [c for c in children if c not in running]
        created = await self.create_child(name, due)
        await self.event(
            "Normal",
            "Scheduled",
            f"created VMSnapshot {name} for the firing at {due:%Y-%m-%dT%H:%M:%SZ}",
        )
        return [*children, created]

    async def create_child(self, name: str, due: datetime) -> JSON:
        spec = self.snap.spec
        child_spec: JSON = {"vmRef": {"name": spec.vm_ref.name}}
        if spec.snapshot_config is not None:
            config = spec.snapshot_config.model_dump(mode="json", by_alias=True, exclude_none=True)
            config.pop("name", None)  # each snapshot is named after its VMSnapshot
            child_spec["snapshotConfig"] = config
        if spec.retention_policy is not None:
            kept = spec.retention_policy.model_dump(mode="json", by_alias=True, exclude_none=True)
            kept.pop("maxCount", None)  # the schedule counts; each snapshot keeps its age
            child_spec["retentionPolicy"] = kept
        if spec.metadata is not None:
            child_spec["metadata"] = spec.metadata.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
        body: JSON = {
            "apiVersion": API_VERSION,
            "kind": "VMSnapshot",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {SCHEDULE_LABEL: self.name},
                "annotations": {SCHEDULED_AT: due.strftime("%Y-%m-%dT%H:%M:%SZ")},
            },
            "spec": child_spec,
        }
        try:
            return await self.ctx.kube.create(VM_SNAPSHOTS, body)
        except ApiError as e:
            if not e.conflict and e.status != 409:
                raise
            return await self.ctx.kube.get(VM_SNAPSHOTS, name, self.namespace)

    async def keep(self, children: list[JSON], max_count: int | None, preserve: bool) -> None:
        taken = []
        for child in children:
            meta = child["metadata"]
            at = _time((meta.get("annotations") or {}).get(SCHEDULED_AT)) or _time(
                meta.get("creationTimestamp")
            )
            pinned = bool(((child.get("spec") or {}).get("metadata") or {}).get("pinned"))
            if at is not None:
                taken.append(Taken(meta["name"], at, pinned))
        surplus = set(over_count(taken, max_count, preserve_pinned=preserve))
        for child in children:
            if child["metadata"]["name"] in surplus:
                await self.delete_child(
                    child, f"more than spec.retentionPolicy.maxCount {max_count} kept"
                )
        children[:] = [c for c in children if c["metadata"]["name"] not in surplus]

    async def delete_child(self, child: JSON, why: str) -> None:
        name = child["metadata"]["name"]
        try:
            await self.ctx.kube.delete(
                VM_SNAPSHOTS, name, self.namespace, preconditions={"uid": child["metadata"]["uid"]}
            )
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise
        await self.event("Normal", "RetentionDelete", f"deleting VMSnapshot {name}: {why}")
