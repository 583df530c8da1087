"""py-spy profiles of the controller's processes, kept next to the report when a target is
missed (so the miss comes with where the time went).

Each recording is py-spy's collapsed-stack text (``profile_*.txt``: one stack per line
with its sample count; flamegraph.pl and speedscope read it) plus a summary
(``profile_*.top.txt``): the functions with the most samples, inclusive and self.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
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
    rate: int = 20
    recordings: list[Recording] = field(default_factory=list)

    def start(self, label: str, pid: int, duration_s: int) -> None:
        exe = py_spy()
        if exe is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"profile_{label}.txt"
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
                "--format",
                "raw",
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
        written = [r.path for r in self.recordings if r.path.exists()]
        summaries = [summarize(p) for p in written]
        return written + [p for p in summaries if p is not None]

    def discard(self) -> None:
        for r in self.recordings:
            for path in (r.path, top_path(r.path)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def top_path(profile: Path) -> Path:
    return profile.with_suffix(".top.txt")


def summarize(profile: Path, top: int = 40) -> Path | None:
    """The functions of a collapsed-stack profile with the most samples; None if empty."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in profile.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if total == 0:
        return None
    lines = [
        f"{total} samples of {profile.name} (threads py-spy saw as active; some waits, such "
        "as select() or an idle pool thread's queue read, count as active)",
        "",
    ]
    for title, counts in (
        ("inclusive (the function and what it called)", inclusive),
        ("self (the function's own code)", own),
    ):
        lines.append(f"== {title}")
        for frame, n in counts.most_common(top):
            lines.append(f"{100 * n / total:6.1f}%  {frame}")
        lines.append("")
    out = top_path(profile)
    out.write_text("\n".join(lines))
    return out
