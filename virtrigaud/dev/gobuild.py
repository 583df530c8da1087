"""Build the dev stack's Go programs (kubelite, vcsim) and provide etcd, from Debian sid.

Everything happens in a cache directory outside the repository. The Debian packages come
from the pinned snapshot in ``../shared/debs`` when it exists, otherwise from sid through a
private apt configuration (nothing is installed system-wide). Built binaries are keyed by
the hash of their inputs (our Go sources, the packages openapi-gen reads and the exact
package set), so a warm rebuild costs a hash and a file check.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtrigaud.dev.errors import StackError

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools"
SID_SOURCE = "deb http://deb.debian.org/debian sid main"

Progress = Callable[[str, int, int], None]
"""Called as progress(stage, done, total); total 0 means unknown."""


def cache_dir() -> Path:
    base = os.environ.get("VIRTRIGAUD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "virtrigaud"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def snapshot_dir() -> Path | None:
    """The pinned .deb snapshot, if this checkout has one beside it."""
    env = os.environ.get("VIRTRIGAUD_DEBS")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "debs")
    for c in candidates:
        if (c / "SHA256SUMS").is_file():
            return c
    return None


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _package_names() -> list[str]:
    return [
        line.strip()
        for line in (TOOLS_DIR / "debs.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _download_from_sid(dest: Path, progress: Progress | None) -> None:
    """Fetch the package set from sid into dest, with apt's state kept in the cache."""
    apt = cache_dir() / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(SID_SOURCE + "\n")
    opts = [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oAPT::Default-Release=sid",
    ]
    if progress:
        progress("apt-get update (sid)", 0, 0)
    _run(["apt-get", *opts, "-qq", "update"], part="go toolchain", cwd=None)
    names = _package_names()
    # Go's minor version in sid moves; take whichever golang-1.NN the index has now.
    goes = _run(["apt-cache", *opts, "pkgnames", "golang-1."], part="go toolchain", cwd=None)
    versions = sorted(
        {m.group(1) for m in re.finditer(r"golang-(1\.\d+)-go\b", goes)},
        key=lambda v: int(v.split(".")[1]),
    )
    if versions:
        newest = versions[-1]
        names = [re.sub(r"^golang-1\.\d+-(go|src)$", rf"golang-{newest}-\1", n) for n in names]
    dest.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        if progress:
            progress("download .debs from sid", i, len(names))
        _run(["apt-get", *opts, "-qq", "download", name], part="go toolchain", cwd=dest)


def _run(cmd: list[str], part: str, cwd: Path | None, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise StackError(part, f"{cmd[0]} is not installed", "run `make setup`") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise StackError(
            part,
            f"`{' '.join(cmd[:3])} ...` failed: " + " | ".join(tail),
            "see the message above; `make setup` installs the build prerequisites",
        )
    return proc.stdout


@dataclass(frozen=True)
class Toolchain:
    """An unpacked package set: Go, the Go sources and etcd."""

    root: Path
    key: str

    @property
    def goroot(self) -> Path:
        found = sorted(
            (self.root / "usr" / "lib").glob("go-1.*"), key=lambda p: int(p.name.split(".")[1])
        )
        if not found:
            raise StackError("go toolchain", f"no Go in {self.root}", "delete it and rebuild")
        return found[-1]

    @property
    def etcd(self) -> Path:
        return self.root / "usr" / "bin" / "etcd"

    def env(self, gopath: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GOROOT=str(self.goroot),
            PATH=f"{self.goroot / 'bin'}:{env.get('PATH', '')}",
            GOPATH=f"{gopath}:{self.root / 'usr' / 'share' / 'gocode'}",
            GO111MODULE="off",
            GOTOOLCHAIN="local",
            GOPROXY="off",
            GOFLAGS="",
            GOCACHE=str(cache_dir() / "gocache"),
            CGO_ENABLED="0",
        )
        return env


def toolchain(progress: Progress | None = None) -> Toolchain:
    """Unpack (once) the package set into the cache and return it."""
    snap = snapshot_dir()
    if snap is not None:
        debs_dir = snap
        key = _hash((snap / "SHA256SUMS").read_bytes())
    else:
        debs_dir = cache_dir() / "debs-sid"
        marker = debs_dir / ".complete"
        if not marker.exists():
            shutil.rmtree(debs_dir, ignore_errors=True)
            _download_from_sid(debs_dir, progress)
            marker.touch()
        key = _hash("\n".join(sorted(p.name for p in debs_dir.glob("*.deb"))).encode())
    root = cache_dir() / f"root-{key}"
    done = root / ".unpacked"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        debs = sorted(debs_dir.glob("*.deb"))
        if not debs:
            raise StackError("go toolchain", f"no .deb files in {debs_dir}", "rebuild with network")
        for i, deb in enumerate(debs):
            if progress:
                progress("unpack .debs", i, len(debs))
            _run(["dpkg-deb", "-x", str(deb), str(root)], part="go toolchain", cwd=None)
        done.touch()
    return Toolchain(root=root, key=key)


def _go_build(
    tc: Toolchain,
    part: str,
    pkg: str,
    workdir: Path,
    gopath: Path,
    out: Path,
    ldflags: str,
    progress: Progress | None,
) -> None:
    env = tc.env(gopath)
    go = str(tc.goroot / "bin" / "go")
    deps = _run([go, "list", "-deps", pkg], part=part, cwd=workdir, env=env).split()
    total = len(deps)
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(out), pkg]
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    built = 0
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if not line.startswith(("#", " ")):
            built += 1
            if progress:
                progress(f"compile {part}", min(built, total), total)
    if proc.wait() != 0:
        raise StackError(
            part,
            "go build failed: " + " | ".join(lines[-6:]),
            "the Debian sources may have drifted; delete the cache dir "
            f"{cache_dir()} and rebuild, or fix tools/{part}/main.go",
        )


OPENAPI_PACKAGES = (
    "k8s.io/apimachinery/pkg/apis/meta/v1",
    "k8s.io/apimachinery/pkg/runtime",
    "k8s.io/apimachinery/pkg/version",
    "k8s.io/apimachinery/pkg/api/resource",
    "k8s.io/apimachinery/pkg/util/intstr",
    "k8s.io/api/core/v1",
    "k8s.io/api/apps/v1",
    "k8s.io/api/coordination/v1",
    "k8s.io/api/rbac/v1",
    "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1",
)
"""The Go packages whose types kubelite serves: openapi-gen writes their OpenAPI models."""


def _sources(program: str) -> dict[str, bytes]:
    """A program's Go files in tools/<program>/, by name."""
    files = {p.name: p.read_bytes() for p in sorted((TOOLS_DIR / program).glob("*.go"))}
    if not files:
        raise StackError(program, f"no Go files in {TOOLS_DIR / program}", "restore them from git")
    return files


def build_kubelite(progress: Progress | None = None) -> Path:
    """The API server binary, built on first use and cached by the hash of its inputs."""
    tc = toolchain(progress)
    files = _sources("kubelite")
    named = [part for name, body in files.items() for part in (name.encode(), body)]
    key = _hash(*named, "\n".join(OPENAPI_PACKAGES).encode(), tc.key.encode())
    out = cache_dir() / "bin" / f"kubelite-{key}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    gopath = cache_dir() / "gopath-kubelite"
    src = gopath / "src" / "kubelite"
    shutil.rmtree(src, ignore_errors=True)
    (src / "openapi").mkdir(parents=True)
    for name, body in files.items():
        (src / name).write_bytes(body)
    openapi_gen = cache_dir() / "bin" / f"openapi-gen-{tc.key}"
    if not openapi_gen.exists():
        _go_build(
            tc,
            "openapi-gen",
            "k8s.io/kube-openapi/cmd/openapi-gen",
            src,
            gopath,
            openapi_gen,
            "-s -w",
            progress,
        )
    if progress:
        progress("generate OpenAPI definitions", 0, 0)
    _run(
        [
            str(openapi_gen),
            "--output-dir",
            "openapi",
            "--output-pkg",
            "kubelite/openapi",
            "--go-header-file",
            "/dev/null",
            "--report-filename",
            "/dev/null",
            *OPENAPI_PACKAGES,
        ],
        part="kubelite",
        cwd=src,
        env=tc.env(gopath),
    )
    version = "-X k8s.io/component-base/version.gitVersion=v1.36.4 "
    version += "-X k8s.io/component-base/version.gitMajor=1 "
    version += "-X k8s.io/component-base/version.gitMinor=36"
    tmp = out.with_suffix(".tmp")
    _go_build(tc, "kubelite", "kubelite", src, gopath, tmp, f"-s -w {version}", progress)
    tmp.rename(out)
    return out


def build_vcsim(progress: Progress | None = None) -> Path:
    tc = toolchain(progress)
    main_go = (TOOLS_DIR / "vcsim" / "main.go").read_bytes()
    out = cache_dir() / "bin" / f"vcsim-{_hash(main_go, tc.key.encode())}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    gopath = cache_dir() / "gopath-vcsim"
    src = gopath / "src" / "vcsim"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (src / "main.go").write_bytes(main_go)
    tmp = out.with_suffix(".tmp")
    _go_build(tc, "vcsim", "vcsim", src, gopath, tmp, "-s -w", progress)
    tmp.rename(out)
    return out


def etcd_binary(progress: Progress | None = None) -> Path:
    path = toolchain(progress).etcd
    if not path.exists():
        raise StackError("etcd", f"{path} is missing", "delete the cache dir and rebuild")
    return path


def build_all(progress: Progress | None = None) -> dict[str, Path]:
    start = time.monotonic()
    result = {
        "etcd": etcd_binary(progress),
        "kubelite": build_kubelite(progress),
        "vcsim": build_vcsim(progress),
    }
    if progress:
        progress(f"go builds ready in {time.monotonic() - start:.0f}s", 1, 1)
    return result


def main() -> None:
    """Build everything with a progress bar: `python -m virtrigaud.dev.gobuild`."""
    import sys

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)  # type: ignore[arg-type]

        try:
            paths = build_all(progress)
        except StackError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from e
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
