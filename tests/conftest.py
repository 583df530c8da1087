"""Session fixtures: one dev stack per test run, each part started the first time a test asks.

A run that needs only Redis starts only Redis. Set VIRTRIGAUD_TEST_STATE_DIR to the state
dir of a stack started with `virtrigaud dev up --state-dir DIR` to reuse it (faster
reruns); it is then left running at the end. Tests that use any of these fixtures get the
`stack` marker automatically, so `-m "not stack"` runs the pure unit tests alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The code under test is this checkout's, also in the processes the tests start (`virtrigaud
# run`, Ray workers, provider servers) and whatever an installed .venv points at (a venv
# shared between checkouts of the same repository points at one of them).
CHECKOUT = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [CHECKOUT]:
    sys.path.insert(0, CHECKOUT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [CHECKOUT, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
)
for _name in [m for m in sys.modules if m == "virtrigaud" or m.startswith("virtrigaud.")]:
    if not str(getattr(sys.modules[_name], "__file__", "") or "").startswith(CHECKOUT):
        raise RuntimeError(
            f"{_name} was imported from {sys.modules[_name].__file__} before the tests' "
            f"conftest ran; run the tests of {CHECKOUT} with PYTHONPATH={CHECKOUT}"
        )

from virtrigaud.dev.rayhead import RAY_ENV  # noqa: E402

# Ray reads these at import time; a test that imports Ray before any fixture ran must
# already see them, or it binds the routed address instead of 127.0.0.1.
os.environ.update(RAY_ENV)

from virtrigaud.dev.info import (  # noqa: E402
    KubeInfo,
    LibvirtInfo,
    ProxmoxInfo,
    RayInfo,
    RedisInfo,
    VcsimInfo,
)
from virtrigaud.dev.stack import DevStack  # noqa: E402

REUSE_ENV = "VIRTRIGAUD_TEST_STATE_DIR"
STACK_FIXTURES = {
    "dev_stack",
    "kube_info",
    "kubeconfig",
    "redis_url",
    "redis_info",
    "vcsim_info",
    "libvirt_info",
    "libvirt_uri",
    "pve_info",
    "ray_info",
    "ray_address",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    reuse = os.environ.get(REUSE_ENV)
    if reuse:
        stack = DevStack(Path(reuse))
        if not stack.info().running_parts():
            pytest.fail(
                f"{REUSE_ENV}={reuse} has no running stack: start one with "
                f"`virtrigaud dev up --state-dir {reuse}` or unset {REUSE_ENV}",
                pytrace=False,
            )
        yield stack
        return
    # tmp_path_factory's base is short (/tmp/pytest-of-USER/pytest-N), which keeps the
    # libvirt socket path well under the unix socket limit.
    stack = DevStack(tmp_path_factory.mktemp("devstack"))
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def kube_info(dev_stack: DevStack) -> KubeInfo:
    info = dev_stack.ensure("kube")
    assert isinstance(info, KubeInfo)
    return info


@pytest.fixture(scope="session")
def kubeconfig(kube_info: KubeInfo) -> str:
    """Path of a kubeconfig for the session's API server."""
    return kube_info.kubeconfig


@pytest.fixture(scope="session")
def redis_info(dev_stack: DevStack) -> RedisInfo:
    info = dev_stack.ensure("redis")
    assert isinstance(info, RedisInfo)
    return info


@pytest.fixture(scope="session")
def redis_url(redis_info: RedisInfo) -> str:
    return redis_info.url


@pytest.fixture(scope="session")
def vcsim_info(dev_stack: DevStack) -> VcsimInfo:
    info = dev_stack.ensure("vcsim")
    assert isinstance(info, VcsimInfo)
    return info


@pytest.fixture(scope="session")
def libvirt_info(dev_stack: DevStack) -> LibvirtInfo:
    info = dev_stack.ensure("libvirt")
    assert isinstance(info, LibvirtInfo)
    return info


@pytest.fixture(scope="session")
def libvirt_uri(libvirt_info: LibvirtInfo) -> str:
    return libvirt_info.uri


@pytest.fixture(scope="session")
def pve_info(dev_stack: DevStack) -> ProxmoxInfo:
    info = dev_stack.ensure("proxmox")
    assert isinstance(info, ProxmoxInfo)
    return info


@pytest.fixture(scope="session")
def ray_info(dev_stack: DevStack) -> RayInfo:
    info = dev_stack.ensure("ray")
    assert isinstance(info, RayInfo)
    # A driver must see the same settings as the head, or Ray picks a non-loopback node IP.
    os.environ.update(info.env)
    return info


@pytest.fixture(scope="session")
def ray_address(ray_info: RayInfo) -> str:
    """host:port for ray.init(address=...); the Ray env vars are already set."""
    return ray_info.address
