"""Fixtures and helpers for the API tests on the dev stack's API server: a kube client, the
generated CRDs installed, a namespace, kubectl."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from virtrigaud.api.crdgen import all_crds
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import (
    CRDS,
    NAMESPACES,
    PROVIDERS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_CLONES,
    VM_IMAGES,
    VM_MIGRATIONS,
    VM_NETWORK_ATTACHMENTS,
    VM_PLACEMENT_POLICIES,
    VM_SETS,
    VM_SNAPSHOTS,
    Resource,
)

# The machine image has kubectl; `make setup` installs one into .venv where it does not.
KUBECTL = (
    shutil.which(
        "kubectl",
        path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    or "kubectl"
)
FIELD_MANAGER = "virtrigaud-api-tests"
RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        VIRTUAL_MACHINES,
        PROVIDERS,
        VM_CLASSES,
        VM_IMAGES,
        VM_SNAPSHOTS,
        VM_CLONES,
        VM_MIGRATIONS,
        VM_SETS,
        VM_PLACEMENT_POLICIES,
        VM_NETWORK_ATTACHMENTS,
    )
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
async def kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(kubeconfig) as client:
        yield client


@pytest.fixture(scope="session")
async def crds_installed(kube: KubeClient) -> None:
    for crd in all_crds():
        await kube.apply(CRDS, crd, field_manager=FIELD_MANAGER)
    names = {crd["metadata"]["name"] for crd in all_crds()}
    for _ in range(100):
        established = {
            item["metadata"]["name"]
            for item in (await kube.list(CRDS))["items"]
            if any(
                c["type"] == "Established" and c["status"] == "True"
                for c in item.get("status", {}).get("conditions", [])
            )
        }
        if names <= established:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"CRDs not Established after 10 s: {sorted(names - established)}")


@pytest.fixture(scope="session")
async def ns(kube: KubeClient, crds_installed: None) -> AsyncIterator[str]:
    name = unique("api-test")
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    # The test API server deletes a namespace without deleting its contents.
    for res in RESOURCES.values():
        await kube.request("DELETE", res.collection_path(name))
    await kube.delete(NAMESPACES, name)


async def run_kubectl(
    kubeconfig: str, *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one kubectl call against the dev stack."""
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        kubeconfig,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    return proc.returncode or 0, out.decode(), err.decode()


async def kubectl(kubeconfig: str, *args: str, stdin: bytes | None = None) -> str:
    status, out, err = await run_kubectl(kubeconfig, *args, stdin=stdin)
    assert status == 0, err
    return out


def deep_subset(wanted: Any, got: Any, path: str = "") -> list[str]:
    """Where `got` lacks or differs from something in `wanted` (lists element by element)."""
    if isinstance(wanted, dict):
        if not isinstance(got, dict):
            return [f"{path}: {got!r} is not an object"]
        return [
            problem
            for key, value in wanted.items()
            for problem in (
                deep_subset(value, got[key], f"{path}.{key}")
                if key in got
                else [f"{path}.{key}: missing"]
            )
        ]
    if isinstance(wanted, list):
        if not isinstance(got, list) or len(got) != len(wanted):
            return [f"{path}: {got!r} instead of {wanted!r}"]
        return [
            p
            for i, (w, g) in enumerate(zip(wanted, got, strict=True))
            for p in deep_subset(w, g, f"{path}[{i}]")
        ]
    return [] if wanted == got else [f"{path}: {got!r} instead of {wanted!r}"]
