"""Provider servers (provider.v1 over mTLS on 127.0.0.1) in front of the dev stack's
simulators, and remote Provider objects whose spec selects them.

Each server wraps an in-process provider built from a simulator's Provider spec and
credentials; the Provider object that selects it carries ``spec.runtime`` (mode Remote,
the TLS Secret with the controller's client certificate) and the server's address in the
``provider.virtrigaud.io/endpoint`` annotation. A server can be stopped and started again
on the same port (the breaker tests).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixtures_vm import API, VMEnv, provider_spec

from virtrigaud.controllers.common.resolve import provider_config
from virtrigaud.kube.resources import PROVIDERS, SECRETS
from virtrigaud.providers.base import Provider
from virtrigaud.providers.registry import build_provider
from virtrigaud.providers.remote.certs import CertificateAuthority, write_material
from virtrigaud.providers.remote.runtime import ENDPOINT_ANNOTATION
from virtrigaud.providers.remote.server import ProviderServer, ServeOptions, UnlimitedLimiter
from virtrigaud.providers.remote.tls import FileSource, SanAllowList

JSON = dict[str, Any]
CLIENT_SAN = "controller.virtrigaud.test"
TLS_SECRET = "remote-provider-tls"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@dataclass
class Served:
    """One provider server and what it serves."""

    inner: Provider
    options: ServeOptions
    server: ProviderServer | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.options.port = self.port
        self.server = ProviderServer(self.inner, self.options)
        await self.server.start()
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0, close_provider=False)
            self.server = None


@dataclass
class RemoteServers:
    root: Path
    ca: CertificateAuthority = field(default_factory=lambda: CertificateAuthority.create("t"))
    served: dict[str, Served] = field(default_factory=dict)

    async def serve(self, env: VMEnv, provider_type: str) -> Served:
        """A server for the simulator of provider_type, built from the env's Provider."""
        spec, secret_data = provider_spec(provider_type, env.stack)
        obj = {"metadata": {"namespace": "served", "name": provider_type}, "spec": spec}
        secret = {"stringData": secret_data}
        inner = build_provider(provider_config(obj, secret), UnlimitedLimiter())
        tls = write_material(
            self.ca.material(provider_type, ["127.0.0.1"], server=True, client=False),
            self.root / provider_type,
        )
        options = ServeOptions(
            host="127.0.0.1",
            port=0,
            tls=FileSource.directory(tls),
            allowed_sans=SanAllowList.of([CLIENT_SAN]),
        )
        served = Served(inner, options)
        await served.start()
        self.served[provider_type] = served
        return served

    async def tls_secret(self, env: VMEnv) -> None:
        client = self.ca.material("controller", [CLIENT_SAN], server=False, client=True)
        await env.apply(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": TLS_SECRET, "namespace": env.namespace},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": _b64(client.cert),
                    "tls.key": _b64(client.key),
                    "ca.crt": _b64(client.ca),
                },
            },
        )

    async def close(self) -> None:
        for served in self.served.values():
            await served.stop()
            await served.inner.close()


def remote_runtime(tls: JSON | None = None) -> JSON:
    """spec.runtime of a server run here (no image: the controller manages no Deployment)."""
    return {
        "mode": "Remote",
        "service": {"port": 9443, "tls": tls or {"secretRef": {"name": TLS_SECRET}}},
    }


async def remote_provider(
    env: VMEnv,
    name: str,
    provider_type: str,
    address: str,
    *,
    runtime: JSON | None = None,
    health_interval: str = "30s",
) -> JSON:
    """A Provider whose spec selects the provider server at address."""
    spec, _ = provider_spec(provider_type, env.stack)
    spec["credentialSecretRef"] = {"name": f"{provider_type}-credentials"}
    spec["rateLimit"] = {"qps": 500, "burst": 500}
    spec["runtime"] = runtime or remote_runtime()
    spec["healthCheck"] = {"interval": health_interval, "timeout": "5s"}
    return await env.apply(
        PROVIDERS,
        {
            "apiVersion": API,
            "kind": "Provider",
            "metadata": {
                "name": name,
                "namespace": env.namespace,
                "annotations": {ENDPOINT_ANNOTATION: address},
            },
            "spec": spec,
        },
    )
