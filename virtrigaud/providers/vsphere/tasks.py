"""Restart-safe task references for vSphere.

``vsphere-task:<task moref>`` is a vCenter task: any later session reads it by moref.
``vsphere-shutdown:<vm moref>:<deadline>`` is a guest shutdown (which vCenter does not run
as a task): it is done once the VM is off, and turns into a hard power-off once the
deadline (Unix time) passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtrigaud.providers.base import TaskRef, TerminalError
from virtrigaud.providers.vsphere.inventory import retrieve
from virtrigaud.providers.vsphere.sdk import vim, vmodl
from virtrigaud.providers.vsphere.session import Connection

TASK_PREFIX = "vsphere-task:"
SHUTDOWN_PREFIX = "vsphere-shutdown:"


def task_ref(task: Any) -> TaskRef:
    return f"{TASK_PREFIX}{task._moId}"


def shutdown_ref(vm_id: str, deadline: float) -> TaskRef:
    return f"{SHUTDOWN_PREFIX}{vm_id}:{deadline:.3f}"


@dataclass(frozen=True)
class ShutdownRef:
    vm_id: str
    deadline: float


def parse(ref: TaskRef) -> str | ShutdownRef:
    """The task moref of a vCenter task, or the parts of a guest shutdown."""
    if ref.startswith(TASK_PREFIX) and len(ref) > len(TASK_PREFIX):
        return ref.removeprefix(TASK_PREFIX)
    if ref.startswith(SHUTDOWN_PREFIX):
        vm_id, _, deadline = ref.removeprefix(SHUTDOWN_PREFIX).rpartition(":")
        try:
            return ShutdownRef(vm_id, float(deadline))
        except ValueError:
            pass
    raise TerminalError(
        f"task reference {ref!r} is not a vSphere task; it was recorded by another provider "
        "type or edited by hand: clear status.lastTaskRef",
        field="status.lastTaskRef",
    )


@dataclass(frozen=True)
class TaskState:
    state: str  # queued, running, success, error
    progress: int | None
    error: Any
    result: Any
    description_id: str = ""  # e.g. VirtualMachine.powerOn


POWER_TASKS = frozenset({"VirtualMachine.powerOn", "VirtualMachine.powerOff"})


TASK_PROPERTIES = [
    "info.state",
    "info.progress",
    "info.error",
    "info.result",
    "info.descriptionId",
]


def read_task(conn: Connection, task_id: str) -> TaskState:
    """One RetrieveContents. Only these paths: vcsim names a snapshot as the ``entity`` of
    snapshot tasks, which pyVmomi refuses to deserialise as a ManagedEntity."""
    found = retrieve(conn, [vim.Task(task_id, conn.stub)], vim.Task, TASK_PROPERTIES, view=False)
    if not found:
        raise vmodl.fault.ManagedObjectNotFound(obj=vim.Task(task_id, conn.stub))
    props = found[0][1]
    return TaskState(
        str(props.get("info.state")),
        props.get("info.progress"),
        props.get("info.error"),
        props.get("info.result"),
        str(props.get("info.descriptionId") or ""),
    )
