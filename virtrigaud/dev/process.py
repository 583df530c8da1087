"""Spawn, watch and stop the dev stack's processes, by pid and whole session.

Every server runs as the leader of its own session (``start_new_session``), so stopping it
means stopping the session: helpers it forked (Ray's raylet and workers, etcd's nothing,
libvirtd's nothing) go with it. A pid is only trusted together with its start time in
clock ticks, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel

from virtrigaud.dev.errors import StackError
from virtrigaud.netports import free_ports

LOOPBACK = "127.0.0.1"

# Popen objects of processes this interpreter started; kept so they can be reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


class ProcessRecord(BaseModel):
    """One process the stack started: enough to find it again from another process."""

    name: str
    pid: int
    start_ticks: int
    log: str


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name sits in parentheses and may contain spaces; fields follow it.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _alive_pid(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def is_alive(rec: ProcessRecord) -> bool:
    """The recorded process is still running (not a zombie, not a recycled pid)."""
    return _alive_pid(rec.pid) and start_ticks(rec.pid) == rec.start_ticks


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is sid (the session a spawned server leads)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start argv as a new session leader, stdout and stderr into log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            raise StackError(name, f"{argv[0]} is not installed", "run scripts/setup.sh") from e
    _children[proc.pid] = proc
    ticks = start_ticks(proc.pid)
    if ticks is None:
        proc.wait()
        raise StackError(name, f"{argv[0]} exited at once", f"read {log}")
    return ProcessRecord(name=name, pid=proc.pid, start_ticks=ticks, log=str(log))


def _reap(pid: int) -> None:
    proc = _children.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(rec: ProcessRecord, grace: float = 5.0) -> None:
    """SIGTERM the process's whole session, then SIGKILL what is left after grace seconds."""
    leader_alive = is_alive(rec)
    # A session id stays reserved while any member lives, so members of rec.pid's session
    # are ours even after the leader exited.
    if not leader_alive and not session_members(rec.pid):
        _reap(rec.pid)
        return
    _signal_session(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(rec.pid)
        if not session_members(rec.pid):
            return
        time.sleep(0.05)
    _signal_session(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while session_members(rec.pid) and time.monotonic() < deadline:
        _reap(rec.pid)
        time.sleep(0.05)
    _reap(rec.pid)
    left = session_members(rec.pid)
    if left:
        raise StackError(
            rec.name, f"processes {left} survived SIGKILL", "check them with ps and kill by hand"
        )


def kill_session(rec: ProcessRecord) -> list[int]:
    """SIGKILL every process of the record's session at once, as a machine crash would;
    returns the pids that were signalled (the record stays, `stop` cleans up later)."""
    members = session_members(rec.pid)
    _signal_session(rec.pid, signal.SIGKILL)
    return members


def _signal_session(sid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, sig)
    # Members that moved to another process group but stayed in the session.
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def free_port() -> int:
    return free_ports(1)[0]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a port held only by TIME_WAIT connections counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def choose_port(part: str, wanted: int | None, option: str) -> int:
    """The user's port if it is free (else a StackError naming it), or a free one."""
    if wanted is None:
        return free_port()
    if not port_is_free(wanted):
        raise StackError(
            part,
            f"port {wanted} on {LOOPBACK} is already in use",
            f"pick another port with {option}, or stop what listens on {wanted}",
        )
    return wanted


def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports in LISTEN state owned by any of pids (from /proc, no extra tools)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError, ProcessLookupError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def log_tail(path: Path | str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    tail = [line.strip() for line in text.strip().splitlines()[-lines:]]
    return " | ".join(tail) if tail else "(empty log)"


def wait_until(
    part: str,
    what: str,
    check: Callable[[], bool],
    watched: ProcessRecord,
    timeout: float,
    fix: str,
) -> None:
    """Poll check() until true; fail fast if the watched process dies meanwhile."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if check():
            return
        if not is_alive(watched):
            raise StackError(
                part, f"{watched.name} exited before {what}: {log_tail(watched.log)}", fix
            )
        if time.monotonic() > deadline:
            raise StackError(
                part, f"{what} not reached within {timeout:.0f}s: {log_tail(watched.log)}", fix
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def wait_for_line(
    part: str, rec: ProcessRecord, pattern: str, timeout: float, fix: str
) -> re.Match[str]:
    """Wait until the process's log has a line matching pattern and return the match."""
    regex = re.compile(pattern, re.MULTILINE)
    found: list[re.Match[str]] = []

    def check() -> bool:
        with contextlib.suppress(FileNotFoundError):
            m = regex.search(Path(rec.log).read_text(errors="replace"))
            if m:
                found.append(m)
                return True
        return False

    wait_until(part, f"its ready line ({pattern})", check, rec, timeout, fix)
    return found[0]


@contextlib.contextmanager
def rollback(records: list[ProcessRecord]) -> Iterator[list[ProcessRecord]]:
    """Stop every process appended to records if the block raises."""
    try:
        yield records
    except BaseException:
        for rec in reversed(records):
            with contextlib.suppress(StackError):
                stop(rec, grace=2.0)
        raise
