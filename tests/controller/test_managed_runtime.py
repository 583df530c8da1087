"""A remote Provider with spec.runtime.image: the Provider controller runs its provider
server as a Deployment behind a Service (controllers/provider/managed.py), against the dev
stack's API server.

The dev stack stores Deployments and Services but runs nothing: no controller-manager
fills a Deployment's status, no kubelet starts its pods. The tests write the Deployment's
status subresource as the Kubernetes Deployment controller would, and the provider server
the Provider's health check calls is a loopback process at the address of the annotation
provider.virtrigaud.io/endpoint (as `virtrigaud dev up --remote-providers` runs them).

- the Deployment and Service carry the spec's image, replicas, resources, affinity, port
  and TLS Secret, owned by the Provider, announced by Events;
- RuntimeReady is False (DeploymentProgressing) until the Deployment's status says its
  pods are available, then True; a spec change updates the Deployment (and RuntimeReady
  waits for the new generation);
- a hand edit of the Deployment and a hand-deleted Service are undone at the next pass;
- deleting the Provider deletes both; removing the image deletes both too;
- a spec the Deployment cannot be built from, or a Service of the same name that someone
  else owns, is a RuntimeReady condition naming the object, the field and the fix;
- a Provider without an image manages nothing and says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_vm import VMEnv, condition
from remote_servers import TLS_SECRET, RemoteServers, remote_provider, remote_runtime

from virtrigaud.controllers.provider.reconciler import ProviderReconciler
from virtrigaud.kube.resources import DEPLOYMENTS, PROVIDERS, SERVICES, Resource
from virtrigaud.leader.usage import USAGE_FIELD
from virtrigaud.shards.reconciler import ReconcileResult

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
IMAGE = "registry.example.com/virtrigaud:1.0"
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["hv-a"]}]}
            ]
        }
    }
}
RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[RemoteServers]:
    made = RemoteServers(tmp_path)
    try:
        yield made
    finally:
        await made.close()


def managed_runtime(**extra: Any) -> JSON:
    runtime = remote_runtime()
    runtime["service"]["port"] = 9555
    return runtime | {
        "image": IMAGE,
        "replicas": 2,
        "resources": RESOURCES,
        "affinity": AFFINITY,
        **extra,
    }


async def read(env: VMEnv, res: Resource, name: str) -> JSON | None:
    return await env.get(res, name)


async def reconcile(rec: ProviderReconciler, env: VMEnv, name: str) -> ReconcileResult:
    obj = await read(env, PROVIDERS, name)
    assert obj is not None
    usage = {"vms": 0, "providers": [], "names": []}
    return await rec.reconcile(f"Provider/{env.namespace}/{name}", {**obj, USAGE_FIELD: usage})


def runtime_ready(obj: JSON | None) -> tuple[str, str, str]:
    cond = condition(obj or {}, "RuntimeReady")
    assert cond is not None, (obj or {}).get("status")
    return cond["status"], cond["reason"], cond["message"]


def container(dep: JSON) -> JSON:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


async def deployment_controller_reports(env: VMEnv, name: str, available: int) -> None:
    """Write the Deployment's status as the Kubernetes Deployment controller does once
    `available` pods of the current generation are ready (the dev stack runs none)."""
    dep = await read(env, DEPLOYMENTS, name)
    assert dep is not None
    want = dep["spec"]["replicas"]
    status = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": want,
        "updatedReplicas": want,
        "readyReplicas": available,
        "availableReplicas": available,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available >= want else "False",
                "reason": "MinimumReplicasAvailable",
            }
        ],
    }
    await env.kube.patch(DEPLOYMENTS, name, env.namespace, {"status": status}, subresource="status")


async def test_the_provider_server_runs_in_a_deployment_it_owns(
    vm_env: VMEnv, servers: RemoteServers
) -> None:
    env, ns = vm_env, vm_env.namespace
    served = await servers.serve(env, "libvirt")
    await servers.tls_secret(env)
    await env.provider("libvirt")  # its credentials Secret
    provider = await remote_provider(
        env, "managed", "libvirt", served.address, runtime=managed_runtime()
    )
    name = f"virtrigaud-provider-{ns}-managed"
    rec = ProviderReconciler(env.ctx)

    result = await reconcile(rec, env, "managed")
    dep, svc = await read(env, DEPLOYMENTS, name), await read(env, SERVICES, name)
    assert dep is not None and svc is not None
    owner = {
        "apiVersion": provider["apiVersion"],
        "kind": "Provider",
        "name": "managed",
        "uid": provider["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert dep["metadata"]["ownerReferences"] == [owner] == svc["metadata"]["ownerReferences"]
    c = container(dep)
    assert c["image"] == IMAGE
    assert c["args"][:4] == ["provider", "serve", "--type", "libvirt"]
    assert "0.0.0.0:9555" in c["args"]
    assert c["resources"] == RESOURCES
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2 and pod["affinity"] == AFFINITY
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == TLS_SECRET
    assert volumes["credentials"]["secret"]["secretName"] == "libvirt-credentials"
    assert {"name": "tls", "mountPath": "/etc/virtrigaud/tls", "readOnly": True} in c[
        "volumeMounts"
    ]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("grpc", 9555),
        ("metrics", 8080),
    ]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    reasons = await env.event_reasons("managed")
    assert "DeploymentCreated" in reasons and "ServiceCreated" in reasons

    # Not ready until the Deployment says so; the server itself (loopback) answers.
    obj = await read(env, PROVIDERS, "managed")
    assert runtime_ready(obj)[:2] == ("False", "DeploymentProgressing")
    runtime = obj["status"]["runtime"]  # type: ignore[index]
    assert runtime["managed"] is True
    assert runtime["deploymentRef"] == {"name": name} == runtime["serviceRef"]
    assert runtime["replicas"] == 2 and runtime["readyReplicas"] == 0
    assert result.requeue_after is not None and result.requeue_after <= 5

    await deployment_controller_reports(env, name, available=1)
    await reconcile(rec, env, "managed")
    status, reason, message = runtime_ready(await read(env, PROVIDERS, "managed"))
    assert (status, reason) == ("False", "DeploymentProgressing")
    assert "1 of 2 provider pods are available" in message

    await deployment_controller_reports(env, name, available=2)
    await reconcile(rec, env, "managed")
    obj = await read(env, PROVIDERS, "managed")
    assert runtime_ready(obj)[:2] == ("True", "DeploymentAvailable")
    assert obj["status"]["runtime"]["availableReplicas"] == 2  # type: ignore[index]
    assert "DeploymentAvailable" in await env.event_reasons("managed")

    # A spec change updates the Deployment in place; readiness waits for its generation.
    await env.kube.patch(
        PROVIDERS,
        "managed",
        ns,
        {"spec": {"runtime": {"replicas": 3, "image": IMAGE.replace("1.0", "1.1")}}},
    )
    await reconcile(rec, env, "managed")
    dep = await read(env, DEPLOYMENTS, name)
    assert dep is not None and dep["spec"]["replicas"] == 3
    assert container(dep)["image"].endswith(":1.1")
    assert dep["metadata"]["generation"] == 2
    assert dep["status"]["availableReplicas"] == 2  # the status is the controller's to write
    assert runtime_ready(await read(env, PROVIDERS, "managed"))[:2] == (
        "False",
        "DeploymentProgressing",
    )
    assert "DeploymentUpdated" in await env.event_reasons("managed")

    # Edited by hand: put back at the next pass.
    await env.kube.patch(DEPLOYMENTS, name, ns, {"spec": {"replicas": 7}})
    await reconcile(rec, env, "managed")
    dep = await read(env, DEPLOYMENTS, name)
    assert dep is not None and dep["spec"]["replicas"] == 3

    # Deleted by hand: created again at the next pass.
    await env.kube.delete(SERVICES, name, ns)
    await reconcile(rec, env, "managed")
    svc = await read(env, SERVICES, name)
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 9555

    # The Provider goes, and both with it (the dev stack has no garbage collector).
    await env.kube.delete(PROVIDERS, "managed", ns)
    await reconcile(rec, env, "managed")
    assert await read(env, PROVIDERS, "managed") is None
    assert await read(env, DEPLOYMENTS, name) is None
    assert await read(env, SERVICES, name) is None


async def test_without_an_image_nothing_is_managed(vm_env: VMEnv, servers: RemoteServers) -> None:
    env, ns = vm_env, vm_env.namespace
    served = await servers.serve(env, "libvirt")
    await servers.tls_secret(env)
    await env.provider("libvirt")
    await remote_provider(env, "elsewhere", "libvirt", served.address, runtime=managed_runtime())
    name = f"virtrigaud-provider-{ns}-elsewhere"
    rec = ProviderReconciler(env.ctx)
    await reconcile(rec, env, "elsewhere")
    assert await read(env, DEPLOYMENTS, name) is not None

    # The image goes: so do the Deployment and the Service; the server runs elsewhere.
    await env.kube.patch(PROVIDERS, "elsewhere", ns, {"spec": {"runtime": {"image": None}}})
    await reconcile(rec, env, "elsewhere")
    assert await read(env, DEPLOYMENTS, name) is None
    assert await read(env, SERVICES, name) is None
    assert "RuntimeRemoved" in await env.event_reasons("elsewhere")
    obj = await read(env, PROVIDERS, "elsewhere")
    assert obj is not None and condition(obj, "RuntimeReady") is None
    runtime = obj["status"]["runtime"]
    assert runtime["managed"] is False and "deploymentRef" not in runtime
    assert "not managed" in runtime["message"]
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]


async def test_what_cannot_run_is_a_condition_naming_the_field(
    vm_env: VMEnv, servers: RemoteServers
) -> None:
    env, ns = vm_env, vm_env.namespace
    served = await servers.serve(env, "libvirt")
    await servers.tls_secret(env)
    await env.provider("libvirt")
    rec = ProviderReconciler(env.ctx)

    # A Service name longer than a DNS label.
    long_name = "p" * (63 - len(f"virtrigaud-provider-{ns}-") + 1)
    await remote_provider(env, long_name, "libvirt", served.address, runtime=managed_runtime())
    await reconcile(rec, env, long_name)
    status, reason, message = runtime_ready(await read(env, PROVIDERS, long_name))
    assert (status, reason) == ("False", "InvalidRuntimeSpec")
    assert f"Provider {ns}/{long_name}" in message and "shorter Provider name" in message
    assert "InvalidRuntimeSpec" in await env.event_reasons(long_name)

    # A Service of that name that someone else owns is left alone.
    name = f"virtrigaud-provider-{ns}-taken"
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"port": 80}]},
    }
    await env.kube.create(SERVICES, theirs)
    await remote_provider(env, "taken", "libvirt", served.address, runtime=managed_runtime())
    await reconcile(rec, env, "taken")
    status, reason, message = runtime_ready(await read(env, PROVIDERS, "taken"))
    assert (status, reason) == ("False", "NotOwned")
    assert f"Service {ns}/{name} exists and is not controlled by this Provider" in message
    svc = await read(env, SERVICES, name)
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 80
