"""The README's step-by-step path, run as written: its own dev stack (state in a fresh
directory's `.state/dev`, as a fresh checkout has it), the sample objects applied with
kubectl, the controller run, every sample VM Ready, shards resized, everything stopped.

Only `make setup` is not run again (this test session needs it done already); the
controller, which the README runs in the foreground, runs in the background here while
the next lines run, and is stopped before `dev down`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
SAMPLE_VMS = ("web-0", "db-0", "cache-0")


def walkthrough_lines() -> list[str]:
    """The README's step-by-step block, one shell line each (continuations kept)."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("# or step by step:\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def script(lines: list[str]) -> str:
    out = ["set -euo pipefail"]
    for line in lines:
        if line.startswith("make setup"):
            continue
        if line.startswith((".venv/", "kubectl ")):  # mark when each step starts
            words = line.split()
            out.append(f"echo '@@' $(date +%s.%N) {words[0]} {words[1]} >&2")
        if line.startswith(".venv/bin/virtrigaud run "):
            command = line.split("#", 1)[0].rstrip()
            out.append(f"{command} > controller.log 2>&1 &")
            out.append("RUN_PID=$!")
            out.append("kubectl wait --for=condition=Ready vm --all -n demo --timeout=240s")
            continue
        if line.startswith(".venv/bin/virtrigaud dev down"):
            out.append("kill -TERM $RUN_PID; wait $RUN_PID || true")
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture
def fresh_dir() -> Iterator[Path]:
    # Short (the libvirt socket path must stay under 108 bytes), outside the checkout.
    path = Path(tempfile.mkdtemp(prefix="vrw-", dir="/tmp"))
    (path / ".venv").symlink_to(REPO / ".venv")
    (path / "demo").symlink_to(REPO / "demo")
    try:
        yield path
    finally:
        subprocess.run(
            [str(REPO / ".venv/bin/virtrigaud"), "dev", "down"],
            cwd=path,
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(path, ignore_errors=True)


def test_readme_step_by_step_works_as_written(fresh_dir: Path) -> None:
    lines = walkthrough_lines()
    assert lines[0].startswith("make setup")
    assert any(line.startswith(".venv/bin/virtrigaud run ") for line in lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "RAY_ADDRESS"))}
    done = subprocess.run(
        ["bash", "-c", script(lines)],
        cwd=fresh_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = (
        (fresh_dir / "controller.log").read_text()
        if (fresh_dir / "controller.log").exists()
        else ""
    )
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:], log[-4000:])
    print("\n".join(line for line in done.stderr.splitlines() if line.startswith("@@")))
    listing = [line.split() for line in done.stdout.splitlines()]
    rows = {row[1]: row for row in listing if len(row) > 2 and row[0] == "demo"}
    assert set(SAMPLE_VMS) <= set(rows), done.stdout
    assert rows["web-0"][2] == "Running" and rows["db-0"][2] == "Running", done.stdout
    assert rows["cache-0"][2] == "Stopped", done.stdout
    assert "stopped:" in done.stdout


def test_dev_up_hint_is_a_command_that_works() -> None:
    from virtrigaud.dev.cli import virtrigaud_command

    hint = virtrigaud_command()
    assert not hint.startswith("python ")
    done = subprocess.run(
        ["bash", "-c", f"{hint} dev env --help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Shell exports" in done.stdout or "export" in done.stdout.lower()
