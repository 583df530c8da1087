"""The Deployment and Service built for a remote Provider with spec.runtime.image
(controllers/provider/workload.py), and how a Deployment's status reads as readiness
(managed.readiness). Pure: objects in, objects out."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import typer

from virtrigaud.cli import app
from virtrigaud.controllers.provider.managed import (
    AVAILABLE,
    FAILED,
    PROGRESSING,
    _service_drifted,
    readiness,
)
from virtrigaud.controllers.provider.workload import (
    SPEC_HASH,
    WorkloadInvalid,
    build,
    image_of,
)

JSON = dict[str, Any]


def provider(**runtime: Any) -> JSON:
    return {
        "apiVersion": "infra.virtrigaud.io/v1beta1",
        "kind": "Provider",
        "metadata": {"name": "pve", "namespace": "hv", "uid": "u-1"},
        "spec": {
            "type": "proxmox",
            "endpoint": "https://pve.example.com:8006",
            "credentialSecretRef": {"name": "pve-creds"},
            "defaults": {"node": "pve1", "storagePool": "local-lvm"},
            "runtime": {
                "mode": "Remote",
                "image": "ghcr.io/example/virtrigaud:1.0",
                "service": {"port": 9555, "tls": {"secretRef": {"name": "pve-tls"}}},
                **runtime,
            },
        },
    }


def container(dep: JSON) -> JSON:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_deployment_runs_provider_serve_with_both_secrets_mounted() -> None:
    w = build(provider())
    assert w.name == "virtrigaud-provider-hv-pve"
    dep, svc = w.deployment, w.service
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "Provider",
            "name": "pve",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    c = container(dep)
    assert c["image"] == "ghcr.io/example/virtrigaud:1.0"
    args = c["args"]
    assert args[:2] == ["provider", "serve"]
    flags = dict(zip(args[2::2], args[3::2], strict=False))
    assert flags["--type"] == "proxmox"
    assert flags["--endpoint"] == "https://pve.example.com:8006"
    assert flags["--listen"] == "0.0.0.0:9555"
    assert flags["--tls-dir"] == "/etc/virtrigaud/tls"
    assert flags["--credentials-dir"] == "/etc/virtrigaud/credentials"
    assert "--insecure" not in args
    # The same certificate serves both ends: only one naming the Service may call.
    sans = [args[i + 1] for i, a in enumerate(args) if a == "--allowed-san"]
    assert sans == ["virtrigaud-provider-hv-pve.hv.svc", "virtrigaud-provider-hv-pve.hv.svc.*"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "pve-tls"
    assert volumes["credentials"]["secret"]["secretName"] == "pve-creds"
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {
        "/etc/virtrigaud/tls",
        "/etc/virtrigaud/credentials",
    }
    # The kubelet's grpc probes call the plaintext health port, not the mTLS one.
    assert c["readinessProbe"]["grpc"] == {"port": 8081, "service": "provider.v1.Provider"}
    assert c["livenessProbe"]["grpc"] == {"port": 8081}
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert svc["spec"]["ports"][0] == {
        "name": "grpc",
        "port": 9555,
        "targetPort": "grpc",
        "protocol": "TCP",
    }


def test_the_args_are_what_provider_serve_accepts() -> None:
    group = typer.main.get_command(app)
    serve = group.commands["provider"].commands["serve"]  # type: ignore[attr-defined]
    args = container(build(provider()).deployment)["args"]
    params = serve.make_context("serve", args[2:]).params
    assert params["type_"] == "proxmox"
    assert len(params["allowed_san"]) == 2
    assert params["health_port"] == 8081
    assert sorted(params["default"]) == ["node=pve1", "storage_pool=local-lvm"]


def test_pod_settings_come_from_the_spec() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    resources = {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    dep = build(
        provider(
            replicas=3,
            resources=resources,
            affinity=affinity,
            nodeSelector={"zone": "a"},
            tolerations=[{"key": "hv", "operator": "Exists"}],
            env=[{"name": "X", "value": "1"}],
        )
    ).deployment
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    assert pod["affinity"] == affinity
    assert pod["nodeSelector"] == {"zone": "a"}
    assert pod["tolerations"] == [{"key": "hv", "operator": "Exists"}]
    assert container(dep)["resources"] == resources
    assert container(dep)["env"] == [{"name": "X", "value": "1"}]


def test_plaintext_on_purpose_mounts_no_tls_and_says_insecure() -> None:
    dep = build(provider(service={"tls": {"enabled": False}})).deployment
    assert "--insecure" in container(dep)["args"]
    assert "--allowed-san" not in container(dep)["args"]
    assert "tls" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}


def test_the_hash_follows_the_spec() -> None:
    one, same = build(provider()), build(provider())
    assert one.deployment_hash == same.deployment_hash
    assert one.deployment["metadata"]["annotations"] == {SPEC_HASH: one.deployment_hash}
    assert build(provider(replicas=2)).deployment_hash != one.deployment_hash
    assert build(provider(image="ghcr.io/example/virtrigaud:2.0")).deployment_hash != (
        one.deployment_hash
    )
    assert build(provider(replicas=2)).service_hash == one.service_hash


def test_without_image_nothing_is_managed() -> None:
    obj = provider()
    del obj["spec"]["runtime"]["image"]
    assert image_of(obj) is None
    assert image_of({"spec": {}}) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p["metadata"].update(name="p" * 60), "metadata.name"),
        (lambda p: p["metadata"].update(name="a.b"), "metadata.name"),
        (lambda p: p["spec"]["runtime"]["service"].pop("tls"), "spec.runtime.service.tls"),
        (
            lambda p: p["spec"]["runtime"]["service"].update(tls={}),
            "spec.runtime.service.tls.secretRef",
        ),
    ],
)
def test_a_spec_that_cannot_run_names_the_field(change: Any, field: str) -> None:
    obj = provider()
    change(obj)
    with pytest.raises(WorkloadInvalid) as err:
        build(obj)
    assert err.value.field == field
    assert "Provider hv/" in str(err.value)


def deployment(want: int = 2, generation: int = 1, **status: Any) -> JSON:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": want},
        "status": status,
    }


def test_readiness_reads_the_deployment_status_like_rollout_status() -> None:
    assert readiness(deployment())[0] == PROGRESSING  # no controller has looked yet
    seen = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2}
    assert readiness(deployment(**seen, availableReplicas=1)) == (
        PROGRESSING,
        "1 of 2 provider pods are available",
    )
    assert readiness(deployment(**seen, availableReplicas=2))[0] == AVAILABLE
    # A newer spec not yet observed is not available, whatever the counts say.
    assert readiness(deployment(generation=2, **seen, availableReplicas=2))[0] == PROGRESSING
    old = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}
    assert readiness(deployment(**old))[1] == "1 old provider pods are still terminating"
    stuck = {
        **seen,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "x" has timed out progressing.',
            }
        ],
    }
    assert readiness(deployment(**stuck))[0] == FAILED


def test_a_service_edited_by_hand_counts_as_drifted() -> None:
    svc = build(provider()).service
    stored = copy.deepcopy(svc)
    stored["spec"]["clusterIP"] = "10.0.0.9"  # what the API server adds is no drift
    assert not _service_drifted(stored, svc)
    stored["spec"]["ports"][0]["port"] = 1234
    assert _service_drifted(stored, svc)


def test_log_level_and_format_reach_the_server() -> None:
    group = typer.main.get_command(app)
    serve = group.commands["provider"].commands["serve"]  # type: ignore[attr-defined]
    p = provider()
    p["spec"]["runtime"]["logLevel"] = "debug"
    p["spec"]["runtime"]["logFormat"] = "json"
    params = serve.make_context("serve", container(build(p).deployment)["args"][2:]).params
    assert (params["log_level"], params["log_format"]) == ("debug", "json")
    defaults = container(build(provider()).deployment)["args"]
    assert serve.make_context("serve", defaults[2:]).params["log_format"] == "text"
