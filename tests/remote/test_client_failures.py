"""A remote provider that is down, slow or answering garbage: the same Retryable kind as an
unreachable hypervisor, no retry of anything that is not idempotent, and a circuit breaker
whose state shows in metrics and in ``circuit()``.

The servers here are real gRPC servers on 127.0.0.1 that misbehave on purpose (plaintext:
these tests are about the caller's handling, mTLS has its own tests).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from virtrigaud.providers.base import (
    Cause,
    DiskSpec,
    Owner,
    PowerOp,
    RetryableError,
    VMSpec,
)
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.registry import ProviderConfig, RemoteRuntime
from virtrigaud.providers.remote import create_remote_provider
from virtrigaud.providers.remote.client import RemoteProvider, RemoteSettings
from virtrigaud.providers.remote.metrics import CIRCUIT_STATE
from virtrigaud.providers.remote.pb import provider_pb2 as pb
from virtrigaud.providers.remote.wire import SERVICE


class Unlimited:
    async def acquire(
        self, bucket_key: str, qps: float, burst: int, cost: int = 1, owner: object = None
    ) -> float:
        return 0.0


class Counting:
    def __init__(self) -> None:
        self.tokens = 0

    async def acquire(
        self, bucket_key: str, qps: float, burst: int, cost: int = 1, owner: object = None
    ) -> float:
        self.tokens += cost
        return 0.0


Behaviour = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class MisbehavingServer:
    """A gRPC server for provider.v1 whose every method runs ``behaviour``."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.calls: dict[str, int] = {}
        self.server = grpc.aio.server()
        self.port = 0

    async def start(self) -> str:
        def handler(method: str) -> grpc.RpcMethodHandler:
            async def run(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                self.calls[method] = self.calls.get(method, 0) + 1
                return await self.behaviour(request, context)

            return grpc.unary_unary_rpc_method_handler(run)

        names = [m.name for m in pb.DESCRIPTOR.services_by_name["Provider"].methods]
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {n: handler(n) for n in names}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0)


def remote(address: str, limiter: Any = None, **settings: Any) -> RemoteProvider:
    config = ProviderConfig(
        type="vsphere",
        key=f"failures/{address}",
        endpoint="(remote)",
        rate=RateLimit(qps=1000, burst=1000),
        remote=RemoteRuntime(address=address, insecure=True),
    )
    made = create_remote_provider(
        config, limiter or Unlimited(), RemoteSettings(retry_backoff=0.01, **settings)
    )
    assert isinstance(made, RemoteProvider)
    return made


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def owner() -> Owner:
    return Owner("failures", "vm", "3f1c0d2e-0000-4000-8000-000000000001")


def spec() -> VMSpec:
    return VMSpec(owner=owner(), cpu=1, memory_mib=512, disks=(DiskSpec("root", 1),))


@pytest.fixture
async def slow() -> AsyncIterator[MisbehavingServer]:
    async def sleep(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(5)
        return b""

    server = MisbehavingServer(sleep)
    await server.start()
    yield server
    await server.stop()


async def test_server_down_is_retryable_like_an_unreachable_hypervisor() -> None:
    address = f"127.0.0.1:{closed_port()}"
    provider = remote(address)
    try:
        with pytest.raises(RetryableError) as err:
            await provider.validate()
        assert address in str(err.value) and "unreachable" in str(err.value)
        assert err.value.reason == "ProviderRetryable"
        assert err.value.cause is Cause.UNREACHABLE
        with pytest.raises(RetryableError):
            await provider.describe("vm-1")
    finally:
        await provider.close()


async def test_slow_server_hits_the_deadline(slow: MisbehavingServer) -> None:
    provider = remote(f"127.0.0.1:{slow.port}", deadlines={"Describe": 0.3, "Power": 0.3})
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RetryableError) as err:
            await provider.describe("vm-1")
        assert "did not answer Describe within 0.3 s" in str(err.value)
        assert err.value.cause is Cause.UNREACHABLE
        # Idempotent: sent again after UNAVAILABLE only, never after a deadline.
        assert slow.calls == {"Describe": 1}
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        await provider.close()


async def test_garbage_answers_are_retryable() -> None:
    async def garbage(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"\xff\xff\xff\xff not protobuf"

    server = MisbehavingServer(garbage)
    address = await server.start()
    provider = remote(address)
    try:
        with pytest.raises(RetryableError) as err:
            await provider.describe("vm-1")
        assert "not a provider.v1 DescribeResponse" in str(err.value)
        # The same health reason as an unreachable hypervisor.
        assert err.value.cause is Cause.UNREACHABLE
    finally:
        await provider.close()
        await server.stop()


async def test_well_formed_but_unreadable_answers_are_retryable() -> None:
    async def bare(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return pb.DescribeResponse(exists=True, power_state="On").SerializeToString()

    server = MisbehavingServer(bare)
    address = await server.start()
    provider = remote(address)
    try:
        with pytest.raises(RetryableError) as err:
            await provider.describe("vm-1")
        assert "cannot read" in str(err.value)
        assert err.value.cause is Cause.UNREACHABLE
    finally:
        await provider.close()
        await server.stop()


async def test_only_idempotent_calls_are_retried() -> None:
    async def unavailable(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        return b""

    server = MisbehavingServer(unavailable)
    address = await server.start()
    limiter = Counting()
    provider = remote(address, limiter, retries=2, failure_threshold=100)
    try:
        with pytest.raises(RetryableError):
            await provider.describe("vm-1")
        assert server.calls["Describe"] == 3  # one call, two retries
        for call in (
            provider.create(spec()),
            provider.power("vm-1", owner(), PowerOp.ON),
            provider.delete("vm-1", owner()),
        ):
            with pytest.raises(RetryableError):
                await call
        assert (server.calls["Create"], server.calls["Power"], server.calls["Delete"]) == (1, 1, 1)
        # Every attempt paid its token in the caller.
        assert limiter.tokens == 3 + 3
    finally:
        await provider.close()
        await server.stop()


def gauge(provider: RemoteProvider) -> float:
    for metric in CIRCUIT_STATE.collect():
        for sample in metric.samples:
            if sample.labels["provider"] == provider.key:
                return float(sample.value)
    raise AssertionError("no circuit gauge")


async def test_circuit_opens_fails_fast_and_closes_again() -> None:
    port = closed_port()
    address = f"127.0.0.1:{port}"
    provider = remote(address, retries=0, failure_threshold=3, reset_timeout=0.5)
    try:
        for _ in range(3):
            with pytest.raises(RetryableError):
                await provider.validate()
        assert provider.circuit().state == "Open" and gauge(provider) == 2
        assert provider.circuit().consecutive_failures == 3
        with pytest.raises(RetryableError) as err:
            await provider.validate()
        assert "circuit is open" in str(err.value) and err.value.retry_after is not None
        assert address in str(err.value) and err.value.cause is Cause.UNREACHABLE

        # The server comes up on that port; after the reset timeout one probe closes it.
        async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return pb.ValidateResponse(ok=True).SerializeToString()

        server = MisbehavingServer(ok)
        server.port = server.server.add_insecure_port(address)
        names = [m.name for m in pb.DESCRIPTOR.services_by_name["Provider"].methods]

        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if "GetCapabilities" in str(context.peer()) or request == b"":
                return b""
            return b""

        server.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        n: grpc.unary_unary_rpc_method_handler(ok if n == "Validate" else answer)
                        for n in names
                    },
                ),
            )
        )
        await server.server.start()
        try:
            await asyncio.sleep(0.6)
            await provider.validate()
            assert provider.circuit().state == "Closed" and gauge(provider) == 0
        finally:
            await server.stop()
    finally:
        await provider.close()
