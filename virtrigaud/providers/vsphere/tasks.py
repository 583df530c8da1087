"""Restart-safe task references for vSphere.

``vsphere-task:<task moref>`` is a vCenter task: any later session reads it by moref.
``vsphere-shutdown:<vm moref>:<deadline>`` is a guest shutdown (which vCenter does not run
as a task): it is done once the VM is off, and turns into a hard power-off once the
deadline (Unix time) passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from virtrigaud.providers.base import NotFoundError, TaskRef, TerminalError
from virtrigaud.providers.vsphere.inventory import retrieve
from virtrigaud.providers.vsphere.sdk import vim
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


def read_tasks(conn: Connection, task_ids: list[str]) -> dict[str, TaskState]:
    """Several tasks in one RetrieveContents (the call fails as a whole when one of them is
    no longer known: see TaskReads). Only these paths: vcsim names a snapshot as the
    ``entity`` of snapshot tasks, which pyVmomi refuses to deserialise as a ManagedEntity."""
    objs = [vim.Task(task_id, conn.stub) for task_id in task_ids]
    found = retrieve(conn, objs, vim.Task, TASK_PROPERTIES, view=False)
    return {
        str(obj._moId): TaskState(
            str(props.get("info.state")),
            props.get("info.progress"),
            props.get("info.error"),
            props.get("info.result"),
            str(props.get("info.descriptionId") or ""),
        )
        for obj, props in found
    }


ReadTasks = Callable[[list[str]], Awaitable[dict[str, TaskState]]]


class TaskReads:
    """Task reads asked for at once go out in one call: the first read is sent at once, and
    the reads asked for while a call is out are sent together in the next one. So a
    session that follows many tasks (a fleet being created) reads them in few calls,
    without waiting to collect them.

    A call that fails for a task vCenter no longer knows (ManagedObjectNotFound fails the
    whole call) is repeated one task at a time, so only that task's reader sees it."""

    def __init__(self, read: ReadTasks) -> None:
        self._read = read
        self._queued: dict[str, asyncio.Future[TaskState]] = {}
        self._sender: asyncio.Task[None] | None = None

    async def read(self, task_id: str) -> TaskState:
        future = self._queued.get(task_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._queued[task_id] = future
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="vsphere-task-reads")
        return await asyncio.shield(future)

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, {}
            try:
                found = await self._read(list(batch))
            except NotFoundError as e:
                if len(batch) == 1:
                    _fail(batch, e)
                else:
                    await self._one_by_one(batch)
                continue
            except BaseException as e:  # every waiter gets the call's error
                _fail(batch, e)
                if not isinstance(e, Exception):
                    raise
                continue
            for task_id, future in batch.items():
                if future.done():
                    continue
                if task_id in found:
                    future.set_result(found[task_id])
                else:
                    future.set_exception(NotFoundError(f"task {task_id} is not known"))

    async def _one_by_one(self, batch: dict[str, asyncio.Future[TaskState]]) -> None:
        for task_id, future in batch.items():
            try:
                found = await self._read([task_id])
            except Exception as e:
                _fail({task_id: future}, e)
                continue
            if not future.done():
                if task_id in found:
                    future.set_result(found[task_id])
                else:
                    future.set_exception(NotFoundError(f"task {task_id} is not known"))


def _fail(batch: dict[str, asyncio.Future[TaskState]], error: BaseException) -> None:
    for future in batch.values():
        if not future.done():
            future.set_exception(error)
