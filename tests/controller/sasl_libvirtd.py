"""A private libvirtd whose socket asks for a SASL login (SCRAM-SHA-256, one user in its
own sasldb): what a libvirt Provider with a wrong password meets. The dev stack's libvirtd
takes no credentials, so tests that need a refused login start this one (test driver only,
its own socket, config and SASL config; stopped by pid at the end)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USERNAME = "virtrigaud"
PASSWORD = "sasl-s3cret"


@dataclass(frozen=True)
class SaslLibvirt:
    uri: str
    username: str
    password: str


def _start(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    run, drivers, sasl = home / "run", home / "no-drivers", home / "sasl"
    for d in (run, drivers, sasl):
        d.mkdir(parents=True)
    (home / "libvirtd.conf").write_text(
        "\n".join(
            [
                f'unix_sock_dir = "{run}"',
                'unix_sock_rw_perms = "0700"',
                'unix_sock_ro_perms = "0700"',
                'unix_sock_admin_perms = "0700"',
                'auth_unix_rw = "sasl"',
                'auth_unix_ro = "sasl"',
                f'log_outputs = "3:file:{home}/libvirtd.log"',
                "",
            ]
        )
    )
    (sasl / "libvirt.conf").write_text(f"mech_list: scram-sha-256\nsasldb_path: {sasl}/passwd.db\n")
    subprocess.run(
        ["saslpasswd2", "-p", "-c", "-a", "libvirt", "-f", str(sasl / "passwd.db"), USERNAME],
        input=PASSWORD.encode(),
        check=True,
    )
    env = {**os.environ, "SASL_CONF_PATH": str(sasl), "LIBVIRT_DRIVER_DIR": str(drivers)}
    log = open(home / "out.log", "wb")  # noqa: SIM115 (kept open for the daemon's life)
    daemon = subprocess.Popen(
        ["libvirtd", "-f", str(home / "libvirtd.conf"), "--pid-file", str(run / "pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    socket = run / "libvirt-sock"
    deadline = time.monotonic() + 30
    while not socket.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            pytest.fail(f"the SASL libvirtd did not start: {(home / 'out.log').read_text()}")
        time.sleep(0.05)
    return daemon, f"test+unix:///default?socket={socket}"


@pytest.fixture(scope="session")
def sasl_libvirt() -> Iterator[SaslLibvirt]:
    if shutil.which("libvirtd") is None or shutil.which("saslpasswd2") is None:
        pytest.fail("libvirtd and saslpasswd2 are needed (scripts/setup.sh installs them)")
    # A short path: a unix socket path holds at most 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="vr-sasl-", dir="/tmp"))
    daemon, uri = _start(home)
    try:
        yield SaslLibvirt(uri=uri, username=USERNAME, password=PASSWORD)
    finally:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(home, ignore_errors=True)
