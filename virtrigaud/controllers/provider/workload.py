"""The Deployment and Service that run a remote Provider's server, built from its spec.

Pure: the Provider object in, the two objects out (or an error naming the field and the
fix). Names and labels follow the Go VirtRigaud: both objects are called
``virtrigaud-provider-<namespace>-<name>`` (the address the shards call), the pods carry
``app.kubernetes.io/name: virtrigaud-provider`` and ``app.kubernetes.io/instance:
<provider>``. The container runs ``virtrigaud provider serve`` (the image's entrypoint is
``virtrigaud``) with the credentials Secret at /etc/virtrigaud/credentials and the TLS
Secret at /etc/virtrigaud/tls (the certificate the shards present too: it names the
Service, and the server admits only client certificates naming it); gRPC listens on
spec.runtime.service.port, the plaintext
health-only gRPC port (what the kubelet's grpc probes call: they cannot speak mTLS) on
8081, metrics on 8080.

Each object carries the hash of what was built (annotation ``virtrigaud.io/spec-hash``):
a pass compares hashes, not objects, so the API server's defaulting never looks like a
difference.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from virtrigaud import API_VERSION
from virtrigaud.providers.remote.runtime import DEFAULT_PORT, REMOTE, service_name

JSON = dict[str, Any]

SPEC_HASH = "virtrigaud.io/spec-hash"
HEALTH_PORT = 8081
METRICS_PORT = 8080
CREDENTIALS_DIR = "/etc/virtrigaud/credentials"
TLS_DIR = "/etc/virtrigaud/tls"
CONTAINER = "provider"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# The Go VirtRigaud's defaults for a provider pod without spec.runtime.resources or
# spec.runtime.securityContext.
DEFAULT_RESOURCES: JSON = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
DEFAULT_SECURITY_CONTEXT: JSON = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
# The serve command's own --grace is 10 s; the kubelet waits this long before SIGKILL.
TERMINATION_GRACE_SECONDS = 30

_DEFAULT_FLAGS = {
    "datastore": "datastore",
    "storagePod": "storage_pod",
    "cluster": "cluster",
    "folder": "folder",
    "resourcePool": "resource_pool",
    "network": "network",
    "node": "node",
    "storagePool": "storage_pool",
}


class WorkloadInvalid(Exception):
    """The Provider's spec cannot make a Deployment and Service; the message names the field
    and the fix."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Workload:
    name: str
    """Name of both the Deployment and the Service."""
    deployment: JSON
    service: JSON

    @property
    def deployment_hash(self) -> str:
        return str(self.deployment["metadata"]["annotations"][SPEC_HASH])

    @property
    def service_hash(self) -> str:
        return str(self.service["metadata"]["annotations"][SPEC_HASH])


def image_of(provider: JSON) -> str | None:
    """spec.runtime.image of a remote Provider: set means the controller runs its server."""
    runtime = (provider.get("spec") or {}).get("runtime") or {}
    if runtime.get("mode") != REMOTE:
        return None
    image = runtime.get("image")
    return str(image) if image else None


def _hash(obj: JSON) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _labels(name: str, provider_type: str) -> JSON:
    return {
        "app.kubernetes.io/name": "virtrigaud-provider",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "provider",
        "app.kubernetes.io/managed-by": "virtrigaud",
        "virtrigaud.io/provider-type": provider_type,
    }


def owner_reference(provider: JSON) -> JSON:
    meta = provider["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "Provider",
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _with_hash(obj: JSON) -> JSON:
    obj["metadata"]["annotations"] = {SPEC_HASH: _hash(obj)}
    return obj


def _serve_args(provider: JSON, port: int, tls_enabled: bool) -> list[str]:
    meta, spec = provider["metadata"], provider["spec"]
    args = [
        "provider",
        "serve",
        "--type",
        str(spec["type"]),
        "--endpoint",
        str(spec["endpoint"]),
        "--listen",
        f"0.0.0.0:{port}",
        "--name",
        f"{meta['namespace']}/{meta['name']}",
        "--credentials-dir",
        CREDENTIALS_DIR,
        "--health-port",
        str(HEALTH_PORT),
        "--metrics-port",
        str(METRICS_PORT),
        "--metrics-address",
        "0.0.0.0",
    ]
    if tls_enabled:
        # One Secret serves both ends, as in the Go VirtRigaud: its certificate must name
        # the Service (the shards check the server's name), so the controller's client
        # certificate names it too, and only a certificate naming it may call.
        service = f"{service_name(meta['namespace'], meta['name'])}.{meta['namespace']}.svc"
        args += ["--tls-dir", TLS_DIR, "--allowed-san", service, "--allowed-san", f"{service}.*"]
    else:
        args.append("--insecure")
    if spec.get("insecureSkipVerify"):
        args.append("--insecure-skip-verify")
    for field, value in sorted((spec.get("defaults") or {}).items()):
        if value and field in _DEFAULT_FLAGS:
            args += ["--default", f"{_DEFAULT_FLAGS[field]}={value}"]
    runtime = spec.get("runtime") or {}
    args += ["--log-level", str(runtime.get("logLevel") or "info")]
    args += ["--log-format", str(runtime.get("logFormat") or "text")]
    return args


def _probe(service: str | None, initial: int, period: int) -> JSON:
    grpc: JSON = {"port": HEALTH_PORT}
    if service:
        grpc["service"] = service
    return {"grpc": grpc, "initialDelaySeconds": initial, "periodSeconds": period}


def build(provider: JSON) -> Workload:
    """The Deployment and Service of a remote Provider with spec.runtime.image set."""
    meta, spec = provider["metadata"], provider["spec"]
    namespace, provider_name = str(meta["namespace"]), str(meta["name"])
    where = f"Provider {namespace}/{provider_name}"
    runtime = spec.get("runtime") or {}
    image = image_of(provider)
    if image is None:
        raise ValueError(f"{where}: build() needs spec.runtime.image")
    name = service_name(namespace, provider_name)
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise WorkloadInvalid(
            f"{where}: its provider server's Service would be named {name!r}, which is not a "
            "DNS label (at most 63 characters: lower-case letters, digits and '-'); a managed "
            "runtime needs a shorter Provider name or namespace without dots, or run the "
            "server yourself (remove spec.runtime.image)",
            "metadata.name",
        )
    service = runtime.get("service") or {}
    port = int(service.get("port") or DEFAULT_PORT)
    tls = service.get("tls")
    if tls is None:
        raise WorkloadInvalid(
            f"{where}: spec.runtime.service.tls is missing, so the provider server would have "
            "no certificate; set tls.secretRef to a Secret with tls.crt, tls.key and ca.crt "
            "(or tls.enabled: false to run plaintext on purpose)",
            "spec.runtime.service.tls",
        )
    tls_enabled = tls.get("enabled") is not False
    tls_secret = (tls.get("secretRef") or {}).get("name")
    if tls_enabled and not tls_secret:
        raise WorkloadInvalid(
            f"{where}: spec.runtime.service.tls.secretRef.name is empty; name the TLS Secret "
            "(tls.crt, tls.key, ca.crt) the provider server mounts",
            "spec.runtime.service.tls.secretRef",
        )
    credentials = (spec.get("credentialSecretRef") or {}).get("name")
    labels = _labels(provider_name, str(spec["type"]))
    selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}

    mounts: list[JSON] = [
        {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[JSON] = [
        {"name": "credentials", "secret": {"secretName": credentials}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if tls_enabled:
        mounts.insert(1, {"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.insert(1, {"name": "tls", "secret": {"secretName": tls_secret}})
    container: JSON = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": runtime.get("imagePullPolicy") or "IfNotPresent",
        "args": _serve_args(provider, port, tls_enabled),
        "ports": [
            {"name": "grpc", "containerPort": port, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": runtime.get("resources") or DEFAULT_RESOURCES,
        "securityContext": runtime.get("securityContext") or DEFAULT_SECURITY_CONTEXT,
        "volumeMounts": mounts,
        # NOT_SERVING during a graceful shutdown takes a pod out of the Service at once.
        "readinessProbe": runtime.get("readinessProbe") or _probe("provider.v1.Provider", 2, 5),
        "livenessProbe": runtime.get("livenessProbe") or _probe(None, 10, 20),
    }
    if runtime.get("env"):
        container["env"] = runtime["env"]
    pod_spec: JSON = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
    }
    for field in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        if runtime.get(field):
            pod_spec[field] = runtime[field]
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(provider)],
    }
    deployment = _with_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": dict(metadata),  # _with_hash adds annotations to each
            "spec": {
                "replicas": int(runtime.get("replicas") or 1),
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }
    )
    svc = _with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": dict(metadata),  # _with_hash adds annotations to each
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP"},
                    {
                        "name": "metrics",
                        "port": METRICS_PORT,
                        "targetPort": "metrics",
                        "protocol": "TCP",
                    },
                ],
            },
        }
    )
    return Workload(name, deployment, svc)
