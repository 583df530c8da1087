"""The stack's own contract: idempotent ensure, clean down, one-line errors, rollback.

These use private stacks in their own temp dirs (not the session one), since they stop,
break and restart things.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtrigaud.dev import gobuild
from virtrigaud.dev import stack as stack_module
from virtrigaud.dev.cli import dev_app
from virtrigaud.dev.config import StackConfig
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import KubeInfo, StackInfo
from virtrigaud.dev.process import is_alive, listening_ports, port_is_free, session_members
from virtrigaud.dev.stack import DevStack

pytestmark = pytest.mark.stack


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[DevStack]:
    stack = DevStack(tmp_path / "stack")
    yield stack
    stack.down()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _all_pids(info: StackInfo) -> list[int]:
    return [
        pid
        for part in info.running_parts().values()
        for rec in part.processes
        for pid in session_members(rec.pid)
    ]


def test_down_leaves_no_process_and_no_listening_port(private_stack: DevStack) -> None:
    info = private_stack.up(["kube", "vcsim", "libvirt", "proxmox", "redis", "ray"])
    pids = _all_pids(info)
    ports = listening_ports(pids)
    # etcd (2), kubelite, vcsim, fakepve, redis, and Ray's GCS and friends.
    assert len(ports) >= 8
    assert info.ray is not None and int(info.ray.address.rsplit(":", 1)[1]) in ports
    private_stack.down()
    alive = [p for p in pids if _running(p)]
    assert alive == []
    assert [p for p in ports if not port_is_free(p)] == []
    assert private_stack.info().running_parts() == {}
    assert not Path(info.ray.temp_dir).exists()
    assert info.libvirt is not None and not Path(info.libvirt.socket).exists()


def test_ensure_is_idempotent_and_another_process_reads_the_same_info(
    private_stack: DevStack,
) -> None:
    first = private_stack.ensure("redis")
    again = private_stack.ensure("redis")
    assert [p.pid for p in again.processes] == [p.pid for p in first.processes]
    # A second DevStack object on the same dir is another process's view: same record.
    other = DevStack(private_stack.state_dir)
    assert other.info().redis == first
    assert other.ensure("redis") == first
    assert (private_stack.state_dir / "stack.json").stat().st_mode & 0o077 == 0


def test_a_crashed_part_is_reported_down_and_restarted_by_ensure(private_stack: DevStack) -> None:
    first = private_stack.ensure("redis")
    pid = first.processes[0].pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_alive(first.processes[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert private_stack.status()["redis"].running is False
    again = private_stack.ensure("redis")
    assert again.processes[0].pid != pid
    assert private_stack.status()["redis"].running is True


def test_user_port_in_use_is_one_line_naming_the_part(
    private_stack: DevStack, busy_port: int
) -> None:
    stack = DevStack(private_stack.state_dir, StackConfig(redis_port=busy_port))
    with pytest.raises(StackError) as err:
        stack.ensure("redis")
    assert err.value.part == "redis"
    assert str(busy_port) in err.value.problem and "in use" in err.value.problem
    assert "--redis-port" in err.value.fix
    assert "\n" not in str(err.value)
    assert stack.info().running_parts() == {}


def test_a_failing_part_rolls_back_what_up_started(private_stack: DevStack, busy_port: int) -> None:
    # vcsim starts before proxmox; proxmox's port is taken, so vcsim must be stopped again.
    stack = DevStack(private_stack.state_dir, StackConfig(proxmox_port=busy_port))
    with pytest.raises(StackError) as err:
        stack.up(["vcsim", "proxmox"])
    assert err.value.part == "proxmox"
    assert stack.info().running_parts() == {}
    ready = (private_stack.state_dir / "logs" / "vcsim.log").read_text()
    m = re.search(r"VCSIM_URL=\S+ PID=(\d+)", ready)
    assert m, "vcsim should have started before the failure"
    assert not _running(int(m.group(1)))


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_missing_package_is_one_line_with_the_fix(
    private_stack: DevStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(StackError) as err:
        private_stack.ensure("redis")
    assert err.value.part == "redis"
    assert err.value.problem == "redis-server is not installed"
    assert "apt-get install redis-server" in err.value.fix
    with pytest.raises(StackError) as lv:
        private_stack.ensure("libvirt")
    assert lv.value.part == "libvirt" and "libvirtd is not installed" in lv.value.problem
    assert private_stack.info().running_parts() == {}


def test_failed_build_stops_the_parts_started_before_it(
    private_stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_build(progress: object = None) -> Path:
        raise StackError("vcsim", "go build failed: main.go:1: syntax error", "fix tools/vcsim")

    monkeypatch.setattr(gobuild, "build_vcsim", broken_build)
    with pytest.raises(StackError) as err:
        private_stack.up(["kube", "vcsim"])
    assert err.value.part == "vcsim"
    assert private_stack.info().running_parts() == {}
    # etcd and kubelite carry the state dir in their arguments (data and cert dirs).
    assert (private_stack.state_dir / "logs" / "etcd.log").exists()
    leftovers = [c for c in _cmdlines() if str(private_stack.state_dir) in c]
    assert leftovers == []


def _cmdlines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _running(int(entry.name)):
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return out


def test_cli_status_exit_codes_and_env(private_stack: DevStack) -> None:
    runner = CliRunner()
    state = str(private_stack.state_dir)
    nothing = runner.invoke(dev_app, ["status", "--state-dir", state])
    assert nothing.exit_code == 1
    up = runner.invoke(dev_app, ["up", "--state-dir", state, "--parts", "redis"])
    assert up.exit_code == 0, up.output
    assert "redis" in up.output
    ok = runner.invoke(dev_app, ["status", "--state-dir", state])
    assert ok.exit_code == 0, ok.output
    env = runner.invoke(dev_app, ["env", "--state-dir", state])
    info = private_stack.info()
    assert info.redis is not None
    assert f"export VIRTRIGAUD_REDIS_URL={info.redis.url}" in env.output
    os.kill(info.redis.processes[0].pid, signal.SIGKILL)
    time.sleep(0.3)
    broken = runner.invoke(dev_app, ["status", "--state-dir", state])
    assert broken.exit_code == 1
    bad = runner.invoke(dev_app, ["up", "--state-dir", state, "--parts", "redis,nope"])
    assert bad.exit_code == 1
    down = runner.invoke(dev_app, ["down", "--state-dir", state])
    assert down.exit_code == 0
    assert private_stack.info().running_parts() == {}


def test_project_crds_are_applied_and_established(kube_info: KubeInfo) -> None:
    from virtrigaud.api.crdgen import all_crds

    assert sorted(kube_info.crds) == sorted(c["metadata"]["name"] for c in all_crds())
    assert kube_info.crd_note == ""


def test_missing_crdgen_is_a_note_not_a_failure(
    private_stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack_module, "CRDGEN_MODULE", "virtrigaud.api.no_such_module")
    kube = private_stack.ensure("kube")
    assert isinstance(kube, KubeInfo)
    assert kube.crds == []
    assert "virtrigaud.api.no_such_module does not exist" in kube.crd_note
    assert private_stack.status()["kube"].running
