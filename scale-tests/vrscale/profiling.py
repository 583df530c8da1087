"""py-spy profiles of the controller's processes, kept next to the report when a target is
missed (so the miss comes with where the time went)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def dump(pid: int, out: Path) -> Path | None:
    """One stack dump of every thread of pid (py-spy dump); None when py-spy cannot."""
    exe = py_spy()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = subprocess.run(
            [exe, "dump", "--pid", str(pid), "--nonblocking"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    out.write_text(got.stdout + (f"\n[stderr]\n{got.stderr}" if got.stderr.strip() else ""))
    return out


@dataclass
class Recording:
    label: str
    pid: int
    path: Path
    proc: subprocess.Popen[bytes]


@dataclass
class Recorder:
    """py-spy record of several processes while the load runs (low rate, non-blocking)."""

    out_dir: Path
    rate: int = 25
    recordings: list[Recording] = field(default_factory=list)

    def start(self, label: str, pid: int, duration_s: int) -> None:
        exe = py_spy()
        if exe is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"profile_{label}.svg"
        proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(duration_s),
                "--rate",
                str(self.rate),
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.recordings.append(Recording(label, pid, path, proc))

    def stop(self) -> list[Path]:
        """End every recording (py-spy writes its file on SIGINT); the files written."""
        for r in self.recordings:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGINT)
        for r in self.recordings:
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        return [r.path for r in self.recordings if r.path.exists()]

    def discard(self) -> None:
        for r in self.recordings:
            with contextlib.suppress(FileNotFoundError):
                r.path.unlink()
