"""The leader's counts of each VMSet's VirtualMachines (leader/members.py) and the set pass
that takes them instead of listing (controllers/vmset/reconciler.py: _Pass.counted)."""

from __future__ import annotations

from typing import Any

from virtrigaud.controllers.vmset.plan import plan
from virtrigaud.controllers.vmset.reconciler import _Pass, template_revision
from virtrigaud.leader.members import ORDINAL_LABEL, REVISION_LABEL, MemberIndex

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
