#!/usr/bin/env python3
"""Write the image's Python lock files from pyproject.toml and constraints.txt.

    .venv/bin/python image/lock.py          # or: make image-lock

image/requirements.lock pins the runtime closure of `[project].dependencies` (no test
extra) and image/build-requirements.lock the tools that install it (pip and the
`[build-system]` requirements). Every line carries the sha256 of the one file pip picked
from PyPI, so the image build installs with `--require-hashes` and fails instead of
drifting. Resolution runs with Debian 12's own /usr/bin/python3.11, the image's
interpreter, on this x86_64 / glibc 2.36 host: markers see its version (redis needs
async-timeout below 3.11.3, and Debian 12 has 3.11.2), and a wheel picked here is the
wheel the build installs.

Each lock's header carries a digest of its inputs; tests/image/test_lock.py fails when
pyproject.toml or constraints.txt changed without a new lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "image" / "requirements.lock"
BUILD_LOCK = ROOT / "image" / "build-requirements.lock"
INDEX_URL = "https://pypi.org/simple"
# The image's interpreter: Debian 12's python3.11 (the same package the image installs).
TARGET_PYTHON = "/usr/bin/python3.11"
TARGET_VERSION = "3.11.2"
DIGEST_PREFIX = "# inputs-sha256: "


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_inputs(root: Path = ROOT) -> dict[str, list[str]]:
    """What the locks are resolved from; the digest over this says whether they are stale."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    constraints_file = root / "constraints.txt"
    constraints = []
    if constraints_file.exists():
        for line in constraints_file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                constraints.append(line)
    return {
        "runtime": list(project["project"]["dependencies"]),
        "build": ["pip", *project["build-system"]["requires"]],
        "constraints": constraints,
    }


def inputs_digest(inputs: dict[str, list[str]], which: str) -> str:
    payload = {which: sorted(inputs[which]), "constraints": sorted(inputs["constraints"])}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def locked_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX).strip()
    return None


def parse_lock(lock: Path) -> list[Pin]:
    """The pins of a lock this script wrote (`name==version \\` then `--hash=sha256:...`)."""
    pins: list[Pin] = []
    text = lock.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if not m:
            raise ValueError(f"{lock}: not a pinned, hashed requirement: {line!r}")
        pins.append(Pin(canonical(m[1]), m[2], m[3]))
    return pins


def _pip_env() -> dict[str, str]:
    # This machine's pip configuration adds local indexes, find-links and caps; the lock
    # must name PyPI's files only, so no config file and no PIP_* variable except the CA.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


def resolve(requirements: list[str], constraints: list[str]) -> list[Pin]:
    """What pip would install for these requirements into the image's interpreter, from
    PyPI, with file hashes."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp, "venv")
        subprocess.run([TARGET_PYTHON, "-m", "venv", str(venv)], check=True)
        req = Path(tmp, "requirements.in")
        req.write_text("\n".join(requirements) + "\n")
        con = Path(tmp, "constraints.in")
        con.write_text("\n".join(constraints) + "\n")
        report = Path(tmp, "report.json")
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--index-url",
                INDEX_URL,
                "--report",
                str(report),
                "-r",
                str(req),
                "-c",
                str(con),
            ],
            check=True,
            env=_pip_env(),
        )
        installs = json.loads(report.read_text())["install"]
    pins = []
    for item in installs:
        meta, info = item["metadata"], item["download_info"]
        archive = info.get("archive_info", {})
        sha = archive.get("hashes", {}).get("sha256")
        if not sha and archive.get("hash", "").startswith("sha256="):
            sha = archive["hash"].removeprefix("sha256=")
        if not sha or not info["url"].startswith("https://"):
            raise SystemExit(
                f"lock: {meta['name']} came from {info['url']}, not a hashed PyPI file"
            )
        pins.append(Pin(canonical(meta["name"]), meta["version"], sha))
    return sorted(pins, key=lambda p: p.name)


def render(pins: list[Pin], digest: str, what: str) -> str:
    head = [
        f"# {what}",
        "# Generated by image/lock.py (make image-lock); do not edit.",
        f"# Resolved from {INDEX_URL} with Debian 12's python {TARGET_VERSION} (x86_64).",
        f"{DIGEST_PREFIX}{digest}",
    ]
    body = [f"{p.name}=={p.version} \\\n    --hash=sha256:{p.sha256}" for p in pins]
    return "\n".join(head + body) + "\n"


def check_host() -> None:
    probe = subprocess.run(
        [
            TARGET_PYTHON,
            "-c",
            "import platform, venv; print(platform.python_version(), platform.machine())",
        ],
        capture_output=True,
        text=True,
    )
    if probe.stdout.split() != [TARGET_VERSION, "x86_64"]:
        raise SystemExit(
            f"lock: needs Debian 12's {TARGET_PYTHON} ({TARGET_VERSION}, x86_64) with its venv "
            f"module, the image's interpreter (apt-get install python3-venv); got "
            f"{probe.stdout.strip() or probe.stderr.strip()!r}"
        )


def main() -> None:
    check_host()
    inputs = read_inputs()
    runtime = resolve(inputs["runtime"], inputs["constraints"])
    RUNTIME_LOCK.write_text(
        render(
            runtime,
            inputs_digest(inputs, "runtime"),
            "Runtime Python packages of the container image: [project].dependencies.",
        )
    )
    build = resolve(inputs["build"], inputs["constraints"])
    BUILD_LOCK.write_text(
        render(
            build,
            inputs_digest(inputs, "build"),
            "Tools that install the image's packages: pip and [build-system].requires.",
        )
    )
    print(f"lock: {len(runtime)} runtime and {len(build)} build packages pinned")


if __name__ == "__main__":
    main()
