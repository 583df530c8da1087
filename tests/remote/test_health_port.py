"""The provider server's plaintext health port (``--health-port``), what the kubelet's grpc
probes of a managed provider Deployment call: it answers grpc.health.v1 without a client
certificate, serves nothing else, and turns NOT_SERVING when the server shuts down.

A real ProviderServer with mTLS on 127.0.0.1; the provider behind it is never called.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from uncalled import Uncalled

from virtrigaud.netports import free_ports
from virtrigaud.providers.remote.certs import CertificateAuthority, write_material
from virtrigaud.providers.remote.pb import provider_pb2 as pb
from virtrigaud.providers.remote.server import ProviderServer, ServeOptions
from virtrigaud.providers.remote.tls import FileSource
from virtrigaud.providers.remote.wire import SERVICE


async def check(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def test_health_port_answers_plaintext_and_serves_nothing_else(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("health CA")
    tls = write_material(ca.material("p", ["127.0.0.1"], server=True, client=False), tmp_path)
    (health_port,) = free_ports(1)
    server = ProviderServer(
        Uncalled(),  # type: ignore[arg-type]
        ServeOptions(port=0, tls=FileSource.directory(tls), health_port=health_port),
    )
    await server.start()
    try:
        assert server.health_port == health_port
        for service in ("", SERVICE):
            assert await check(health_port, service) == health_pb2.HealthCheckResponse.SERVING
        # provider.v1 itself is not on the plaintext port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            validate = channel.unary_unary(
                f"/{SERVICE}/Validate",
                request_serializer=pb.ValidateRequest.SerializeToString,
                response_deserializer=pb.ValidateResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await validate(pb.ValidateRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # ... and the gRPC port still wants TLS: plaintext gets no answer.
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        await server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await check(health_port, SERVICE)
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
