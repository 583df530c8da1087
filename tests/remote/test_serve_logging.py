"""`virtrigaud provider serve --log-level/--log-format`, what a managed Provider's
spec.runtime.logLevel and logFormat become: a real server process on 127.0.0.1 (libvirt's
test driver behind it, never called), its stderr read after a SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from virtrigaud.netports import free_ports

VIRTRIGAUD = str(Path(sys.executable).with_name("virtrigaud"))


def serve(*flags: str) -> tuple[int, list[str]]:
    """Start a plaintext server, wait for it to serve, stop it; exit code and stderr lines."""
    (port,) = free_ports(1)
    argv = [VIRTRIGAUD, "provider", "serve", "--type", "libvirt", "--endpoint"]
    argv += ["test:///default", "--listen", f"127.0.0.1:{port}", "--insecure"]
    argv += ["--name", "hv/kvm", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "serving ..." once it listens, or "" if it exited
    if first:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, [line for line in err.splitlines() if line.strip()]


def test_json_logs_are_one_object_per_line_naming_the_provider() -> None:
    code, lines = serve("--log-format", "json", "--log-level", "info")
    assert code == 0, lines
    records = [json.loads(line) for line in lines]  # a text line would not parse
    assert {r["component"] for r in records} == {"provider-server"}
    assert {r["provider"] for r in records} == {"hv/kvm"}
    levels = {r["level"] for r in records}
    assert {"info", "warning"} <= levels, records  # start/stop, and the PLAINTEXT warning
    assert any("shutting down" in r["msg"] for r in records)


def test_warn_drops_info_and_text_is_the_default() -> None:
    code, lines = serve("--log-level", "warn")
    assert code == 0, lines
    assert any("WARNING" in line and "PLAINTEXT" in line for line in lines), lines
    assert not any(" INFO " in line for line in lines), lines
    assert not any(line.startswith("{") for line in lines)
    code, lines = serve()
    assert code == 0, lines
    assert any(" INFO " in line and "shutting down" in line for line in lines), lines


def test_a_bad_level_is_refused_naming_the_flag() -> None:
    code, lines = serve("--log-level", "verbose")
    assert code == 2
    text = "\n".join(lines)
    assert "--log-level" in text and "debug, info, warn, error" in text
