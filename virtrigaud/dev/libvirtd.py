"""The `libvirt` part: a private libvirtd serving the test driver, plus a keeper connection.

libvirtd runs with its own config, sockets, pid file and logs inside the state dir, and
loads no hypervisor driver modules (an empty driver dir), so it never touches the
machine's own libvirt. The test driver keeps `test:///default` state only while some
connection is open; the keeper process holds one, so every process that opens the URI
sees the same domains for the life of the stack.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from virtrigaud.dev.config import StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import LibvirtInfo
from virtrigaud.dev.process import ProcessRecord, rollback, spawn, wait_for_line, wait_until

# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
FIX_LOGS = "read logs/libvirtd.log and logs/libvirt-keeper.log in the state dir"


def uri_for(socket: Path) -> str:
    return f"test+unix:///default?socket={socket}"


def _config(run_dir: Path, log_file: Path) -> str:
    return "\n".join(
        [
            f'unix_sock_dir = "{run_dir}"',
            'unix_sock_rw_perms = "0700"',
            'unix_sock_ro_perms = "0700"',
            'unix_sock_admin_perms = "0700"',
            'auth_unix_rw = "none"',
            'auth_unix_ro = "none"',
            "max_clients = 5000",
            "max_workers = 20",
            "max_client_requests = 50",
            f'log_outputs = "3:file:{log_file}"',
            "",
        ]
    )


def start(ctx: StartContext) -> LibvirtInfo:
    binary = shutil.which("libvirtd")
    if binary is None:
        raise StackError(
            "libvirt",
            "libvirtd is not installed",
            "apt-get install libvirt-daemon libvirt-clients (scripts/setup.sh does it)",
        )
    try:
        import libvirt  # noqa: F401  (only to fail early with a clear message)
    except ImportError as e:
        raise StackError(
            "libvirt", "the libvirt Python module is missing", "pip install libvirt-python"
        ) from e
    home = ctx.part_dir("libvirt")
    run_dir = home / "run"
    drivers = home / "no-drivers"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    drivers.mkdir(exist_ok=True)
    socket = run_dir / "libvirt-sock"
    if len(str(socket)) > MAX_SOCKET_PATH:
        raise StackError(
            "libvirt",
            f"socket path {socket} is longer than {MAX_SOCKET_PATH} bytes",
            "use a shorter --state-dir",
        )
    config = home / "libvirtd.conf"
    config.write_text(_config(run_dir, Path(ctx.state_dir) / "logs" / "libvirtd-debug.log"))
    uri = uri_for(socket)
    began = time.monotonic()
    records: list[ProcessRecord] = []
    with rollback(records):
        ctx.report("start libvirtd")
        daemon = spawn(
            "libvirtd",
            [binary, "-f", str(config), "--pid-file", str(run_dir / "libvirtd.pid")],
            ctx.log("libvirtd"),
            # An empty module dir: only the built-in test driver, no qemu/network/storage.
            env={"LIBVIRT_DRIVER_DIR": str(drivers)},
        )
        records.append(daemon)
        wait_until("libvirt", "its socket", socket.exists, daemon, 60, FIX_LOGS)
        keeper = spawn(
            "libvirt-keeper",
            [sys.executable, "-m", "virtrigaud.dev.libvirt_keeper", uri],
            ctx.log("libvirt-keeper"),
        )
        records.append(keeper)
        wait_for_line("libvirt", keeper, r"^KEEPER_READY", 60, FIX_LOGS)
        ctx.report("sample image volume")
        ensure_libvirt_base_volume(uri)
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return LibvirtInfo(
        processes=records,
        version=version or "libvirtd",
        address=uri,
        started_at=time.time(),
        start_seconds=time.monotonic() - began,
        uri=uri,
        socket=str(socket),
    )


SAMPLE_POOL = "default-pool"
SAMPLE_VOLUME = "demo-base.qcow2"
"""The volume demo/images.yaml names: the test driver's pool starts empty, so `up` makes it."""


def ensure_libvirt_base_volume(uri: str, volume: str = SAMPLE_VOLUME) -> str:
    """A 1 GiB qcow2 volume in the test driver's pool (an image must be a volume in it);
    its ``pool/volume`` path."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        pool = conn.storagePoolLookupByName(SAMPLE_POOL)
        if volume not in pool.listVolumes():
            pool.createXML(
                f"<volume><name>{volume}</name><capacity unit='GiB'>1</capacity>"
                "<target><format type='qcow2'/></target></volume>",
                0,
            )
    finally:
        conn.close()
    return f"{SAMPLE_POOL}/{volume}"


def check(info: LibvirtInfo) -> str | None:
    import libvirt

    try:
        conn = libvirt.open(info.uri)
    except libvirt.libvirtError as e:
        return f"cannot open {info.uri}: {e.get_error_message()}"
    try:
        conn.listAllDomains()
    except libvirt.libvirtError as e:
        return f"listAllDomains failed: {e.get_error_message()}"
    finally:
        conn.close()
    return None


def cleanup(info: LibvirtInfo) -> None:
    # libvirtd removes its sockets on a clean exit; after a SIGKILL they would linger.
    run_dir = Path(info.socket).parent
    for leftover in run_dir.glob("libvirt*"):
        leftover.unlink(missing_ok=True)
