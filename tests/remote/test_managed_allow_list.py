"""The SAN allow-list a managed provider server runs with (controllers/provider/workload.py
passes `--allowed-san` from the Provider's Service name): the certificate of the Provider's
TLS Secret, which names the Service and serves both ends, may call; a certificate from the
same CA made for another Provider's Service may not.

A real ProviderServer with mTLS on 127.0.0.1, its options parsed from the Deployment's own
arguments by `virtrigaud provider serve`; the client is grpc's, calling the health service
behind the TLS front (the provider behind it is never called).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from uncalled import Uncalled

from virtrigaud.cli import app
from virtrigaud.controllers.provider.workload import build
from virtrigaud.providers.remote.certs import CertificateAuthority, write_material
from virtrigaud.providers.remote.server import ProviderServer, ServeOptions
from virtrigaud.providers.remote.tls import FileSource, SanAllowList, TLSMaterial


def allowed_sans(namespace: str, name: str) -> list[str]:
    provider = {
        "metadata": {"name": name, "namespace": namespace, "uid": "u"},
        "spec": {
            "type": "libvirt",
            "endpoint": "qemu:///system",
            "credentialSecretRef": {"name": "creds"},
            "runtime": {
                "mode": "Remote",
                "image": "example/virtrigaud:1",
                "service": {"tls": {"secretRef": {"name": "tls"}}},
            },
        },
    }
    (container,) = build(provider).deployment["spec"]["template"]["spec"]["containers"]
    serve = typer.main.get_command(app).commands["provider"].commands["serve"]  # type: ignore[attr-defined]
    return list(serve.make_context("serve", container["args"][2:]).params["allowed_san"])


async def healthy(port: int, material: TLSMaterial) -> bool:
    creds = grpc.ssl_channel_credentials(material.ca, material.key, material.cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return False
        return True


async def test_only_the_certificate_naming_the_service_may_call(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("provider CA")
    sans = allowed_sans("hv", "pve")
    # The Secret's certificate: names the Service (and 127.0.0.1, where this test calls).
    mine = ca.material(
        "pve", ["virtrigaud-provider-hv-pve.hv.svc", "127.0.0.1"], server=True, client=True
    )
    other = ca.material(
        "kvm", ["virtrigaud-provider-hv-kvm.hv.svc", "127.0.0.1"], server=True, client=True
    )
    server = ProviderServer(
        Uncalled(),  # type: ignore[arg-type]
        ServeOptions(
            port=0,
            tls=FileSource.directory(write_material(mine, tmp_path / "tls")),
            allowed_sans=SanAllowList.of(sans),
        ),
    )
    await server.start()
    try:
        assert await healthy(server.port, mine)
        assert not await healthy(server.port, other)
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("san", "allowed"),
    [
        ("virtrigaud-provider-hv-pve.hv.svc", True),
        ("virtrigaud-provider-hv-pve.hv.svc.cluster.local", True),
        ("virtrigaud-provider-hv-pve2.hv.svc", False),
        ("virtrigaud-provider-hv-pve.other.svc", False),
    ],
)
def test_the_allow_list_names_this_providers_service(san: str, allowed: bool) -> None:
    assert SanAllowList.of(allowed_sans("hv", "pve")).allows([san]) is allowed
