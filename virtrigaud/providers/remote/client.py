"""A Provider whose hypervisor sits behind a provider.v1 server (ours or the Go project's).

The reconcilers see the same contract and the same three error kinds as with an
in-process provider:

- every call first pays one rate-limit token through the Provider's call gate; the server
  reports how many hypervisor calls the request made and the rest is paid right after;
- one gRPC channel per endpoint and TLS material per process, shared by every Provider
  that points there (``channels``);
- a deadline per method; only idempotent reads are sent again, and only after UNAVAILABLE;
- a circuit breaker per Provider (``breaker``) counting transport failures;
- mTLS from the Provider's TLS Secret or mounted files: a rotated client certificate or CA
  bundle in files takes effect on a new channel within ``tls_recheck`` seconds; a rotated
  Secret changes the Provider's config, so the session pool builds a new provider.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from virtrigaud.providers.base import (
    DONE,
    Capabilities,
    Cause,
    ImageSpec,
    NotFoundError,
    Observed,
    Owner,
    PowerOp,
    PreparedImage,
    Provider,
    ProviderError,
    ReconfigureResult,
    Resources,
    RetryableError,
    TaskRef,
    TaskStatus,
    VMInfo,
    VMSpec,
)
from virtrigaud.providers.calls import CallGate
from virtrigaud.providers.remote import wire
from virtrigaud.providers.remote.breaker import BreakerState, CircuitBreaker
from virtrigaud.providers.remote.channels import CHANNELS, ChannelKey
from virtrigaud.providers.remote.errors import (
    TRANSPORT_FAILURES,
    error_from_trailers,
    error_of_code,
    transport_cause,
)
from virtrigaud.providers.remote.metrics import REMOTE_RETRIES, REMOTE_RPC_SECONDS, REMOTE_RPCS
from virtrigaud.providers.remote.pb import provider_pb2 as pb
from virtrigaud.providers.remote.tls import TLSMaterial, TLSSource

DEFAULT_DEADLINES: dict[str, float] = {
    "Validate": 30,
    "GetCapabilities": 30,
    "Describe": 30,
    "TaskStatus": 10,
    "ListVMs": 120,
    "Create": 300,
    "Reconfigure": 300,
    "Clone": 300,
    "ImagePrepare": 300,
    "SnapshotCreate": 300,
    "SnapshotRevert": 300,
    "Delete": 120,
    "Power": 120,
    "SnapshotDelete": 120,
}
IDEMPOTENT = frozenset({"Validate", "GetCapabilities", "Describe", "TaskStatus", "ListVMs"})


@dataclass(frozen=True)
class RemoteSettings:
    deadlines: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    retries: int = 2
    """Extra attempts for an idempotent call after UNAVAILABLE."""
    retry_backoff: float = 0.1
    failure_threshold: int = 5
    reset_timeout: float = 30.0


@dataclass(frozen=True)
class RemoteEndpoint:
    """Where a remote provider listens and how to talk to it."""

    address: str
    """host:port of the provider server (a Service's DNS name in a cluster)."""
    tls: TLSSource | None
    insecure: bool = False
    server_name: str | None = None
    """The name the server certificate must carry, when it is not the address's host."""

    def __post_init__(self) -> None:
        if self.tls is None and not self.insecure:
            raise ValueError(
                f"remote provider {self.address}: no TLS configuration; give the TLS Secret "
                "(tls.crt, tls.key, ca.crt) or files, or set the explicit insecure flag"
            )


class RemoteProvider(Provider):
    def __init__(
        self,
        provider_type: str,
        key: str,
        endpoint: RemoteEndpoint,
        gate: CallGate,
        settings: RemoteSettings | None = None,
    ) -> None:
        self.type = provider_type
        self.key = key
        self.endpoint = endpoint
        self.gate = gate
        self.settings = settings or RemoteSettings()
        self.breaker = CircuitBreaker(
            provider_type,
            key,
            failure_threshold=self.settings.failure_threshold,
            reset_timeout=self.settings.reset_timeout,
        )
        self._channel_key: ChannelKey | None = None
        self._material: TLSMaterial | None = None
        self._caps: Capabilities | None = None
        self._closed = False

    # --- plumbing --------------------------------------------------------------------

    def circuit(self) -> BreakerState:
        """The circuit breaker's state, for the Provider's status."""
        return self.breaker.snapshot()

    def _where(self) -> str:
        return f"Provider {self.key}: remote provider at {self.endpoint.address}"

    def _channel(self) -> grpc.aio.Channel:
        if self._closed:
            raise RetryableError(f"{self._where()}: this session is closed")
        material = self._material
        tls = self.endpoint.tls
        if tls is not None:
            try:
                fresh = tls.load() if material is None else tls.changed_since(material.fingerprint)
            except Exception as e:
                raise RetryableError(
                    f"{self._where()}: TLS material from {tls.describe()} unusable: {e}"
                ) from e
            if fresh is not None:
                material = fresh
        if self._channel_key is not None and material is self._material:
            return CHANNELS.get(self._channel_key)
        key = ChannelKey(
            address=self.endpoint.address,
            server_name=self.endpoint.server_name,
            fingerprint=material.fingerprint if material else "insecure",
        )
        channel = CHANNELS.acquire(key, material)
        if self._channel_key is not None:
            CHANNELS.release(self._channel_key)
        self._channel_key, self._material = key, material
        return channel

    def _settle(self, trailers: wire.Metadata | None) -> int:
        """The hypervisor calls the server reported beyond the token already paid."""
        calls = wire.md_value(trailers, wire.MD_CALLS)
        try:
            extra = int(calls) - 1 if calls else 0
        except ValueError:
            extra = 0
        return max(0, min(extra, self.gate.rate.burst))

    async def _rpc(
        self,
        method: str,
        request: Any,
        response_type: Any,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> tuple[Any, wire.Metadata]:
        attempts = 1 + (self.settings.retries if method in IDEMPOTENT else 0)
        timeout = self.settings.deadlines.get(method, 60.0)
        labels = (self.type, self.key, method)
        for attempt in range(attempts):
            try:
                self.breaker.before_call()
            except RetryableError as e:
                # Failing fast says the same as an unreachable hypervisor would.
                raise RetryableError(
                    f"{self._where()}: {e.message}",
                    retry_after=e.retry_after,
                    cause=Cause.UNREACHABLE,
                ) from None
            await self.gate.pay(1, method=method, mutating=method not in IDEMPOTENT)
            callable_ = self._channel().unary_unary(
                f"/{wire.SERVICE}/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_type.FromString,
            )
            start = time.perf_counter()
            code = "OK"
            try:
                call = callable_(request, timeout=timeout, metadata=metadata)
                response = await call
                trailers = tuple(await call.trailing_metadata() or ())
            except grpc.aio.AioRpcError as e:
                code = e.code().name
                trailers = tuple(e.trailing_metadata() or ())
                extra = self._settle(trailers)
                if extra:
                    await self.gate.pay(extra)
                app_error = error_from_trailers(e.details() or "", trailers)
                if app_error is not None:
                    self.breaker.on_success()
                    raise app_error from None
                if e.code() == grpc.StatusCode.CANCELLED:
                    self.breaker.on_neutral()
                elif e.code() in TRANSPORT_FAILURES:
                    self.breaker.on_failure(f"{method}: {e.code().name}")
                else:
                    self.breaker.on_success()
                if (
                    e.code() == grpc.StatusCode.UNAVAILABLE
                    and attempt + 1 < attempts
                    and self.breaker.state != "Open"
                ):
                    REMOTE_RETRIES.labels(*labels).inc()
                    await asyncio.sleep(self.settings.retry_backoff * (2**attempt))
                    continue
                raise self._transport_error(method, e.code(), e.details() or "", timeout) from None
            except asyncio.CancelledError:
                self.breaker.on_neutral()
                code = "CANCELLED"
                raise
            finally:
                REMOTE_RPCS.labels(*labels, code).inc()
                REMOTE_RPC_SECONDS.labels(*labels).observe(time.perf_counter() - start)
            extra = self._settle(trailers)
            if extra:
                await self.gate.pay(extra)
            if response is None:  # gRPC could not decode the bytes as response_type
                raise self._garbage(
                    method, ValueError(f"not a provider.v1 {response_type.DESCRIPTOR.name}")
                )
            self.breaker.on_success()
            return response, trailers
        raise AssertionError("unreachable")  # pragma: no cover

    def _transport_error(
        self, method: str, code: grpc.StatusCode, details: str, timeout: float
    ) -> ProviderError:
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"{self._where()} did not answer {method} within {timeout:g} s"
        elif code == grpc.StatusCode.UNAVAILABLE:
            message = (
                f"{self._where()} is unreachable ({details}); check that it runs, that its "
                "address is right and that its certificate and ours come from the same CA"
            )
        elif code == grpc.StatusCode.INTERNAL and "deserializ" in details.lower():
            message = f"{self._where()} answered {method} with something that is not provider.v1"
        else:
            message = f"{self._where()}: {method} failed with {code.name}: {details}"
        error = error_of_code(code, message)
        error.cause = transport_cause(code, details)
        return error

    def _garbage(self, method: str, error: Exception) -> RetryableError:
        self.breaker.on_failure(f"{method}: unreadable answer")
        return RetryableError(
            f"{self._where()} answered {method} with something VirtRigaud cannot read: {error}",
            cause=Cause.UNREACHABLE,
        )

    async def refresh_capabilities(self) -> Capabilities:
        resp, trailers = await self._rpc(
            "GetCapabilities", pb.GetCapabilitiesRequest(), pb.GetCapabilitiesResponse
        )
        try:
            self._caps = wire.capabilities_from(resp, wire.md_value(trailers, wire.MD_CAPABILITIES))
        except (ValueError, TypeError) as e:
            raise self._garbage("GetCapabilities", e) from e
        return self._caps

    # --- the contract ----------------------------------------------------------------

    async def validate(self) -> None:
        resp, trailers = await self._rpc("Validate", pb.ValidateRequest(), pb.ValidateResponse)
        if not resp.ok:
            raise error_from_trailers(resp.message, trailers) or RetryableError(
                f"{self._where()}: validation failed: {resp.message}"
            )
        await self.refresh_capabilities()

    async def ensure_ready(self) -> None:
        """Capabilities come from the server: asked once per session, before first use (a
        shard whose Provider is probed elsewhere never runs validate())."""
        if self._caps is None:
            await self.refresh_capabilities()

    def capabilities(self) -> Capabilities:
        if self._caps is None:
            raise RetryableError(
                f"{self._where()}: capabilities are not known before the first validate()"
            )
        return self._caps

    async def create(self, spec: VMSpec, *, known_absent: bool = False) -> tuple[str, TaskRef]:
        md = [*wire.owner_metadata(spec.owner)]
        if known_absent:
            md.append((wire.MD_KNOWN_ABSENT, "1"))
        resp, _ = await self._rpc(
            "Create", wire.create_request(self.type, spec), pb.CreateResponse, tuple(md)
        )
        return resp.id, resp.task.id

    async def finish_create(self, vm_id: str, spec: VMSpec) -> TaskRef:
        """provider.v1 has no finishing call: Create again for the same owner. Ours runs
        finish_create for the VM named in the request's metadata; a provider server that
        does not know that metadata (the Go project's) answers a Create of a VM that
        exists. Nothing to send where create leaves no steps."""
        if not self.capabilities().create_steps:
            return DONE
        resp, _ = await self._rpc(
            "Create",
            wire.create_request(self.type, spec),
            pb.CreateResponse,
            (*wire.owner_metadata(spec.owner), (wire.MD_FINISH, vm_id)),
        )
        if resp.id and vm_id and resp.id != vm_id:
            raise RetryableError(
                f"{self._where()}: finishing VM {vm_id} for {spec.owner.tag()}, the server "
                f"answered with VM {resp.id}"
            )
        return str(resp.task.id) or DONE

    async def find(self, owner: Owner) -> VMInfo | None:
        md = (*wire.owner_metadata(owner), (wire.MD_LOOKUP, "owner"))
        resp, _ = await self._rpc("Describe", pb.DescribeRequest(id=""), pb.DescribeResponse, md)
        if not resp.exists:
            return None
        try:
            return wire.info_from_describe(resp, "")
        except (ValueError, TypeError) as e:
            raise self._garbage("Describe", e) from e

    async def describe(self, vm_id: str, *, snapshots: bool = True, disks: bool = True) -> VMInfo:
        # provider.v1 has no way to leave disks out: the server reads them either way.
        md = () if snapshots else ((wire.MD_SNAPSHOTS, "0"),)
        resp, _ = await self._rpc("Describe", pb.DescribeRequest(id=vm_id), pb.DescribeResponse, md)
        if not resp.exists:
            raise NotFoundError(f"VM {vm_id} does not exist ({self._where()})")
        try:
            return wire.info_from_describe(resp, vm_id)
        except (ValueError, TypeError) as e:
            raise self._garbage("Describe", e) from e

    async def list_owned(self) -> list[VMInfo]:
        resp, _ = await self._rpc("ListVMs", pb.ListVMsRequest(), pb.ListVMsResponse)
        try:
            return [wire.info_from_message(vm) for vm in resp.vms]
        except (ValueError, TypeError) as e:
            raise self._garbage("ListVMs", e) from e

    async def list_unowned(self) -> list[VMInfo]:
        resp, _ = await self._rpc(
            "ListVMs", pb.ListVMsRequest(), pb.ListVMsResponse, ((wire.MD_LISTING, "unowned"),)
        )
        try:
            return [wire.info_from_message(vm) for vm in resp.vms]
        except (ValueError, TypeError) as e:
            raise self._garbage("ListVMs", e) from e

    async def observe_all(self, wanted: Collection[str] | None = None) -> dict[str, Observed]:
        resp, _ = await self._rpc(
            "ListVMs", pb.ListVMsRequest(), pb.ListVMsResponse, ((wire.MD_LISTING, "observe"),)
        )
        return {vm.id: wire.observed_from_message(vm) for vm in resp.vms}

    async def power(
        self,
        vm_id: str,
        owner: Owner,
        op: PowerOp,
        graceful_timeout: float = 60.0,
        *,
        known: VMInfo | None = None,
    ) -> TaskRef:
        # provider.v1 carries no look of the caller's: the server reads the VM itself.
        req = pb.PowerRequest(
            id=vm_id,
            op=wire.POWER_OPS[op],  # type: ignore[arg-type]
            graceful_timeout_seconds=max(1, math.ceil(graceful_timeout)),
        )
        resp, _ = await self._rpc("Power", req, pb.TaskResponse, wire.owner_metadata(owner))
        return str(resp.task.id)

    async def reconfigure(self, vm_id: str, owner: Owner, desired: Resources) -> ReconfigureResult:
        req = pb.ReconfigureRequest(id=vm_id, desired_json=wire.reconfigure_json(desired))
        resp, trailers = await self._rpc(
            "Reconfigure", req, pb.TaskResponse, wire.owner_metadata(owner)
        )
        pending = wire.md_value(trailers, wire.MD_PENDING) or ""
        return ReconfigureResult(
            task=resp.task.id or None,
            needs_power_cycle=wire.md_value(trailers, wire.MD_NEEDS_POWER_CYCLE) == "1",
            pending=tuple(p for p in pending.split(",") if p),
        )

    async def delete(self, vm_id: str, owner: Owner) -> TaskRef:
        resp, _ = await self._rpc(
            "Delete", pb.DeleteRequest(id=vm_id), pb.TaskResponse, wire.owner_metadata(owner)
        )
        return str(resp.task.id)

    async def snapshot_create(
        self, vm_id: str, owner: Owner, name: str, *, include_memory: bool, description: str
    ) -> tuple[str, TaskRef]:
        req = pb.SnapshotCreateRequest(
            vm_id=vm_id, name_hint=name, include_memory=include_memory, description=description
        )
        resp, _ = await self._rpc(
            "SnapshotCreate", req, pb.SnapshotCreateResponse, wire.owner_metadata(owner)
        )
        return resp.snapshot_id, resp.task.id

    async def snapshot_delete(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        req = pb.SnapshotDeleteRequest(vm_id=vm_id, snapshot_id=snapshot_id)
        resp, _ = await self._rpc(
            "SnapshotDelete", req, pb.TaskResponse, wire.owner_metadata(owner)
        )
        return str(resp.task.id)

    async def snapshot_revert(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        req = pb.SnapshotRevertRequest(vm_id=vm_id, snapshot_id=snapshot_id)
        resp, _ = await self._rpc(
            "SnapshotRevert", req, pb.TaskResponse, wire.owner_metadata(owner)
        )
        return str(resp.task.id)

    async def clone(
        self, source_id: str, spec: VMSpec, *, linked: bool
    ) -> tuple[str | None, TaskRef]:
        doc = wire.create_document(self.type, spec)
        req = pb.CloneRequest(
            source_vm_id=source_id,
            target_name=spec.name,
            linked=linked,
            class_json=wire._dumps(doc["Class"]),
            placement_json=wire._dumps(doc["Placement"]),
            customize_json=wire._dumps(doc),
        )
        resp, _ = await self._rpc("Clone", req, pb.CloneResponse, wire.owner_metadata(spec.owner))
        return resp.target_vm_id or None, resp.task.id

    async def image_prepare(self, image: ImageSpec) -> PreparedImage:
        req = pb.ImagePrepareRequest(image_json=wire._dumps(wire.image_doc(self.type, image)))
        resp, trailers = await self._rpc("ImagePrepare", req, pb.ImagePrepareResponse)
        ready = wire.md_value(trailers, wire.MD_IMAGE_READY) != "0" and not resp.task.id
        progress = wire.md_value(trailers, wire.MD_IMAGE_PROGRESS)
        return PreparedImage(
            id=resp.prepared_image_id,
            path=resp.prepared_image_path or None,
            ready=ready,
            progress=int(progress) if progress and progress.isdigit() else None,
            message=None if ready else "importing on the remote provider runtime",
        )

    async def task_status(self, task: TaskRef) -> TaskStatus:
        resp, trailers = await self._rpc(
            "TaskStatus", pb.TaskStatusRequest(task=pb.TaskRef(id=task)), pb.TaskStatusResponse
        )
        error: ProviderError | None = None
        if resp.error:
            error = error_from_trailers(resp.error, trailers) or RetryableError(
                f"task {task} failed: {resp.error}"
            )
        progress = wire.md_value(trailers, wire.MD_TASK_PROGRESS)
        return TaskStatus(
            done=resp.done or bool(resp.error),
            error=error,
            progress=int(progress) if progress else None,
            result=wire.md_value(trailers, wire.MD_TASK_RESULT),
        )

    async def close(self) -> None:
        self._closed = True
        if self._channel_key is not None:
            CHANNELS.release(self._channel_key)
            self._channel_key = None
        self.gate.executor.shutdown(wait=False)
