"""The provider contract: what the reconcilers ask of a hypervisor, in hypervisor-neutral terms.

A provider instance serves one Provider endpoint inside one process and owns that
endpoint's pooled session. All methods are async; blocking SDK calls run in the session
pool's bounded thread pool behind the call gate (``virtrigaud.providers.calls``), which
is the single place that takes rate-limit tokens and counts calls.

Long operations return a ``TaskRef``: a string that survives a process restart (a vCenter
task moref, a Proxmox UPID, or ``done:`` for work the hypervisor finished synchronously),
so a reconcile records it in status and resumes it instead of repeating the operation.
No method waits for a hypervisor task: each returns as soon as the hypervisor accepted the
work, and what remains after a task is asked for again once ``task_status`` says it ended
(``finish_create`` after a create or clone, ``delete`` again after a delete's power-off),
so a reconcile holds nothing for longer than a few calls and any process can resume it.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass, field

OWNER_TAG_PREFIX = "virtrigaud"


class ErrorKind(enum.Enum):
    RETRYABLE = "Retryable"  # network, busy, locked, rate limited: try again later
    TERMINAL = "Terminal"  # this spec can never work as written: the user must change it
    NOT_FOUND = "NotFound"  # the VM/snapshot/image does not exist (any more)


class Cause(enum.Enum):
    """Why the endpoint itself failed a call, where the provider can tell: what a Provider's
    health conditions report (the values are their reasons)."""

    AUTHENTICATION = "AuthenticationFailed"  # the credentials were refused
    UNREACHABLE = "Unreachable"  # no answer: refused, timed out, name not resolved
    TLS = "TLSError"  # the TLS handshake or the certificate check failed
    UNSUPPORTED_VERSION = "UnsupportedVersion"  # the hypervisor is older than supported
    INVALID_SPEC = "InvalidSpec"  # the Provider's spec or Secret cannot work as written


class ProviderError(Exception):
    kind: ErrorKind = ErrorKind.RETRYABLE

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
        cause: Cause | None = None,
    ) -> None:
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.cause = cause
        super().__init__(f"{field}: {message}" if field else message)

    @property
    def reason(self) -> str:
        """A CamelCase condition reason for status and Events."""
        return f"Provider{self.kind.value}"


class RetryableError(ProviderError):
    kind = ErrorKind.RETRYABLE


class TerminalError(ProviderError):
    kind = ErrorKind.TERMINAL


class NotFoundError(ProviderError):
    kind = ErrorKind.NOT_FOUND


BUSY_REASON = "WaitingForHypervisor"


class Busy(RetryableError):
    """The work cannot start now because the hypervisor is busy with tasks of its kind (the
    provider caps them: clones of one template); nothing was started. Not a failure: ask
    again after ``retry_after`` seconds."""

    retry_after: float

    def __init__(self, message: str, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(message, field=field, retry_after=retry_after)

    @property
    def reason(self) -> str:
        return BUSY_REASON


class OwnershipError(TerminalError):
    """The hypervisor VM exists but does not carry this object's ownership tag."""

    @property
    def reason(self) -> str:
        return "NotOwned"


@dataclass(frozen=True)
class Owner:
    """The Kubernetes object a hypervisor VM belongs to.

    ``adopted_id``: the hypervisor VM this object adopted (``virtrigaud.io/adopted-vm-id``).
    Adoption writes nothing on the hypervisor, so that VM carries no ownership tag; it is
    this object's by its id instead. Not part of equality: the tag is what owners compare.
    """

    namespace: str
    name: str
    uid: str
    adopted_id: str | None = field(default=None, compare=False)

    def tag(self) -> str:
        """The ownership tag written on the hypervisor VM."""
        return f"{OWNER_TAG_PREFIX}:{self.namespace}/{self.name}/{self.uid}"

    @staticmethod
    def parse(tag: str | None) -> Owner | None:
        if not tag:
            return None
        m = re.fullmatch(rf"{OWNER_TAG_PREFIX}:([^/]+)/([^/]+)/([^/]+)", tag.strip())
        return Owner(m.group(1), m.group(2), m.group(3)) if m else None

    def hypervisor_name(self, max_len: int = 63) -> str:
        """A name unique per (namespace, name): namespaces cannot contain dots."""
        full = f"{self.namespace}.{self.name}"
        if len(full) <= max_len:
            return full
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        return f"{full[: max_len - 9]}-{digest}"


class PowerState(enum.Enum):
    ON = "On"
    OFF = "Off"
    UNKNOWN = "Unknown"


class PowerOp(enum.Enum):
    ON = "On"
    OFF = "Off"  # hard power off
    OFF_GRACEFUL = "OffGraceful"  # guest shutdown, then hard off after the timeout
    REBOOT = "Reboot"


@dataclass(frozen=True)
class DiskSpec:
    name: str
    size_gib: int


@dataclass(frozen=True)
class NetworkSpec:
    network: str  # portgroup / libvirt network / Proxmox bridge
    mac: str | None = None
    ip_address: str | None = None
    prefix: int | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    """Where a new VM's disk comes from, in the provider's own terms.

    vSphere: ``template`` is a template/VM name. libvirt: ``template`` is a storage volume
    (``pool/volume``) or an absolute path. Proxmox: ``template`` is the template's vmid and
    ``node`` the node it lives on.
    """

    template: str
    node: str | None = None
    # Where to import the image from when ``template`` is missing (a provider whose
    # capabilities say image_import); vSphere: an OVA's http(s) URL.
    import_url: str | None = None
    # The digest the import_url's file must have, "algorithm:hex" (sha256, sha512, sha1,
    # md5); a download that differs is refused before anything reaches the hypervisor.
    import_checksum: str | None = None
    # vSphere: the datastore and VM folder an imported template lands in (the Provider's
    # defaults when unset).
    import_datastore: str | None = None
    import_folder: str | None = None
    # Proxmox: the storage a full clone's disks go to, and a linked clone the image asks for
    # (the VMImage's fullClone: false); a VM's own spec.placement wins over both.
    storage: str | None = None
    linked_clone: bool = False


@dataclass(frozen=True)
class VMSpec:
    """Desired state of one VM as the provider needs it."""

    owner: Owner
    cpu: int
    memory_mib: int
    image: ImageSpec | None = None
    # The root disk first (the image's disk, grown to this size when it is smaller; never
    # shrunk), then additional empty disks; providers report DiskInfo under these names.
    disks: tuple[DiskSpec, ...] = ()
    networks: tuple[NetworkSpec, ...] = ()
    user_data: str | None = None
    meta_data: str | None = None
    placement: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    firmware: str | None = None
    # vSphere: advanced settings written into the new VM's extraConfig (the VMClass's
    # spec.extraConfig), at create only.
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.owner.hypervisor_name()


@dataclass(frozen=True)
class DiskInfo:
    name: str
    size_gib: float


@dataclass(frozen=True)
class VMInfo:
    id: str
    name: str
    power_state: PowerState
    cpu: int
    memory_mib: int
    owner: Owner | None
    ips: tuple[str, ...] = ()
    disks: tuple[DiskInfo, ...] = ()
    console_url: str | None = None
    snapshots: tuple[str, ...] = ()
    host: str | None = None  # the host (node) it runs on, where a provider tells


@dataclass(frozen=True)
class Observed:
    """What a batched listing tells about one VM: enough to see drift, not to converge."""

    power_state: PowerState
    cpu: int
    memory_mib: int


@dataclass(frozen=True)
class Resources:
    cpu: int
    memory_mib: int
    disks: tuple[DiskSpec, ...] = ()


@dataclass(frozen=True)
class ReconfigureResult:
    task: TaskRef | None
    # The hypervisor cannot apply part of the change online; it takes effect after a
    # power cycle (the reconcile reports this in a condition instead of forcing it).
    needs_power_cycle: bool = False
    pending: tuple[str, ...] = ()


TaskRef = str
"""An opaque, restart-safe task reference; ``done:...`` means already complete."""

DONE: TaskRef = "done:"


@dataclass(frozen=True)
class TaskStatus:
    done: bool
    error: ProviderError | None = None
    progress: int | None = None  # percent, when the hypervisor reports it
    result: str | None = None  # e.g. the id of the VM a clone produced


@dataclass(frozen=True)
class Capabilities:
    online_cpu_change: bool
    online_memory_change: bool
    online_disk_grow: bool
    snapshots: bool
    memory_snapshots: bool
    linked_clones: bool
    image_import: bool
    async_tasks: bool
    graceful_shutdown: bool
    # create() may leave steps (a config write, a hardware change, disk resizes) for
    # finish_create(); False: a created VM is finished when create's task ends.
    create_steps: bool = True


@dataclass(frozen=True)
class PreparedImage:
    id: str
    path: str | None = None
    ready: bool = True
    # An import in progress (ready False): how far it got, in percent, and what it does.
    progress: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class EndpointInfo:
    """What one cheap look at the endpoint tells (``probe``)."""

    version: str  # the hypervisor's own version string, e.g. "9.0.10" or "6.5.0"
    product: str = ""  # e.g. "VMware vCenter Server", "Proxmox VE", "libvirt (QEMU)"


@dataclass(frozen=True)
class NetworkState:
    """One network as the hypervisor has it (``networks``)."""

    name: str
    exists: bool
    id: str | None = None
    state: str | None = None  # e.g. "active", "inactive", the portgroup's switch
    message: str | None = None


class Provider(abc.ABC):
    """One hypervisor endpoint. Implementations live in providers/<type>/."""

    type: str

    @abc.abstractmethod
    async def validate(self) -> None:
        """Log in (or reuse the session) and check the endpoint answers; raise otherwise."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    async def ensure_ready(self) -> None:
        """What must be known before ``capabilities()`` can answer; the session pool awaits
        it before handing the provider out. In-process providers know at once; a remote
        one asks its server (once per session), raising like ``validate`` when it cannot."""
        return None

    async def probe(self) -> EndpointInfo:
        """One cheap look at the endpoint (the Provider health check): log in or reuse the
        session, check it answers, and say which version it runs. Raises like
        ``validate`` (with ``ProviderError.cause`` where the provider can tell why);
        an unsupported version raises a TerminalError with cause UNSUPPORTED_VERSION."""
        await self.validate()
        return EndpointInfo(version="")

    async def placement_hosts(self, spec: VMSpec) -> list[str]:
        """The hosts a VM of ``spec`` may be placed on (those of the compute resource its
        placement resolves to, ignoring ``placement["host"]``), sorted by name; a
        ``placement["host"]`` given to ``create`` must be one of them."""
        raise TerminalError(f"{self.type} providers cannot place VMs on chosen hosts")

    async def networks(self, names: Collection[str]) -> list[NetworkState]:
        """Whether each named network (vSphere portgroup, libvirt network or bridge,
        Proxmox VE bridge) exists, in few calls."""
        raise TerminalError(f"{self.type} providers cannot look networks up")

    @abc.abstractmethod
    async def create(self, spec: VMSpec, *, known_absent: bool = False) -> tuple[str, TaskRef]:
        """Start creating (not powering on) the VM and return as soon as the hypervisor
        accepted the work: ``(vm_id, task)``. ``vm_id`` is "" when only the finished task
        names the VM (``TaskStatus.result``). Once the task finished, ``finish_create``
        does what is left.

        Idempotent: for an existing VM owned by spec.owner it returns that VM and the next
        step that finishes it (``finish_create``'s answer); one owned by someone else raises
        OwnershipError. Raises Busy when the provider's cap on concurrent clones of the
        image is reached (nothing was started).

        ``known_absent``: the caller knows no VM of spec.owner exists (no create was ever
        attempted for it, or its ``find(spec.owner)`` has just returned None) and no one
        else acts for this owner meanwhile, so the provider may skip looking for one. A
        foreign VM holding the name still raises OwnershipError where hypervisor names are
        unique (a vSphere folder, a libvirt host); on Proxmox VE, where they are not, it is
        left alone and the new VM is created beside it. A VM appearing in between still
        fails the create instead of being overwritten."""

    @abc.abstractmethod
    async def finish_create(self, vm_id: str, spec: VMSpec) -> TaskRef:
        """The next remaining step of a create (or clone) whose last task finished: a config
        write, the hardware the image lacks, one disk resize at a time. Returns that step's
        task, or DONE when nothing is left; call again after each task finished. Idempotent;
        makes no hypervisor call where create leaves nothing (``create_steps`` False)."""

    @abc.abstractmethod
    async def find(self, owner: Owner) -> VMInfo | None:
        """The VM this owner's hypervisor name maps to, if it exists (any owner tag)."""

    @abc.abstractmethod
    async def describe(self, vm_id: str, *, snapshots: bool = True, disks: bool = True) -> VMInfo:
        """Current state; NotFoundError when the VM is gone. ``snapshots=False`` /
        ``disks=False``: the caller does not need ``VMInfo.snapshots`` / ``VMInfo.disks``,
        so a provider for which reading them costs calls of their own may leave them
        out."""

    @abc.abstractmethod
    async def list_owned(self) -> list[VMInfo]:
        """Every VM on the endpoint that carries a VirtRigaud ownership tag, in few calls.

        A batch read may leave ``disks`` and ``snapshots`` empty where reading them costs
        per VM (vSphere does); ``describe`` always fills them."""

    async def list_unowned(self) -> list[VMInfo]:
        """Every VM on the endpoint that carries no VirtRigaud ownership tag (templates
        left out), in few calls and without changing anything: the candidates for
        adoption. ``disks`` and ``snapshots`` may be left empty, as in ``list_owned``."""
        raise TerminalError(f"{self.type} providers cannot list the VMs of an endpoint")

    async def observe_all(self, wanted: Collection[str] | None = None) -> dict[str, Observed]:
        """Power state, CPU and memory of every VirtRigaud-owned VM, keyed by VM id, in as few
        calls as the hypervisor allows: the periodic sweep's one look at the endpoint.

        ``wanted``: the ids the caller will look up (None: all). A provider that must read
        some VMs one by one reads only these; the answer may still hold others. Built on
        ``list_owned``; a provider whose listing costs per VM overrides it."""
        return {
            info.id: Observed(info.power_state, info.cpu, info.memory_mib)
            for info in await self.list_owned()
        }

    @abc.abstractmethod
    async def power(
        self,
        vm_id: str,
        owner: Owner,
        op: PowerOp,
        graceful_timeout: float = 60.0,
        *,
        known: VMInfo | None = None,
    ) -> TaskRef:
        """Start a power change. OFF_GRACEFUL returns a task that ``task_status`` advances:
        done once the VM is off; past ``graceful_timeout`` task_status starts the hard
        power-off and reports not done until the VM is off (it never waits).

        ``known``: what the caller's own look at the VM in this pass found (a describe, or
        what a create that just finished implies). For ON and OFF a provider may take the
        owner and power state from it instead of reading the VM again; a state that
        changed meanwhile is harmless (starting a VM that is on, or stopping one that is
        off, is answered as done)."""

    @abc.abstractmethod
    async def reconfigure(
        self, vm_id: str, owner: Owner, desired: Resources
    ) -> ReconfigureResult: ...

    @abc.abstractmethod
    async def delete(self, vm_id: str, owner: Owner) -> TaskRef:
        """Destroy the VM; refuses a VM not owned by owner. A running VM may first need a
        power-off: then that is what starts and its task is returned, and the caller calls
        delete again once it finished. NotFoundError when the VM is gone (a delete that
        completed)."""

    @abc.abstractmethod
    async def snapshot_create(
        self, vm_id: str, owner: Owner, name: str, *, include_memory: bool, description: str
    ) -> tuple[str, TaskRef]: ...

    @abc.abstractmethod
    async def snapshot_delete(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef: ...

    @abc.abstractmethod
    async def snapshot_revert(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef: ...

    @abc.abstractmethod
    async def clone(
        self, source_id: str, spec: VMSpec, *, linked: bool
    ) -> tuple[str | None, TaskRef]:
        """Start cloning source into a new VM for spec.owner, like create: the id may only
        be known from the finished task (TaskStatus.result), and ``finish_create`` does
        what is left once it finished."""

    @abc.abstractmethod
    async def image_prepare(self, image: ImageSpec) -> PreparedImage:
        """Check (and where supported, import) the image; NotFoundError if it is missing.

        An import is started (or followed) in the background and reported as
        ``ready=False`` with its progress; a failed import raises once, and the next call
        starts it again."""

    @abc.abstractmethod
    async def task_status(self, task: TaskRef) -> TaskStatus: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Log out and release the session and its threads."""


def check_owner(info: VMInfo, owner: Owner) -> None:
    """Refuse to touch a VM whose ownership tag is not this object's, unless it is the
    untagged VM this object adopted (a VM tagged for another object is never adopted)."""
    if info.owner is None and owner.adopted_id is not None and info.id == owner.adopted_id:
        return
    if info.owner != owner:
        found = info.owner.tag() if info.owner else "no VirtRigaud ownership tag"
        raise OwnershipError(
            f"hypervisor VM {info.name!r} ({info.id}) is owned by {found}, not by "
            f"{owner.namespace}/{owner.name} (uid {owner.uid}); VirtRigaud will not modify it. "
            "Rename the VirtualMachine or remove the foreign VM."
        )


def known_power(known: VMInfo | None, vm_id: str, op: PowerOp) -> VMInfo | None:
    """The look ``power`` may act on instead of reading the VM (``known``, the caller's look
    at vm_id in this pass), when op is ON or OFF and it shows the VM plainly on or off."""
    if (
        known is not None
        and known.id == vm_id
        and known.power_state is not PowerState.UNKNOWN
        and op in (PowerOp.ON, PowerOp.OFF)
    ):
        return known
    return None
