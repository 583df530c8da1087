"""Importing an OVA into vSphere as a template: download, ImportVApp, NFC upload.

vSphere's own import path (what ``govc import.ova`` does): the OVF descriptor goes to
``OvfManager.CreateImportSpec``, ``ResourcePool.ImportVApp`` creates the VM and returns
an ``HttpNfcLease``; once the lease is ready each disk is PUT to the URL the lease gives
for it (with the session's cookie), progress is reported on the lease, and
``HttpNfcLeaseComplete`` ends it. The VM is then marked as a template. A failure aborts
the lease, which makes vSphere remove the half-imported VM.

An import takes minutes on real hardware, so it runs as a background job of the
provider (``ImportJob``) while ``image_prepare`` answers "not ready, N %" at once; every
hypervisor call still goes through the provider's call gate (rate limit, fence).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from virtrigaud.providers.base import ImageSpec, ProviderError, RetryableError, TerminalError
from virtrigaud.providers.vsphere.sdk import vim

T = TypeVar("T")
Call = Callable[[str, Callable[[Any], T]], Awaitable[T]]

DOWNLOAD_TIMEOUT = 600.0
LEASE_READY_TIMEOUT = 120.0
CHUNK = 1 << 20


@dataclass
class ImportJob:
    """One OVA import in flight: its task, and how far it got."""

    image: ImageSpec  # template: the name to import as; import_url, import_checksum, where
    total: int = 0
    sent: int = 0
    task: asyncio.Task[None] | None = None
    error: ProviderError | None = None
    stage: str = "downloading"

    @property
    def name(self) -> str:
        return self.image.template

    @property
    def url(self) -> str:
        assert self.image.import_url is not None
        return self.image.import_url

    @property
    def percent(self) -> int:
        if self.stage == "downloading" or self.total <= 0:
            return 0
        return min(99, int(self.sent * 100 / self.total))

    def describe(self) -> str:
        if self.stage == "downloading":
            return f"downloading {self.url}"
        return f"{self.stage} template {self.name!r} from {self.url}: {self.percent} %"


@dataclass
class Ova:
    """An OVA on local disk: its descriptor and where each referenced file sits."""

    path: str
    descriptor: str
    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)


def download(url: str, insecure: bool, checksum: str | None = None) -> str:
    """The OVA at url, saved to a temporary file (the caller removes it); with checksum
    ("algorithm:hex") a file whose digest differs is refused."""
    algorithm, _, expected = (checksum or "").partition(":")
    digest = hashlib.new(algorithm) if checksum else None
    fd, path = tempfile.mkstemp(prefix="virtrigaud-ova-", suffix=".ova")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            requests.get(url, stream=True, timeout=30, verify=not insecure) as resp,
        ):
            if resp.status_code != 200:
                raise TerminalError(
                    f"downloading {url} answered HTTP {resp.status_code}; fix "
                    "spec.source.vsphere.ovaURL",
                    field="spec.source.vsphere.ovaURL",
                )
            for chunk in resp.iter_content(CHUNK):
                out.write(chunk)
                if digest is not None:
                    digest.update(chunk)
        if digest is not None and digest.hexdigest() != expected:
            raise TerminalError(
                f"{url} has {algorithm} {digest.hexdigest()}, not the {expected} the image "
                "expects: nothing was imported. Fix spec.source.vsphere.checksum (or "
                "checksumType), or the file at ovaURL",
                field="spec.source.vsphere.checksum",
            )
    except requests.RequestException as e:
        os.unlink(path)
        raise RetryableError(f"downloading {url} failed: {e}") from e
    except BaseException:
        os.unlink(path)
        raise
    return path


def open_ova(path: str, url: str) -> Ova:
    try:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            ovf = next((m for name, m in members.items() if name.endswith(".ovf")), None)
            if ovf is None:
                raise TerminalError(
                    f"{url} holds no .ovf descriptor; spec.source.vsphere.ovaURL must name an "
                    "OVA (a tar of an .ovf and its disks)",
                    field="spec.source.vsphere.ovaURL",
                )
            handle = tar.extractfile(ovf)
            assert handle is not None
            descriptor = handle.read().decode()
    except tarfile.TarError as e:
        raise TerminalError(
            f"{url} is not an OVA ({e}); spec.source.vsphere.ovaURL must name an OVA",
            field="spec.source.vsphere.ovaURL",
        ) from e
    return Ova(path, descriptor, members)


def upload(ova: Ova, member: tarfile.TarInfo, url: str, cookie: str, insecure: bool) -> None:
    """PUT one disk of the OVA to the lease's URL for it."""
    with tarfile.open(ova.path) as tar:
        handle = tar.extractfile(member)
        assert handle is not None
        resp = requests.put(
            url,
            data=handle,
            headers={
                "Content-Type": "application/x-vnd.vmware-streamVmdk",
                "Content-Length": str(member.size),
                "Cookie": cookie,
            },
            timeout=DOWNLOAD_TIMEOUT,
            verify=not insecure,
        )
    if resp.status_code not in (200, 201):
        raise RetryableError(f"uploading {member.name} to {url} answered HTTP {resp.status_code}")


async def run_import(
    job: ImportJob,
    *,
    endpoint: str,
    insecure: bool,
    placement: Any,
    read: Call[Any],
    write: Call[Any],
) -> None:
    """Import the OVA at job.url as template job.name (see the module docstring)."""
    path = await asyncio.to_thread(download, job.url, insecure, job.image.import_checksum)
    try:
        ova = await asyncio.to_thread(open_ova, path, job.url)
        job.stage = "importing"
        params = vim.OvfManager.CreateImportSpecParams(entityName=job.name)
        result = await read(
            "CreateImportSpec",
            lambda c: c.content.ovfManager.CreateImportSpec(
                ova.descriptor, placement.pool, placement.datastore, params
            ),
        )
        if result.error:
            problems = "; ".join(str(getattr(e, "msg", e)) for e in result.error)
            raise TerminalError(f"vCenter {endpoint} refuses the OVF of {job.url}: {problems}")
        files = {item.deviceId: item for item in result.fileItem or []}
        job.total = sum(ova.members[f.path].size for f in files.values() if f.path in ova.members)
        lease = await write(
            "ImportVApp",
            lambda c: placement.pool.ImportVApp(
                result.importSpec, placement.folder, placement.host
            ),
        )
        try:
            await _lease_ready(lease, read, endpoint)
            info = await read("HttpNfcLeaseInfo", lambda c: lease.info)
            for device in info.deviceUrl or []:
                item = files.get(device.importKey)
                if item is None or item.path not in ova.members:
                    continue
                member = ova.members[item.path]
                target = _on_endpoint(device.url, endpoint)

                def put(c: Any, member: tarfile.TarInfo = member, target: str = target) -> None:
                    upload(ova, member, target, c.stub.cookie, insecure)

                await write("NfcUpload", put)
                job.sent += member.size
                await write(
                    "HttpNfcLeaseProgress", lambda c: lease.HttpNfcLeaseProgress(job.percent)
                )
            await write("HttpNfcLeaseComplete", lambda c: lease.HttpNfcLeaseComplete())
        except BaseException as e:
            with contextlib.suppress(Exception):
                fault = vim.LocalizedMethodFault(localizedMessage=str(e))
                await write("HttpNfcLeaseAbort", lambda c: lease.HttpNfcLeaseAbort(fault))
            raise
        entity = info.entity
        job.stage = "marking"
        await write("MarkAsTemplate", lambda c: entity.MarkAsTemplate())
    finally:
        os.unlink(path)


def _on_endpoint(device_url: str, endpoint: str) -> str:
    """The lease's URL with its host ("*" or the host's own name) replaced by the
    endpoint's, which is how this controller reaches vCenter."""
    parts = urlsplit(device_url)
    ep = urlsplit(endpoint)
    return parts._replace(scheme=ep.scheme or parts.scheme, netloc=ep.netloc).geturl()


async def _lease_ready(lease: Any, read: Call[Any], endpoint: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEASE_READY_TIMEOUT
    while True:
        state = await read("HttpNfcLeaseState", lambda c: (lease.state, lease.error))
        if state[0] == vim.HttpNfcLease.State.ready:
            return
        if state[0] == vim.HttpNfcLease.State.error:
            message = getattr(state[1], "localizedMessage", None) or str(state[1])
            raise TerminalError(f"vCenter {endpoint} failed the import lease: {message}")
        if loop.time() > deadline:
            raise RetryableError(
                f"the import lease of vCenter {endpoint} was not ready within "
                f"{LEASE_READY_TIMEOUT:g} s"
            )
        await asyncio.sleep(0.5)
