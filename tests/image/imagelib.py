"""Helpers for the image tests: the repo's paths, image/lock.py as a module, and a way to
run a command inside the unpacked image the way a container runtime would.

`run_in_image` starts the command in new PID, mount, IPC, UTS and network namespaces
(only a loopback interface, so nothing in the image can reach or clash with the host's
servers), chrooted into the image's root filesystem, as the image's user, with only the
image's environment and working directory, under its entrypoint's tini. The root is
mounted read-only, or as an overlay whose upper directory then lists every path the
command wrote; /proc, /sys (read-only), /dev with its usual nodes and /dev/shm are
provided the way a runtime provides them, and tmpfs only where the caller asks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IMAGE_OUT = Path(os.environ.get("VIRTRIGAUD_IMAGE_OUT", REPO / "build" / "image"))
HOST_TOOLS = ("umoci", "skopeo", "unshare", "chroot", "ip", "mount")


def load_lock_module() -> ModuleType:
    """image/lock.py is a script, not a package module; load it by path."""
    name = "virtrigaud_image_lock"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "image" / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Image:
    """An image unpacked by umoci: its root filesystem and its OCI config."""

    info: dict[str, Any]
    rootfs: Path
    config: dict[str, Any]

    @property
    def env(self) -> list[str]:
        return list(self.config["config"]["Env"])

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config["config"]["Entrypoint"])


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    written: list[str]
    """Paths the command wrote outside its tmpfs mounts (overlay runs only)."""

    def check(self) -> Result:
        assert self.returncode == 0, (
            f"exit {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n"
            f"--- stderr\n{self.stderr[-4000:]}"
        )
        return self


def unpack(archive: Path, tag: str, into: Path) -> Image:
    """skopeo reads the oci-archive (as a registry client would), umoci unpacks it."""
    layout, bundle = into / "oci", into / "bundle"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci-archive:{archive}:{tag}", f"oci:{layout}:{tag}"],
        check=True,
    )
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    index = json.loads((layout / "index.json").read_text())
    (desc,) = index["manifests"]
    manifest = json.loads(_blob(layout, desc["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    info = json.loads((IMAGE_OUT / "image.json").read_text())
    return Image(info=info, rootfs=bundle / "rootfs", config=config)


def _blob(layout: Path, digest: str) -> bytes:
    algo, hexdigest = digest.split(":", 1)
    return (layout / "blobs" / algo / hexdigest).read_bytes()


def run_in_image(
    image: Image,
    argv: list[str],
    *,
    tmpfs: tuple[str, ...] = ("/tmp",),
    root: str = "ro",
    env: dict[str, str] | None = None,
    shm: str = "64m",
    timeout: float = 180,
) -> Result:
    """Run argv (after the entrypoint's `tini --`) inside the image.

    root: "ro" mounts the image read-only (readOnlyRootFilesystem: true); "overlay" makes
    it writable and reports what was written in Result.written. shm: the size of /dev/shm
    (64 MiB, the container runtimes' default).
    """
    user = image.config["config"]["User"]
    uid, gid = user.split(":")
    workdir = image.config["config"].get("WorkingDir") or "/"
    tini = image.entrypoint[:2]  # ["/usr/bin/tini", "--"]
    environment = image.env + [f"{k}={v}" for k, v in (env or {}).items()]
    with tempfile.TemporaryDirectory(prefix="vr-image-run-") as scratch:
        newroot, upper, work = (Path(scratch, d) for d in ("root", "upper", "work"))
        for d in (newroot, upper, work):
            d.mkdir()
        if root == "ro":
            mount_root = (
                f"mount --bind {image.rootfs} {newroot}\nmount -o remount,bind,ro {newroot}\n"
            )
        elif root == "overlay":
            mount_root = (
                f"mount -t overlay overlay -o lowerdir={image.rootfs},"
                f"upperdir={upper},workdir={work} {newroot}\n"
            )
        else:
            raise ValueError(root)
        r = shlex.quote(str(newroot))
        script = ["set -eu", "ip link set lo up", mount_root.strip()]
        script += [
            f"mount -t proc proc {r}/proc",
            f"mount -t sysfs -o ro sysfs {r}/sys",
            f"mount -t tmpfs -o mode=0755,size=1m tmpfs {r}/dev",
        ]
        for node in ("null", "zero", "full", "random", "urandom", "tty"):
            script += [f"touch {r}/dev/{node}", f"mount --bind /dev/{node} {r}/dev/{node}"]
        script += [
            f"ln -s /proc/self/fd {r}/dev/fd",
            f"mkdir {r}/dev/shm {r}/dev/pts",
            f"mount -t tmpfs -o mode=1777,size={shm} tmpfs {r}/dev/shm",
        ]
        # emptyDir-like: world-writable tmpfs at each path the caller names.
        script += [f"mount -t tmpfs -o mode=1777 tmpfs {r}{shlex.quote(p)}" for p in tmpfs]
        inner = [
            "chroot",
            f"--userspec={uid}:{gid}",
            f"--groups={gid}",
            str(newroot),
            "/usr/bin/env",
            "-i",
            "-C",
            workdir,
            *environment,
            *tini,
            *argv,
        ]
        script.append("exec " + shlex.join(inner))
        try:
            proc = subprocess.run(
                [
                    "unshare",
                    "--pid",
                    "--mount",
                    "--ipc",
                    "--uts",
                    "--net",
                    "--fork",
                    "--kill-child",
                    "sh",
                    "-c",
                    "\n".join(script),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{argv} did not finish in {timeout} s\n--- stdout\n{exc.stdout!r}\n"
                f"--- stderr\n{exc.stderr!r}"
            ) from None
        # Directories copied up only because something below them changed are not writes.
        written = sorted(
            "/" + str(p.relative_to(upper))
            for p in upper.rglob("*")
            if not (p.is_dir() and (image.rootfs / p.relative_to(upper)).is_dir())
        )
    return Result(proc.returncode, proc.stdout, proc.stderr, written)


def missing_host_tools() -> list[str]:
    return [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
