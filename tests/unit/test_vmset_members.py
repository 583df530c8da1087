"""The leader's counts of each VMSet's VirtualMachines (leader/members.py) and the set pass
that takes them instead of listing (controllers/vmset/reconciler.py: _Pass.counted)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from virtrigaud.controllers.vmset.plan import plan
from virtrigaud.controllers.vmset.reconciler import _Pass, template_revision
from virtrigaud.leader import coordinator as coordinator_module
from virtrigaud.leader.coordinator import Coordinator
from virtrigaud.leader.members import (
    MEMBERS_FIELD,
    ORDINAL_LABEL,
    PERIOD,
    REVISION_LABEL,
    MemberIndex,
)
from virtrigaud.shards.actor import ShardConfig

JSON = dict[str, Any]
NS = "ns"


def vmset(replicas: int, uid: str = "set-uid", **spec: Any) -> JSON:
    return {
        "apiVersion": "infra.virtrigaud.io/v1beta1",
        "kind": "VMSet",
        "metadata": {"name": "web", "namespace": NS, "uid": uid, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"providerRef": {"name": "p"}, "classRef": {"name": "c"}},
            },
            **spec,
        },
    }


def member(ordinal: int, revision: str, *, ready: bool = False, uid: str = "set-uid") -> JSON:
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "reason": "x"}]
    if not ready:
        conditions[0]["reason"] = "TaskInProgress"
    return {
        "metadata": {
            "name": f"web-{ordinal}-{revision[:6]}",
            "namespace": NS,
            "generation": 1,
            "labels": {ORDINAL_LABEL: str(ordinal), REVISION_LABEL: revision},
            "ownerReferences": [{"kind": "VMSet", "name": "web", "uid": uid, "controller": True}],
        },
        "status": {"observedGeneration": 1, "phase": "Pending", "conditions": conditions},
    }


def key(vm: JSON) -> str:
    return f"VirtualMachine/{NS}/{vm['metadata']['name']}"


def test_counts_follow_each_member_and_only_its_changes_count() -> None:
    index = MemberIndex()
    rev = "abcdef0123"
    vms = [member(o, rev) for o in range(3)]
    for vm in vms:
        assert index.update(key(vm), vm) == {"VMSet/ns/web"}
    assert index.update(key(vms[0]), vms[0]) == set()  # nothing it counts changed
    assert index.update(key(vms[0]), member(0, rev, ready=True)) == {"VMSet/ns/web"}
    stranger = member(7, rev, uid="another-set")
    index.update(key(stranger), stranger)
    counts = index.counts("VMSet/ns/web", "set-uid")
    assert counts == {
        "uid": "set-uid",
        "vms": 3,
        "ready": 1,
        "deleting": 0,
        "waiting": 0,
        "revisions": {rev: 3},
        "ordinals": [0, 2],
    }
    assert index.update(key(vms[2]), None) == {"VMSet/ns/web"}
    assert index.counts("VMSet/ns/web", "set-uid")["vms"] == 2
    unowned = {"metadata": {"name": "x", "namespace": NS}}
    assert index.update(f"VirtualMachine/{NS}/x", unowned) == set()


def counted(obj: JSON, vms: list[JSON]) -> Any:
    index = MemberIndex()
    for vm in vms:
        index.update(key(vm), vm)
    run = _Pass(None, obj, "VMSet/ns/web", None, index.counts("VMSet/ns/web", "set-uid"))  # type: ignore[arg-type]
    return run.counted(template_revision(obj)), run


def test_a_set_whose_vms_are_all_there_takes_the_counts() -> None:
    obj = vmset(3)
    rev = template_revision(obj)
    replicas, run = counted(
        obj, [member(0, rev, ready=True), member(1, rev), member(2, rev, ready=True)]
    )
    assert replicas is not None
    assert sum(r.available for r in replicas) == 2
    todo = plan(replicas, run.pace(), rev, rev)
    assert not todo.create and not todo.delete


def test_anything_for_the_plan_to_do_lists_instead() -> None:
    obj = vmset(3)
    rev = template_revision(obj)
    full = [member(o, rev) for o in range(3)]
    assert counted(obj, full[:2])[0] is None  # one missing
    assert counted(obj, [*full[:2], member(5, rev)])[0] is None  # one out of range
    assert counted(obj, [*full[:2], member(2, "old0000000")])[0] is None  # an old revision
    assert counted(vmset(3, minReadySeconds=10), full)[0] is None  # availability needs times
    assert counted(vmset(3, uid="recreated"), full)[0] is None  # counts of another set
    broken = member(0, rev)
    broken["status"]["conditions"][0]["reason"] = "ClassNotFound"
    assert counted(obj, [broken, *full[1:]])[0] is None  # named by the listing
    assert counted(vmset(0), [])[0] == []


async def test_the_leader_hands_a_set_its_counts_at_most_once_a_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader = Coordinator(None, ShardConfig())  # type: ignore[arg-type]
    obj = vmset(2)
    rev = template_revision(obj)
    set_key = "VMSet/ns/web"
    leader.informers["VMSet"] = SimpleNamespace(store={set_key: obj})  # type: ignore[assignment]
    leader.ready = True
    leader.holder[set_key] = "shard-0"
    leader.shards["shard-0"] = SimpleNamespace()  # type: ignore[assignment]
    now = [1000.0]
    monkeypatch.setattr(coordinator_module.time, "monotonic", lambda: now[0])
    for o in range(2):
        leader._on_event("ADDED", key(member(o, rev)), member(o, rev))
    leader._on_event("MODIFIED", key(member(0, rev)), member(0, rev, ready=True))
    leader._members_changed()
    assert set_key not in leader._delivers["shard-0"]  # gathered for a period first
    now[0] += PERIOD
    leader._members_changed()
    delivered = leader._delivers["shard-0"][set_key]
    assert delivered is obj  # the counts are attached when it is sent:
    sent = leader._with_usage(set_key, delivered)
    assert sent is not None
    assert sent[MEMBERS_FIELD]["vms"] == 2 and sent[MEMBERS_FIELD]["ready"] == 1
    assert MEMBERS_FIELD not in obj
    assert not leader._members_due
