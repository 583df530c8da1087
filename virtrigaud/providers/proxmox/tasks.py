"""Restart-safe task references for PVE worker tasks.

A PVE task is named by its UPID (``UPID:node:pid:pstart:starttime:type:id:user:``),
which carries the node that runs it, so a reference alone is enough to poll the task
after a restart: ``GET /nodes/{node}/tasks/{upid}/status``.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtrigaud.providers.base import DONE, TaskRef, TerminalError

PREFIX = "pve-task:"


@dataclass(frozen=True)
class Upid:
    upid: str
    node: str
    type: str
    id: str


def parse_upid(upid: str) -> Upid:
    parts = upid.split(":")
    if len(parts) != 9 or parts[0] != "UPID" or not parts[1]:
        raise TerminalError(f"{upid!r} is not a Proxmox VE task id (UPID:node:...:)")
    return Upid(upid=upid, node=parts[1], type=parts[5], id=parts[6])


def task_ref(upid: object) -> TaskRef:
    """The reference for what a PVE call returned: a UPID, or nothing for a synchronous call."""
    if isinstance(upid, str) and upid.startswith("UPID:"):
        parse_upid(upid)
        return PREFIX + upid
    return DONE


def upid_of(task: TaskRef) -> Upid | None:
    """The UPID inside a reference; None for a ``done:`` reference."""
    if task.startswith("done:"):
        return None
    if not task.startswith(PREFIX):
        raise TerminalError(
            f"task reference {task!r} was not made by the Proxmox provider "
            f"(expected {PREFIX}UPID:... or done:)",
            field="status.lastTaskRef",
        )
    return parse_upid(task[len(PREFIX) :])
