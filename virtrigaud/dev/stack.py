"""DevStack: start, find, check and stop the local servers in one state directory.

One state directory holds one stack. Every public call takes an exclusive file lock on
it, so a CLI and a test session (or two test processes) never start a part twice; what
runs is recorded in ``stack.json`` (see info.py) and `down` stops exactly that.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtrigaud.dev import kubeapi, kubeauth, libvirtd, proxmox, rayhead, redisserver, vcsim
from virtrigaud.dev.config import Progress, StackConfig, StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import (
    PARTS,
    SIMULATORS,
    KubeInfo,
    LibvirtInfo,
    PartInfo,
    ProxmoxInfo,
    StackInfo,
    VcsimInfo,
)
from virtrigaud.dev.process import is_alive, stop

CRDGEN_MODULE = "virtrigaud.api.crdgen"
SECRET_NAMESPACE = "default"
SECRET_NAMES = {
    "vcsim": "vsphere-credentials",
    "libvirt": "libvirt-credentials",
    "proxmox": "proxmox-credentials",
}


@dataclass(frozen=True)
class PartSpec:
    start: Callable[[StartContext], PartInfo]
    check: Callable[[Any], str | None]
    cleanup: Callable[[Any], None] | None = None


SPECS: dict[str, PartSpec] = {
    "kube": PartSpec(kubeapi.start, kubeapi.check),
    "vcsim": PartSpec(vcsim.start, vcsim.check),
    "libvirt": PartSpec(libvirtd.start, libvirtd.check, libvirtd.cleanup),
    "proxmox": PartSpec(proxmox.start, proxmox.check),
    "redis": PartSpec(redisserver.start, redisserver.check),
    "ray": PartSpec(rayhead.start, rayhead.check, rayhead.cleanup),
}


@dataclass(frozen=True)
class PartStatus:
    part: str
    running: bool
    detail: str


def parse_parts(text: str | Iterable[str]) -> list[str]:
    """Validate part names ("kube,redis" or a list) and put them in start order."""
    names = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise StackError(
            "dev stack", f"unknown part(s) {', '.join(unknown)}", f"use some of {', '.join(PARTS)}"
        )
    return [p for p in PARTS if p in names]


class DevStack:
    def __init__(self, state_dir: Path | str, config: StackConfig | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.config = config or StackConfig()
        # _call_lock: one public call at a time per object (the file lock covers processes);
        # _state_lock: stack.json writes, which the Ray thread of `up` makes concurrently.
        self._call_lock = threading.RLock()
        self._state_lock = threading.RLock()
        self._depth = 0

    # ------------------------------------------------------------------ reading

    def info(self) -> StackInfo:
        """What runs here, as recorded in state_dir/stack.json."""
        return StackInfo.load(self.state_dir)

    def status(self) -> dict[str, PartStatus]:
        info = self.info()
        result: dict[str, PartStatus] = {}
        for name in PARTS:
            part = info.part(name)
            if part is None:
                result[name] = PartStatus(name, False, "not started")
                continue
            problem = self._problem(name, part)
            result[name] = PartStatus(name, problem is None, problem or part.address)
        return result

    def _problem(self, name: str, part: PartInfo) -> str | None:
        dead = [p.name for p in part.processes if not is_alive(p)]
        if dead:
            return f"process {', '.join(dead)} is not running"
        return SPECS[name].check(part)

    # ------------------------------------------------------------------ starting

    def up(self, parts: Iterable[str] = PARTS, progress: Progress | None = None) -> StackInfo:
        """Start the parts not already running; on any failure stop what this call started."""
        wanted = parse_parts(parts)
        with self._locked():
            started: list[str] = []
            ray_thread = self._start_ray_in_background(wanted, progress, started)
            try:
                for name in wanted:
                    if name != "ray":
                        self._ensure_locked(name, progress, started)
            except BaseException:
                if ray_thread is not None:
                    ray_thread.join()
                self._stop_parts(started)
                raise
            if ray_thread is not None:
                ray_thread.join()
                if ray_thread.error is not None:
                    self._stop_parts(started)
                    raise ray_thread.error
            kube = self.info().kube
            if "kube" in wanted and "kube" not in started and kube is not None:
                # An API server that was already up gets the current CRDs (they may have
                # changed since it started).
                self._apply_crds(kube, progress)
            return self.info()

    def _start_ray_in_background(
        self, wanted: list[str], progress: Progress | None, started: list[str]
    ) -> _PartThread | None:
        # Ray takes seconds to start while the rest takes about one: overlap them.
        if "ray" not in wanted:
            return None
        thread = _PartThread(lambda: self._ensure_locked("ray", progress, started))
        thread.start()
        return thread

    def ensure(self, part: str, progress: Progress | None = None) -> PartInfo:
        """Start one part unless it already runs healthy in this state dir; return its info."""
        (name,) = parse_parts([part])
        with self._locked():
            started: list[str] = []
            try:
                return self._ensure_locked(name, progress, started)
            except BaseException:
                self._stop_parts(started)
                raise

    def _ensure_locked(self, name: str, progress: Progress | None, started: list[str]) -> PartInfo:
        info = self.info()
        current = info.part(name)
        if current is not None:
            if self._problem(name, current) is None:
                self._check_same_mode(name, current)
                return current
            # Recorded but broken (crashed, or the machine rebooted): clear it, start afresh.
            self._stop_part(name, current)
            self._record(name, None)
        ctx = StartContext(str(self.state_dir), self.config, progress)
        part = SPECS[name].start(ctx)
        started.append(name)
        self._record(name, part)
        if name == "kube":
            assert isinstance(part, KubeInfo)
            self._apply_crds(part, progress)
            for sim in SIMULATORS:
                self._write_secret(sim)
        elif name in SIMULATORS:
            self._write_secret(name)
        return self.info().part(name) or part

    def _check_same_mode(self, name: str, running: PartInfo) -> None:
        # An API server without RBAC would silently grant what an RBAC run must prove;
        # one with RBAC still gives the admin kubeconfig full access, so it serves both.
        if name == "kube" and self.config.kube_rbac:
            assert isinstance(running, KubeInfo)
            if not running.rbac:
                raise StackError(
                    "kube",
                    f"the API server in {self.state_dir} runs without RBAC, but RBAC was asked for",
                    f"stop it first: `virtrigaud dev down --state-dir {self.state_dir}`",
                )

    def _record(self, name: str, part: PartInfo | None) -> None:
        with self._state_lock:
            info = self.info()
            setattr(info, name, part)
            if part is None and name in SECRET_NAMES:
                info.secrets = [s for s in info.secrets if s != SECRET_NAMES[name]]
            info.save()

    # ------------------------------------------------------------------ kube objects

    def _apply_crds(self, kube: KubeInfo, progress: Progress | None) -> None:
        if importlib.util.find_spec(CRDGEN_MODULE) is None:
            kube.crd_note = f"no CRDs applied: {CRDGEN_MODULE} does not exist yet"
            self._record("kube", kube)
            return
        try:
            crdgen = importlib.import_module(CRDGEN_MODULE)
            crds = crdgen.all_crds()
        except Exception as e:
            raise StackError(
                "kube",
                f"{CRDGEN_MODULE}.all_crds() failed: {type(e).__name__}: {e}",
                f"fix {CRDGEN_MODULE}",
            ) from e
        if progress:
            progress("apply CRDs", 0, len(crds))
        client = kubeapi.open_client(kube)
        try:
            names = [client.apply_crd(crd) for crd in crds]
            client.wait_established(names)
        finally:
            client.close()
        kube.crds = names
        kube.crd_note = ""
        self._record("kube", kube)

    def _write_secret(self, sim: str) -> None:
        with self._state_lock:
            info = self.info()
            sim_info = info.part(sim)
            if info.kube is None or sim_info is None:
                return
            name = SECRET_NAMES[sim]
            client = kubeapi.open_client(info.kube)
            try:
                client.apply_secret(SECRET_NAMESPACE, name, secret_data(sim_info))
            finally:
                client.close()
            info = self.info()
            if name not in info.secrets:
                info.secrets.append(name)
            info.save()

    def add_kube_user(self, name: str, groups: Iterable[str] = ()) -> kubeauth.KubeUser:
        """A token and kubeconfig for `name` on the RBAC-mode API server (see kubeauth)."""
        with self._locked():
            kube = self.info().kube
            if kube is None:
                raise StackError("kube", "the API server is not running", "run `virtrigaud dev up`")
            return kubeauth.add_user(kube, name, list(groups))

    # ------------------------------------------------------------------ stopping

    def down(self) -> None:
        """Stop every part recorded here (whole process sessions) and forget them."""
        with self._locked():
            info = self.info()
            self._stop_parts([n for n in PARTS if info.part(n) is not None])

    def _stop_parts(self, names: list[str]) -> None:
        errors: list[StackError] = []
        for name in reversed(PARTS):
            if name not in names:
                continue
            part = self.info().part(name)
            if part is None:
                continue
            try:
                self._stop_part(name, part)
            except StackError as e:
                errors.append(e)
            self._record(name, None)
        if errors:
            raise errors[0]

    def _stop_part(self, name: str, part: PartInfo) -> None:
        for rec in reversed(part.processes):
            stop(rec, grace=3.0 if name == "ray" else 5.0)
        cleanup = SPECS[name].cleanup
        if cleanup is not None:
            cleanup(part)

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._call_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with (self.state_dir / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def remove_state(self) -> None:
        """Delete the state dir (only once nothing runs from it)."""
        if self.info().running_parts():
            raise StackError("dev stack", "parts still run here", "run down first")
        shutil.rmtree(self.state_dir, ignore_errors=True)


def secret_data(sim_info: PartInfo) -> dict[str, str]:
    """The credential Secret's keys for one simulator."""
    if isinstance(sim_info, VcsimInfo):
        return {"username": sim_info.username, "password": sim_info.password}
    if isinstance(sim_info, LibvirtInfo):
        return {"uri": sim_info.uri}
    if isinstance(sim_info, ProxmoxInfo):
        return {"token_id": sim_info.token_id, "token_secret": sim_info.token_secret}
    raise TypeError(f"no credential Secret for {type(sim_info).__name__}")


class _PartThread(threading.Thread):
    def __init__(self, target: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as e:
            self.error = e
