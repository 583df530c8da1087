"""The built container image (`make image`), unpacked and run the way a pod runs it.

Needs root, umoci, skopeo and util-linux's unshare (image/build.sh installs them) and the
image in build/image built from this tree; `make test` builds it first. Without them
the tests skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from imagelib import (
    IMAGE_OUT,
    REPO,
    Image,
    load_lock_module,
    missing_host_tools,
    run_in_image,
    unpack,
)

pytestmark = pytest.mark.image

lock = load_lock_module()
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE_USER = "65532:65532"
# What the chart mounts as emptyDirs under readOnlyRootFilesystem: true. The tests below
# show these suffice and that nothing else in the image is written.
WRITABLE = ("/tmp",)
# What the chart sets for the controller container (helm/virtrigaud/templates/deployment.yaml).
CHART_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
# The two budgets fail on growth such as a test-only or unused package slipping in.
MAX_COMPRESSED = 235 * 2**20
MAX_UNCOMPRESSED = 625 * 2**20


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI runs `make test`, which builds the image first)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def image(
    tmp_path_factory: pytest.TempPathFactory, report: Callable[[str], None]
) -> Iterator[Image]:
    if os.geteuid() != 0:
        _unavailable("the image tests need root (mount namespaces, chroot)")
    if missing := missing_host_tools():
        _unavailable(f"missing {', '.join(missing)}: run `make image`, which installs them")
    info_path = IMAGE_OUT / "image.json"
    if not info_path.exists():
        _unavailable(f"no image in {IMAGE_OUT}: run `make image`")
    info = json.loads(info_path.read_text())
    current = subprocess.run(
        [str(REPO / "image" / "build.sh"), "inputs"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if info["inputs"] != current:
        _unavailable(f"{IMAGE_OUT} was built from another tree: run `make image`")
    into = tmp_path_factory.mktemp("image")
    start = time.monotonic()
    unpacked = unpack(IMAGE_OUT / info["archive"], info["tag"], into)
    report(f"unpacked with skopeo + umoci in {time.monotonic() - start:.0f} s")
    yield unpacked


def run_python(image: Image, code: str, **kwargs: object) -> str:
    result = run_in_image(image, ["python", "-c", code], **kwargs)  # type: ignore[arg-type]
    return result.check().stdout


def test_the_config_runs_virtrigaud_as_the_charts_user_under_tini(image: Image) -> None:
    config = image.config
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    c = config["config"]
    assert c["User"] == IMAGE_USER
    values = yaml.safe_load((REPO / "helm" / "virtrigaud" / "values.yaml").read_text())
    psc = values["podSecurityContext"]
    assert c["User"] == f"{psc['runAsUser']}:{psc['runAsGroup']}"
    assert c["Entrypoint"] == ["/usr/bin/tini", "--", "virtrigaud"]
    assert c["Cmd"] == ["run"]
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["PATH"].startswith("/opt/virtrigaud/bin:")
    assert env["HOME"] == c["WorkingDir"] == "/home/virtrigaud"
    assert c["Labels"]["org.opencontainers.image.version"] == VERSION
    sde = int(subprocess.check_output(["git", "-C", str(REPO), "log", "-1", "--format=%ct"]))
    assert image.info["source_date_epoch"] == sde
    assert config["created"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sde))
    assert len(config["rootfs"]["diff_ids"]) == 1


def test_size_and_layer_digest(image: Image, report: Callable[[str], None]) -> None:
    info = image.info
    archive = IMAGE_OUT / info["archive"]
    (layer,) = info["layers"]
    # Recompute both digests from the archive's blob rather than trusting image.json.
    algo, hexdigest = layer["digest"].split(":", 1)
    blob = Path(image.rootfs.parent.parent, "oci", "blobs", algo, hexdigest)
    compressed = hashlib.sha256()
    uncompressed = hashlib.sha256()
    raw_size = 0
    with blob.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            compressed.update(chunk)
    with gzip.open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            uncompressed.update(chunk)
            raw_size += len(chunk)
    assert f"sha256:{compressed.hexdigest()}" == layer["digest"]
    assert f"sha256:{uncompressed.hexdigest()}" == layer["diff_id"]
    report(
        f"image {info['tag']} {info['manifest_digest']}: layer {layer['digest']}, "
        f"{blob.stat().st_size / 2**20:.1f} MiB compressed, {raw_size / 2**20:.1f} MiB "
        f"uncompressed; archive {archive.stat().st_size / 2**20:.1f} MiB; "
        f"built in {info['build_seconds']} s (stages: {info['stage_seconds']})"
    )
    assert blob.stat().st_size < MAX_COMPRESSED
    assert raw_size < MAX_UNCOMPRESSED


def test_virtrigaud_help_runs_from_the_entrypoint(image: Image) -> None:
    out = run_in_image(image, [*image.entrypoint[2:], "--help"]).check().stdout
    for command in ("run", "provider", "shards", "crds", "version"):
        assert command in out


def test_provider_serve_help_starts(image: Image) -> None:
    out = run_in_image(image, ["virtrigaud", "provider", "serve", "--help"]).check().stdout
    assert "--type" in out and "--endpoint" in out


def test_the_user_has_a_passwd_entry(image: Image) -> None:
    out = run_python(
        image,
        "import os, pwd; p = pwd.getpwuid(os.getuid());"
        "print(p.pw_name, p.pw_dir, os.getuid(), os.getgid(), os.getcwd())",
    )
    assert out.split() == ["virtrigaud", "/home/virtrigaud", "65532", "65532", "/home/virtrigaud"]


SDK_CHECK = """
import json, libvirt, proxmoxer, proxmoxer.backends.https, pyVmomi, pyVim.connect
import ray, grpc, grpc_health.v1.health, google.protobuf, redis, redis.utils, aiohttp
import pydantic, cryptography, prometheus_client, yaml, requests, typer, rich
# libvirt-python's C module needs libvirt0; the test driver runs inside the client library.
conn = libvirt.open("test:///default")
domains = [d.name() for d in conn.listAllDomains()]
print(json.dumps({
    "libvirt": libvirt.getVersion(), "domains": domains,
    "hiredis": redis.utils.HIREDIS_AVAILABLE,
    "versions": {m.__name__: getattr(m, "__version__", "") for m in (ray, grpc, pydantic)},
}))
"""


def test_every_sdk_imports_and_libvirt_loads_its_library(image: Image) -> None:
    out = json.loads(run_python(image, SDK_CHECK))
    assert out["libvirt"] >= 9_000_000  # libvirt0 from Debian 12
    assert out["domains"] == ["test"]
    assert out["hiredis"] is True


IMPORT_ALL = """
import importlib, json, pkgutil, virtrigaud
failed = {}
for m in pkgutil.walk_packages(virtrigaud.__path__, "virtrigaud."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed[m.name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def test_every_virtrigaud_module_imports(image: Image) -> None:
    failed = json.loads(run_python(image, IMPORT_ALL))
    # The dev stack's Proxmox simulator comes from the test extra, which the image leaves out.
    assert failed == {
        "virtrigaud.dev.fakepve_launcher": "ModuleNotFoundError: No module named 'fakepve'"
    }


INSTALLED = """
import importlib.metadata as md, json
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
unmet = []
for name, d in dists.items():
    for text in d.requires or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        have = dists.get(canonicalize_name(req.name))
        if have is None or not req.specifier.contains(have.version, prereleases=True):
            unmet.append(f"{name} needs {text}")
print(json.dumps({"installed": {n: d.version for n, d in dists.items()}, "unmet": unmet}))
"""


def test_installed_packages_are_the_lock_and_nothing_else(image: Image) -> None:
    out = json.loads(run_python(image, INSTALLED))
    installed = out["installed"]
    pins = {pin.name: pin.version for pin in lock.parse_lock(lock.RUNTIME_LOCK)}
    assert installed.pop("virtrigaud") == VERSION
    assert installed == pins
    assert out["unmet"] == []
    assert not {"pip", "setuptools", "wheel", "kubernetes", "pytest"} & installed.keys()


def test_ssh_is_there_for_libvirt_over_ssh(image: Image) -> None:
    result = run_in_image(image, ["ssh", "-V"]).check()
    assert result.stderr.startswith("OpenSSH_")
    # libvirt's ssh transport runs `ssh`; nothing listens on port 1 in this network
    # namespace, so the error must come from ssh itself, not from a missing binary.
    out = run_python(
        image,
        "import libvirt\n"
        "try:\n"
        "    libvirt.open('qemu+ssh://virtrigaud@127.0.0.1:1/system?no_tty=1')\n"
        "except libvirt.libvirtError as e:\n"
        "    print(e)\n",
    )
    assert "port 1: Connection refused" in out, out


PROVIDER_SERVER = r"""
set -eu
virtrigaud provider serve --type libvirt --endpoint test:///default --insecure \
  --listen 127.0.0.1:9443 >/tmp/serve.log 2>&1 &
server=$!
python - <<'EOF'
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
channel = grpc.insecure_channel("127.0.0.1:9443")
stub = health_pb2_grpc.HealthStub(channel)
deadline = time.monotonic() + 60
while True:
    try:
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(
            stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status))
        break
    except grpc.RpcError:
        if time.monotonic() > deadline:
            print(open("/tmp/serve.log").read(), file=sys.stderr)
            raise
        time.sleep(0.5)
EOF
kill -TERM "$server"
rc=0; wait "$server" || rc=$?
echo "server exit $rc"
"""


def test_a_provider_server_serves_grpc_health(image: Image) -> None:
    result = run_in_image(image, ["sh", "-c", PROVIDER_SERVER], env=CHART_ENV).check()
    assert result.stdout.split("\n")[:2] == ["SERVING", "server exit 0"], result.stdout


RAY_AS_THE_CONTROLLER_STARTS_IT = """
import ray
from virtrigaud.run import _connect_ray
_connect_ray(None)  # what `virtrigaud run` does without --ray-address
@ray.remote
class Counter:
    def __init__(self): self.n = 0
    def add(self): self.n += 1; return self.n
@ray.remote
def square(x): return x * x
c = Counter.options(name="c", lifetime="detached").remote()
print(ray.get([square.remote(7), c.add.remote(), c.add.remote()]))
ray.shutdown()
"""

RAY_HEAD = """
set -eu
ray start --head --node-ip-address=127.0.0.1 --port=6379 --include-dashboard=false \
  --disable-usage-stats >/tmp/ray-start.log 2>&1 || { cat /tmp/ray-start.log; exit 1; }
python -c 'import ray; ray.init(address="127.0.0.1:6379")
print(ray.get(ray.remote(lambda: 42).remote()))'
ray stop --force >/dev/null 2>&1
"""


def test_ray_runs_on_a_read_only_root_with_only_tmp_writable(
    image: Image, report: Callable[[str], None]
) -> None:
    start = time.monotonic()
    out = run_python(image, RAY_AS_THE_CONTROLLER_STARTS_IT, env=CHART_ENV, tmpfs=WRITABLE)
    assert out.strip().splitlines()[-1] == "[49, 1, 2]"
    private = time.monotonic() - start
    head = run_in_image(image, ["sh", "-c", RAY_HEAD], env=CHART_ENV, tmpfs=WRITABLE).check()
    assert head.stdout.strip().splitlines()[-1] == "42"
    report(
        f"read-only root, tmpfs at {', '.join(WRITABLE)}: private Ray + actor + task "
        f"{private:.0f} s; `ray start --head` + task ok"
    )


def test_nothing_outside_tmp_is_written(image: Image) -> None:
    """On a writable (overlay) root the same work writes no path outside the tmpfs."""
    result = run_in_image(
        image,
        ["python", "-c", RAY_AS_THE_CONTROLLER_STARTS_IT],
        env=CHART_ENV,
        tmpfs=WRITABLE,
        root="overlay",
    ).check()
    assert result.written == []
    for argv in (["virtrigaud", "--help"], ["ssh", "-G", "example.invalid"]):
        assert run_in_image(image, argv, tmpfs=WRITABLE, root="overlay").check().written == []


def test_without_a_writable_tmp_ray_cannot_start(image: Image) -> None:
    """The check above can fail: with /tmp read-only as well, Ray does not come up."""
    result = run_in_image(
        image,
        ["python", "-c", RAY_AS_THE_CONTROLLER_STARTS_IT],
        env=CHART_ENV,
        tmpfs=(),
        timeout=120,
    )
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr + result.stdout
    overlay = run_in_image(
        image,
        ["python", "-c", RAY_AS_THE_CONTROLLER_STARTS_IT],
        env=CHART_ENV,
        tmpfs=(),
        root="overlay",
    ).check()
    assert any(p.startswith("/tmp/ray/") for p in overlay.written)
