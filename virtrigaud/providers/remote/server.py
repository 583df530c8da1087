"""A provider.v1 server in front of one of our in-process providers.

``virtrigaud provider serve`` runs this near the hypervisor: a gRPC server with the
standard health-checking service, mTLS through the TLS front (``front.py``), a deadline
on every call (the caller's, capped by the method's own), Prometheus metrics, and a
graceful shutdown (health goes NOT_SERVING, new connections are refused, calls in flight
get ``grace`` seconds to finish).

Tokens are paid by the caller: this server counts the hypervisor calls each request made
(``counting_calls``) and reports the number in a trailer, and the caller pays them from
the Provider's shared bucket. The in-process provider here uses an unlimited limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from virtrigaud.providers.base import (
    DONE,
    NotFoundError,
    Owner,
    Provider,
    ProviderError,
    TerminalError,
)
from virtrigaud.providers.calls import counting_calls
from virtrigaud.providers.remote import wire
from virtrigaud.providers.remote.errors import status_of
from virtrigaud.providers.remote.front import ServerTLS, TLSFront
from virtrigaud.providers.remote.metrics import SERVER_RPC_SECONDS, SERVER_RPCS
from virtrigaud.providers.remote.pb import provider_pb2 as pb
from virtrigaud.providers.remote.tls import SanAllowList, TLSSource

log = logging.getLogger(__name__)

# The longest a method may run here, whatever deadline the caller sent (or none).
MAX_SECONDS: dict[str, float] = {
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
    "HardwareUpgrade": 300,
    "ExportDisk": 1800,
    "ImportDisk": 1800,
    "GetDiskInfo": 120,
}


class UnlimitedLimiter:
    """The server's limiter: the caller already paid for every call made here."""

    async def acquire(
        self, bucket_key: str, qps: float, burst: int, cost: int = 1, owner: object = None
    ) -> float:
        return 0.0


def _unimplemented(what: str) -> TerminalError:
    return TerminalError(
        f"{what} is not offered by VirtRigaud for Python's providers", field="provider.v1"
    )


def _task(ref: str | None) -> pb.TaskRef | None:
    return pb.TaskRef(id=ref) if ref else None


@dataclass
class _Reply:
    message: Any
    trailers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Any, wire.Metadata], Awaitable[_Reply]]


class ProviderService:
    """provider.v1.Provider over one of our Provider implementations."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._validated = False
        self.handlers: dict[str, tuple[Handler, type[Any], Any]] = {
            "Validate": (self.validate, pb.ValidateRequest, pb.ValidateResponse),
            "Create": (self.create, pb.CreateRequest, pb.CreateResponse),
            "Delete": (self.delete, pb.DeleteRequest, pb.TaskResponse),
            "Power": (self.power, pb.PowerRequest, pb.TaskResponse),
            "Reconfigure": (self.reconfigure, pb.ReconfigureRequest, pb.TaskResponse),
            "HardwareUpgrade": (self.hardware_upgrade, pb.HardwareUpgradeRequest, pb.TaskResponse),
            "Describe": (self.describe, pb.DescribeRequest, pb.DescribeResponse),
            "TaskStatus": (self.task_status, pb.TaskStatusRequest, pb.TaskStatusResponse),
            "SnapshotCreate": (
                self.snapshot_create,
                pb.SnapshotCreateRequest,
                pb.SnapshotCreateResponse,
            ),
            "SnapshotDelete": (self.snapshot_delete, pb.SnapshotDeleteRequest, pb.TaskResponse),
            "SnapshotRevert": (self.snapshot_revert, pb.SnapshotRevertRequest, pb.TaskResponse),
            "Clone": (self.clone, pb.CloneRequest, pb.CloneResponse),
            "ImagePrepare": (self.image_prepare, pb.ImagePrepareRequest, pb.ImagePrepareResponse),
            "GetCapabilities": (
                self.get_capabilities,
                pb.GetCapabilitiesRequest,
                pb.GetCapabilitiesResponse,
            ),
            "ExportDisk": (self.export_disk, pb.ExportDiskRequest, pb.ExportDiskResponse),
            "ImportDisk": (self.import_disk, pb.ImportDiskRequest, pb.ImportDiskResponse),
            "GetDiskInfo": (self.get_disk_info, pb.GetDiskInfoRequest, pb.GetDiskInfoResponse),
            "ListVMs": (self.list_vms, pb.ListVMsRequest, pb.ListVMsResponse),
        }

    def generic_handler(self) -> grpc.GenericRpcHandler:
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, fn),
                request_deserializer=req_type.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
            for name, (fn, req_type, _resp) in self.handlers.items()
        }
        return grpc.method_handlers_generic_handler(wire.SERVICE, methods)

    def _wrap(
        self, method: str, fn: Handler
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        provider_type = self.provider.type
        cap = MAX_SECONDS[method]

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            metadata = tuple(context.invocation_metadata() or ())
            remaining = context.time_remaining()
            timeout = cap if remaining is None else max(0.0, min(cap, remaining))
            with counting_calls() as count:
                try:
                    reply = await asyncio.wait_for(fn(request, metadata), timeout)
                    context.set_trailing_metadata(
                        (*reply.trailers, (wire.MD_CALLS, str(count.tokens)))
                    )
                    return reply.message
                except ProviderError as e:
                    code, message, trailers = status_of(e)
                    trailers.append((wire.MD_CALLS, str(count.tokens)))
                except TimeoutError:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    message = (
                        f"{method} did not finish within {timeout:.1f} s on the provider server"
                    )
                    trailers = [(wire.MD_CALLS, str(count.tokens))]
                except Exception as e:
                    log.exception("provider server: %s failed unexpectedly", method)
                    code = grpc.StatusCode.INTERNAL
                    message = f"{method} failed on the provider server: {type(e).__name__}: {e}"
                    trailers = [(wire.MD_CALLS, str(count.tokens))]
                finally:
                    SERVER_RPCS.labels(provider_type, method, code.name).inc()
                    SERVER_RPC_SECONDS.labels(provider_type, method).observe(
                        time.perf_counter() - start
                    )
            context.set_trailing_metadata(tuple(trailers))
            await context.abort(code, message)

        return handle

    # --- methods ---------------------------------------------------------------------

    @staticmethod
    def _owner(metadata: wire.Metadata, tags: tuple[str, ...] = ()) -> Owner:
        owner = wire.owner_from(metadata, tags)
        if owner is None:
            raise TerminalError(
                "the request names no owning object: VirtRigaud providers act only for a "
                f"VirtualMachine named in the {wire.MD_OWNER!r} metadata (or an ownership tag)",
                field=wire.MD_OWNER,
            )
        return owner

    async def validate(self, req: pb.ValidateRequest, md: wire.Metadata) -> _Reply:
        try:
            await self.provider.validate()
        except ProviderError as e:
            _code, _msg, trailers = status_of(e)
            return _Reply(pb.ValidateResponse(ok=False, message=e.message), trailers)
        self._validated = True
        return _Reply(
            pb.ValidateResponse(ok=True, message=f"{self.provider.type} endpoint answers")
        )

    async def get_capabilities(self, req: pb.GetCapabilitiesRequest, md: wire.Metadata) -> _Reply:
        # Some capabilities depend on what the endpoint turns out to be (libvirt's driver),
        # so answer from a session that has reached it, when the hypervisor can be reached.
        if not self._validated:
            with contextlib.suppress(ProviderError):
                await self.provider.validate()
                self._validated = True
        caps = self.provider.capabilities()
        return _Reply(
            wire.capabilities_response(caps), [(wire.MD_CAPABILITIES, wire.capabilities_json(caps))]
        )

    async def create(self, req: pb.CreateRequest, md: wire.Metadata) -> _Reply:
        owner = self._owner(md, tuple(req.tags))
        spec = wire.spec_from_create(req, owner)
        if spec.name != req.name:
            raise TerminalError(
                f"name {req.name!r} is not the hypervisor name of {owner.namespace}/{owner.name} "
                f"({spec.name!r})",
                field="name",
            )
        finishing = wire.md_value(md, wire.MD_FINISH)
        if finishing:
            # provider.v1 has no finishing call: the client marks a Create that finishes.
            task = await self.provider.finish_create(finishing, spec)
            return _Reply(pb.CreateResponse(id=finishing, task=_task(task)))
        known_absent = wire.md_value(md, wire.MD_KNOWN_ABSENT) == "1"
        vm_id, task = await self.provider.create(spec, known_absent=known_absent)
        return _Reply(pb.CreateResponse(id=vm_id, task=_task(task)))

    async def delete(self, req: pb.DeleteRequest, md: wire.Metadata) -> _Reply:
        task = await self.provider.delete(req.id, self._owner(md))
        return _Reply(pb.TaskResponse(task=_task(task)))

    async def power(self, req: pb.PowerRequest, md: wire.Metadata) -> _Reply:
        op = wire.POWER_OPS_BY_WIRE.get(req.op)
        if op is None:
            raise TerminalError(f"unsupported power operation {req.op}", field="op")
        timeout = float(req.graceful_timeout_seconds or 60)
        task = await self.provider.power(req.id, self._owner(md), op, timeout)
        return _Reply(pb.TaskResponse(task=_task(task)))

    async def reconfigure(self, req: pb.ReconfigureRequest, md: wire.Metadata) -> _Reply:
        desired = wire.resources_from(req.desired_json)
        result = await self.provider.reconfigure(req.id, self._owner(md), desired)
        trailers = [
            (wire.MD_NEEDS_POWER_CYCLE, "1" if result.needs_power_cycle else "0"),
            (wire.MD_PENDING, ",".join(result.pending)),
        ]
        return _Reply(pb.TaskResponse(task=_task(result.task)), trailers)

    async def hardware_upgrade(self, req: pb.HardwareUpgradeRequest, md: wire.Metadata) -> _Reply:
        raise _unimplemented("HardwareUpgrade")

    async def describe(self, req: pb.DescribeRequest, md: wire.Metadata) -> _Reply:
        if wire.md_value(md, wire.MD_LOOKUP) == "owner":
            found = await self.provider.find(self._owner(md))
            if found is None:
                return _Reply(pb.DescribeResponse(exists=False))
            return _Reply(wire.describe_response(found))
        snapshots = wire.md_value(md, wire.MD_SNAPSHOTS) != "0"
        try:
            info = await self.provider.describe(req.id, snapshots=snapshots)
        except NotFoundError:
            return _Reply(pb.DescribeResponse(exists=False))
        return _Reply(wire.describe_response(info))

    async def task_status(self, req: pb.TaskStatusRequest, md: wire.Metadata) -> _Reply:
        status = await self.provider.task_status(req.task.id or DONE)
        trailers: list[tuple[str, str]] = []
        if status.result:
            trailers.append((wire.MD_TASK_RESULT, status.result))
        if status.progress is not None:
            trailers.append((wire.MD_TASK_PROGRESS, str(status.progress)))
        error = ""
        if status.error is not None:
            error = str(status.error) or status.error.reason
            _code, _msg, error_trailers = status_of(status.error)
            trailers.extend(error_trailers)
        return _Reply(pb.TaskStatusResponse(done=status.done, error=error), trailers)

    async def snapshot_create(self, req: pb.SnapshotCreateRequest, md: wire.Metadata) -> _Reply:
        snap_id, task = await self.provider.snapshot_create(
            req.vm_id,
            self._owner(md),
            req.name_hint,
            include_memory=req.include_memory,
            description=req.description,
        )
        return _Reply(pb.SnapshotCreateResponse(snapshot_id=snap_id, task=_task(task)))

    async def snapshot_delete(self, req: pb.SnapshotDeleteRequest, md: wire.Metadata) -> _Reply:
        task = await self.provider.snapshot_delete(req.vm_id, self._owner(md), req.snapshot_id)
        return _Reply(pb.TaskResponse(task=_task(task)))

    async def snapshot_revert(self, req: pb.SnapshotRevertRequest, md: wire.Metadata) -> _Reply:
        task = await self.provider.snapshot_revert(req.vm_id, self._owner(md), req.snapshot_id)
        return _Reply(pb.TaskResponse(task=_task(task)))

    async def clone(self, req: pb.CloneRequest, md: wire.Metadata) -> _Reply:
        doc = wire._loads(req.customize_json, "customize_json") or {}
        owner = self._owner(md, tuple(doc.get("Tags") or ()))
        if req.class_json:
            doc["Class"] = wire._loads(req.class_json, "class_json")
        if req.placement_json:
            doc["Placement"] = wire._loads(req.placement_json, "placement_json")
        spec = wire.spec_from_document(doc, owner)
        target_id, task = await self.provider.clone(req.source_vm_id, spec, linked=req.linked)
        return _Reply(pb.CloneResponse(target_vm_id=target_id or "", task=_task(task)))

    async def image_prepare(self, req: pb.ImagePrepareRequest, md: wire.Metadata) -> _Reply:
        image = wire.image_from(wire._loads(req.image_json, "image_json"))
        if image is None:
            raise TerminalError("image_json names no template, path or URL", field="image_json")
        prepared = await self.provider.image_prepare(image)
        trailers = [(wire.MD_IMAGE_READY, "1" if prepared.ready else "0")]
        if not prepared.ready:
            trailers.append((wire.MD_IMAGE_PROGRESS, str(prepared.progress or 0)))
        return _Reply(
            pb.ImagePrepareResponse(
                prepared_image_id=prepared.id, prepared_image_path=prepared.path or ""
            ),
            [
                (wire.MD_IMAGE_READY, "1" if prepared.ready else "0"),
                *(
                    [(wire.MD_IMAGE_PROGRESS, str(prepared.progress or 0))]
                    if not prepared.ready
                    else []
                ),
            ],
        )

    async def export_disk(self, req: pb.ExportDiskRequest, md: wire.Metadata) -> _Reply:
        raise _unimplemented("ExportDisk")

    async def import_disk(self, req: pb.ImportDiskRequest, md: wire.Metadata) -> _Reply:
        raise _unimplemented("ImportDisk")

    async def get_disk_info(self, req: pb.GetDiskInfoRequest, md: wire.Metadata) -> _Reply:
        raise _unimplemented("GetDiskInfo")

    async def list_vms(self, req: pb.ListVMsRequest, md: wire.Metadata) -> _Reply:
        listing = wire.md_value(md, wire.MD_LISTING)
        if listing == "observe":
            observed = await self.provider.observe_all()
            vms = [wire.observed_message(vm_id, seen) for vm_id, seen in observed.items()]
        elif listing == "unowned":
            vms = [wire.vm_message(info) for info in await self.provider.list_unowned()]
        else:
            vms = [wire.vm_message(info) for info in await self.provider.list_owned()]
        return _Reply(pb.ListVMsResponse(vms=vms))


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 9443
    tls: TLSSource | None = None
    insecure: bool = False
    allowed_sans: SanAllowList = field(default_factory=SanAllowList)
    tls_min_version: str = "1.3"
    grace: float = 10.0
    health_port: int | None = None
    """A second, plaintext port serving only grpc.health.v1 (the kubelet's grpc probes
    cannot present a client certificate); None: no such port."""


class ProviderServer:
    """One running server: gRPC (+ health) behind the TLS front, or plaintext if told so."""

    def __init__(self, provider: Provider, options: ServeOptions) -> None:
        if options.tls is None and not options.insecure:
            raise ValueError(
                "the provider server has no TLS configuration: pass --tls-dir (a mounted TLS "
                "Secret with tls.crt, tls.key, ca.crt) or the three files; plaintext only with "
                "the explicit --insecure flag"
            )
        self.provider = provider
        self.options = options
        self.service = ProviderService(provider)
        self.health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._health_grpc: grpc.aio.Server | None = None
        self.health_port = 0
        self._front: TLSFront | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.options.host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)]
        )
        server.add_generic_rpc_handlers((self.service.generic_handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.options.insecure:
            self.port = server.add_insecure_port(f"{self.options.host}:{self.options.port}")
            log.warning(
                "provider server: PLAINTEXT on %s (--insecure): anyone who reaches this port "
                "can drive the hypervisor",
                self.address,
            )
        else:
            assert self.options.tls is not None
            tls = ServerTLS(self.options.tls, min_version=self.options.tls_min_version)
            self._tmp = tempfile.TemporaryDirectory(prefix="virtrigaud-provider-")
            os.chmod(self._tmp.name, 0o700)
            sock = os.path.join(self._tmp.name, "grpc.sock")
            server.add_insecure_port(f"unix:{sock}")
            self._front = TLSFront(tls, self.options.allowed_sans, sock)
        await server.start()
        self._grpc = server
        if self._front is not None:
            self.port = await self._front.start(self.options.host, self.options.port)
            if not self.options.allowed_sans.patterns:
                log.warning(
                    "provider server: no --allowed-san: any client certificate from the CA may call"
                )
        if self.options.health_port is not None:
            # Health only, from the same servicer: NOT_SERVING on shutdown shows here too.
            probe = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, probe)
            self.health_port = probe.add_insecure_port(
                f"{self.options.host}:{self.options.health_port}"
            )
            await probe.start()
            self._health_grpc = probe
        for name in ("", wire.SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("provider server: %s provider on %s", self.provider.type, self.address)

    async def stop(self, grace: float | None = None, *, close_provider: bool = True) -> None:
        """Refuse new work, let calls in flight finish for grace seconds, then close."""
        grace = self.options.grace if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self._front is not None:
            await self._front.stop_accepting()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._front is not None:
            await self._front.close_connections()
        if self._health_grpc is not None:
            await self._health_grpc.stop(0)
        if close_provider:
            await self.provider.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def wait(self) -> None:
        assert self._grpc is not None
        await self._grpc.wait_for_termination()
