"""The Helm chart, rendered by Helm itself (helm-python-sdk embeds Helm's Go engine).

Each test renders helm/virtrigaud with some values and checks what a cluster would get:
the controller's arguments parse with the real `virtrigaud run` command, the shard-count
ConfigMap is the one the leader reads, RBAC covers every API call the controller makes,
every value changes the output, and the objects are well-formed: Kubernetes objects are
checked field by field against the official client's models and with
kubernetes-validate against the upstream OpenAPI schemas, the kinds the dev stack's API
server serves are dry-run (or applied) there, and the KubeRay RayCluster is dry-run by
`kubectl apply --dry-run=server` against KubeRay's own CRD served by that API server.
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes.client as k8s
import kubernetes_validate
import pytest
import typer.main
import yaml

from virtrigaud import GROUP
from virtrigaud.cli import app
from virtrigaud.instance import Instance
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import CONFIG_MAPS, NAMESPACES, Resource
from virtrigaud.leader.shard_count import MAX_SHARDS, SHARDS_FIELD, read_shard_count
from virtrigaud.raynode import SHARD_RESOURCE

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "virtrigaud"
RELEASE = "vr"
NAMESPACE = "virtrigaud-system"
FULLNAME = f"{RELEASE}-virtrigaud"
INSTANCE = Instance(NAMESPACE, FULLNAME)
"""What `virtrigaud run --instance FULLNAME` names its Lease, ConfigMap and Redis keys."""
CONFIG_MAP = INSTANCE.config_map
LEASE_NAME = INSTANCE.lease

SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
RAY_CLUSTER = f"{RELEASE}-virtrigaud-ray"
KUBERAY = {"ray": {"mode": "kuberay"}}
EXTERNAL = {"ray": {"mode": "external", "address": "ray-head.ray:6379"}}
MONITORING = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboard": {"enabled": True},
}
KUBERAY_CRD = REPO.parent / "shared" / "third-party" / "kuberay" / "ray.io_rayclusters.yaml"
PROMETHEUS_CRDS = REPO.parent / "shared" / "third-party" / "prometheus-operator"
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes the chart supports and the newest kubernetes-validate knows."""
KUBECTL = (
    shutil.which(
        "kubectl",
        path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    or "kubectl"
)

# Kind -> (apiVersion, model in the official Kubernetes client).
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("v1", "V1ConfigMap"),
    "Secret": ("v1", "V1Secret"),
    "ServiceAccount": ("v1", "V1ServiceAccount"),
    "Service": ("v1", "V1Service"),
    "Deployment": ("apps/v1", "V1Deployment"),
    "PodDisruptionBudget": ("policy/v1", "V1PodDisruptionBudget"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "V1ClusterRole"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "V1ClusterRoleBinding"),
    "Role": ("rbac.authorization.k8s.io/v1", "V1Role"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "V1RoleBinding"),
    "NetworkPolicy": ("networking.k8s.io/v1", "V1NetworkPolicy"),
}


# --- rendering -------------------------------------------------------------------------


@dataclass
class Rendered:
    objects: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
        return found[0]

    @property
    def controller(self) -> dict[str, Any]:
        return self.one("Deployment", FULLNAME)

    @property
    def container(self) -> dict[str, Any]:
        containers = self.controller["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        result: dict[str, Any] = containers[0]
        return result

    @property
    def args(self) -> list[str]:
        return list(self.container["args"])

    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container.get("env", [])}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


GENERATED = re.compile(r'^(  (?:password|url): )"[^"]*"$', re.M)


def render_raw(
    chart: helm.Chart, values: dict[str, Any] | None = None, release: str = RELEASE
) -> dict[str, str]:
    """The chart's files, with the generated Redis password masked so that two renders of
    the same values compare equal (test_bundled_redis_gets_a_generated_password reads it)."""
    files = chart.render(values or {}, name=release, namespace=NAMESPACE, is_install=True)
    redis = "virtrigaud/templates/redis.yaml"
    if redis in files:
        files[redis] = GENERATED.sub(r'\1"Z2VuZXJhdGVk"', files[redis])
    return files


def render(
    chart: helm.Chart, values: dict[str, Any] | None = None, release: str = RELEASE
) -> Rendered:
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(render_raw(chart, values, release).items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                assert isinstance(doc, dict), f"{path}: a manifest must be a mapping"
                objects.append(doc)
    return Rendered(objects, notes)


POD_IP = "10.244.1.17"


def run_params(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse the container's args with the real `virtrigaud run` command, as the pod would."""
    args = rendered.args
    assert args[0] == "run", f"the container must run `virtrigaud run`, got {args[:1]}"
    env = rendered.env()
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pod_name = f"{FULLNAME}-7d9f8c6b5-abcde"
    expanded = [a.replace("$(POD_NAME)", pod_name).replace("$(POD_IP)", POD_IP) for a in args[1:]]
    # Options with an envvar would read it from the test's own environment.
    monkeypatch.delenv("VIRTRIGAUD_REDIS_URL", raising=False)
    monkeypatch.delenv("VIRTRIGAUD_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("VIRTRIGAUD_RAY_NODE_IP", raising=False)
    monkeypatch.delenv("VIRTRIGAUD_INSTANCE", raising=False)
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    ctx = run.make_context("run", expanded)
    params: dict[str, Any] = dict(ctx.params)
    params["_pod_name"] = pod_name
    return params


def with_value(values: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(values)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return out


# --- structural validation against the official models --------------------------------

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "bytes": (str,),  # base64 in a manifest (Secret.data)
}


def model_errors(value: Any, type_name: str, where: str) -> list[str]:
    """Unknown fields and wrong types, by the models of the official Kubernetes client."""
    if type_name == "object":  # IntOrString and free-form fields
        return []
    if type_name.startswith("List["):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [
            e
            for i, v in enumerate(value)
            for e in model_errors(v, type_name[5:-1], f"{where}[{i}]")
        ]
    if type_name.startswith("Dict["):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return [e for k, v in value.items() for e in model_errors(v, inner, f"{where}.{k}")]
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name])
        if type_name in ("int", "float") and isinstance(value, bool):
            ok = False
        return [] if ok else [f"{where}: expected {type_name}, got {value!r}"]
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping, got {type(value).__name__}"]
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    errors: list[str] = []
    for key, item in value.items():
        if key not in by_json:
            errors.append(f"{where}.{key}: no such field in {type_name}")
            continue
        errors.extend(model_errors(item, model.openapi_types[by_json[key]], f"{where}.{key}"))
    return errors


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def name_errors(obj: dict[str, Any]) -> list[str]:
    """Name and label rules the API server enforces (the dev server skips name checks)."""
    meta = obj.get("metadata", {})
    name = str(meta.get("name", ""))
    where = f"{obj.get('kind')} {name}"
    errors = []
    if obj.get("kind") == "Service":
        if not (DNS_LABEL.match(name) and len(name) <= 63):
            errors.append(f"{where}: a Service name must be a DNS-1035 label of at most 63")
    elif not (DNS_SUBDOMAIN.match(name) and len(name) <= 253):
        errors.append(f"{where}: the name must be a DNS-1123 subdomain")
    for key, value in (meta.get("labels") or {}).items():
        if not (isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63):
            errors.append(f"{where}: label {key}={value!r} is not a valid label value")
    return errors


def upstream_schema_errors(obj: dict[str, Any]) -> list[str]:
    """kubernetes-validate: the upstream OpenAPI schema of the kind, strict (no unknown
    fields), for the oldest and the newest Kubernetes the chart is meant for."""
    where = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    errors = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{where} (Kubernetes {version}): {path}: {e.message}")
    return errors


def structural_errors(obj: dict[str, Any]) -> list[str]:
    kind = obj.get("kind", "?")
    name = obj.get("metadata", {}).get("name", "?")
    where = f"{kind} {name}"
    if kind not in KINDS:
        return [f"{where}: kind not covered by the structural check"]
    api_version, model = KINDS[kind]
    if obj.get("apiVersion") != api_version:
        return [f"{where}: apiVersion {obj.get('apiVersion')!r}, expected {api_version!r}"]
    errors = model_errors(obj, model, where) + name_errors(obj) + upstream_schema_errors(obj)
    if not errors:
        # The client's constructors reject missing required fields (container name, ...).
        try:
            k8s.ApiClient()._ApiClient__deserialize(obj, model)  # type: ignore[attr-defined]
        except ValueError as e:
            errors.append(f"{where}: {e}")
    return errors


# --- tests: what gets rendered ---------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [None, {**KUBERAY, "metrics": MONITORING, "networkPolicy": {"enabled": True}}],
    ids=["defaults", "every-switch"],
)
def test_helm_lints_the_chart_clean(values: dict[str, Any] | None) -> None:
    result = helm.lint(CHART_DIR, values, namespace=NAMESPACE, strict=True)
    assert result["errors"] == []
    # Severity 1 is INFO ("icon is recommended"); warnings (2) and errors (3) must not occur.
    assert [m for m in result["messages"] if m["severity"] > 1] == []


def test_default_install_renders_controller_redis_rbac_and_shard_config(
    chart: helm.Chart,
) -> None:
    rendered = render(chart)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered.objects)
    assert kinds == sorted(
        [
            ("ServiceAccount", FULLNAME),
            ("ClusterRole", FULLNAME),
            ("ClusterRoleBinding", FULLNAME),
            ("Role", FULLNAME),
            ("RoleBinding", FULLNAME),
            ("Role", f"{FULLNAME}-secrets"),
            ("RoleBinding", f"{FULLNAME}-secrets"),
            ("ConfigMap", CONFIG_MAP),
            ("Deployment", FULLNAME),
            ("Service", f"{FULLNAME}-metrics"),
            ("PodDisruptionBudget", FULLNAME),
            ("Deployment", f"{FULLNAME}-redis"),
            ("Service", f"{FULLNAME}-redis"),
            ("Secret", f"{FULLNAME}-redis"),
        ]
    )
    assert rendered.controller["spec"]["replicas"] == 2
    assert rendered.container["image"] == f"virtrigaud/virtrigaud:{chart.metadata['appVersion']}"


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"shards": 5},
        {"redis": {"url": "redis://redis.example:6379/2"}},
        {"redis": {"urlSecret": {"name": "redis-creds"}}},
        EXTERNAL,
        {"ray": {"mode": "external", "address": "ray://ray-head.ray:10001"}},
        KUBERAY,
        {**KUBERAY, "shards": 37, "redis": {"url": "redis://redis.example:6380/2"}},
        {"metrics": {"serviceMonitor": {"enabled": True}}},
        {"controller": {"replicas": 1}},
        {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "infra", "operator": "Exists"}]}
                        ]
                    }
                }
            },
        },
    ],
    ids=[
        "defaults",
        "shards5",
        "redis-url",
        "redis-secret",
        "ray-external",
        "ray-client",
        "kuberay",
        "kuberay-37",
        "monitor",
        "one",
        "placement",
    ],
)
def test_every_object_matches_the_kubernetes_schema(
    chart: helm.Chart, values: dict[str, Any]
) -> None:
    rendered = render(chart, values)
    errors = [
        e
        for o in rendered.objects
        if o["kind"] not in ("ServiceMonitor", "RayCluster")
        for e in structural_errors(o)
    ]
    assert errors == []
    for deployment in rendered.of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]


def test_names_stay_valid_with_the_longest_release_name(chart: helm.Chart) -> None:
    release = "a" * 53  # Helm's limit for release names
    rendered = render(chart, {"metrics": {"serviceMonitor": {"enabled": True}}}, release)
    assert [e for o in rendered.objects for e in name_errors(o)] == []
    names = {o["metadata"]["name"] for o in rendered.objects if o["kind"] == "Service"}
    assert len(names) == 2  # truncation kept the metrics and Redis Services apart


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        (
            {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "s"},
             "spec": {"ports": [{"port": 80, "targetport": "x"}]}},
            "spec.ports[0].targetport: no such field",
        ),
        (
            {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "s"},
             "spec": {"ports": [{"port": "80"}]}},
            "spec.ports[0].port: expected int",
        ),
        (
            {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "d"},
             "spec": {"selector": {}, "template": {"spec": {"containers": [{"image": "x"}]}}}},
            "name",
        ),
        (
            {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "m" * 64}},
            "DNS-1035",
        ),
        (
            {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "Bad_Name"}},
            "DNS-1123",
        ),
        (
            {"kind": "PodDisruptionBudget", "apiVersion": "policy/v1beta1",
             "metadata": {"name": "p"}},
            "apiVersion",
        ),
        (
            {"kind": "PodDisruptionBudget", "apiVersion": "policy/v1", "metadata": {"name": "p"},
             "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}},
                      "unhealthyPodEvictionPolicy": 3}},
            "unhealthyPodEvictionPolicy: 3 is not of type",
        ),
    ],
)  # fmt: skip
def test_structural_check_rejects_malformed_objects(obj: dict[str, Any], problem: str) -> None:
    errors = structural_errors(obj)
    assert errors, "a malformed object passed the structural check"
    assert any(problem in e for e in errors), errors


# --- tests: the controller's command line ----------------------------------------------


def test_controller_args_parse_with_the_real_run_command(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "controller": {
            "workersPerShard": 6,
            "leaderElection": {"leaseDuration": 20, "renewDeadline": 12.5, "retryPeriod": 3},
            "logLevel": "debug",
            "extraArgs": ["--resync-period=600"],
        },
        "metrics": {"port": 9091},
    }
    rendered = render(chart, values)
    params = run_params(rendered, monkeypatch)
    assert params["identity"] == params["_pod_name"]  # each pod campaigns as itself
    assert params["namespace"] == NAMESPACE  # Lease and ConfigMap live with the release
    assert params["instance_name"] == FULLNAME  # and are named after it
    assert not params["watch_namespace"]  # every namespace
    assert params["workers_per_shard"] == 6
    assert (params["lease_duration"], params["renew_deadline"], params["retry_period"]) == (
        20.0,
        12.5,
        3.0,
    )
    assert params["log_level"] == "debug"
    assert params["resync_period"] == 600.0
    assert params["metrics_port"] == 9091
    assert params["kubeconfig"] is None  # in-cluster config from the service account
    ports = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}
    assert ports == {"metrics": 9091}
    service = rendered.one("Service", f"{FULLNAME}-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9091, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= (
        rendered.controller["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "controller"
    assert rendered.controller["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME


def test_two_releases_share_no_lease_configmap_redis_key_or_binding(chart: helm.Chart) -> None:
    names = []
    for release in ("a", "b"):
        rendered = render(chart, release=release)
        deployment = rendered.one("Deployment", f"{release}-virtrigaud")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        (name,) = [a.split("=", 1)[1] for a in args if a.startswith("--instance=")]
        instance = Instance(NAMESPACE, name)
        rules = [r for role in rendered.of_kind("Role") for r in role["rules"]]
        lease_names = {
            n for r in rules if "leases" in r["resources"] for n in r.get("resourceNames", [])
        }
        assert lease_names == {instance.lease}
        assert rendered.of_kind("ConfigMap")[0]["metadata"]["name"] == instance.config_map
        names.append(
            {
                instance.lease,
                instance.config_map,
                instance.redis.ratelimit,
                instance.redis.fenced,
                instance.redis.audit,
                *(o["metadata"]["name"] for o in rendered.of_kind("ClusterRoleBinding")),
            }
        )
    assert names[0].isdisjoint(names[1])


def test_watch_namespaces_narrow_the_watch_and_the_rbac(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, {"watchNamespaces": ["tenant-a", "tenant-b"]})
    assert list(run_params(rendered, monkeypatch)["watch_namespace"]) == ["tenant-a", "tenant-b"]
    cluster = rendered.one("ClusterRole", FULLNAME)["rules"]
    assert [r["resources"] for r in cluster] == [["namespaces"]]
    for namespace in ("tenant-a", "tenant-b"):
        rules = [r for role in roles_in(rendered, namespace) for r in role["rules"]]
        assert allows(rules, GROUP, "virtualmachines", "watch")
        assert allows(rules, GROUP, "virtualmachines/status", "update", "web")
        assert allows(rules, "", "events", "create")
        assert allows(rules, "", "secrets", "get", "creds")  # secrets follow the watch
    assert roles_in(rendered, "default") == []
    assert not any(
        allows(role["rules"], "", "secrets", "get", "x") for role in roles_in(rendered, NAMESPACE)
    )


def test_every_ray_process_gets_the_ray_environment(chart: helm.Chart) -> None:
    from virtrigaud.dev.rayhead import RAY_ENV

    env = render(chart).env()
    assert {k: env[k].get("value") for k in RAY_ENV} == RAY_ENV


def test_ray_address_and_node_follow_the_mode(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    from virtrigaud.ray_connect import mode_for

    def connection(values: dict[str, Any]) -> tuple[str | None, str | None, str]:
        params = run_params(render(chart, values), monkeypatch)
        address, node_ip = params["ray_address"], params["ray_node_ip"]
        return address, node_ip, mode_for(address, node_ip)

    assert connection({}) == (None, None, "embedded")
    assert connection(EXTERNAL) == ("ray-head.ray:6379", POD_IP, "node")
    client = {"ray": {"mode": "external", "address": "ray://ray-head.ray:10001"}}
    assert connection(client) == ("ray://ray-head.ray:10001", None, "client")
    head = f"{RAY_CLUSTER}-head-svc.{NAMESPACE}.svc:6379"
    assert connection(KUBERAY) == (head, POD_IP, "node")
    env = render(chart, KUBERAY).env()
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "POD_IP" not in render(chart).env()


def test_shard_memory_is_reserved_only_on_a_ray_cluster(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = with_value(KUBERAY, ("ray", "shardMemoryMB"), 700)
    assert run_params(render(chart, values), monkeypatch)["shard_memory_mb"] == 700
    # Embedded: the pod's limit bounds the private Ray; nothing is reserved (run.py).
    assert not any(a.startswith("--shard-memory-mb") for a in render(chart).args)


def test_bundled_redis_is_the_default_bucket_store(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart)
    service = rendered.one("Service", f"{FULLNAME}-redis")
    redis = rendered.one("Deployment", f"{FULLNAME}-redis")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "redis"
    assert run_params(rendered, monkeypatch)["redis_url"] is None  # no password in the args
    ref = rendered.env()["VIRTRIGAUD_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{FULLNAME}-redis", "key": "url"}


def test_bundled_redis_gets_a_generated_password(chart: helm.Chart) -> None:
    import base64

    import redis.asyncio as aioredis

    passwords = []
    for _ in range(2):
        files = chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
        docs = list(yaml.safe_load_all(files["virtrigaud/templates/redis.yaml"]))
        (secret,) = [d for d in docs if d["kind"] == "Secret"]
        (redis,) = [d for d in docs if d["kind"] == "Deployment"]
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        password = data["password"]
        assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
        assert data["url"] == f"redis://:{password}@{FULLNAME}-redis:6379/0"
        # The client the rate limiter and the fences build from that URL sends it.
        kwargs = aioredis.Redis.from_url(data["url"]).connection_pool.connection_kwargs
        assert (kwargs["password"], kwargs["host"]) == (password, f"{FULLNAME}-redis")
        # The controller reads the URL (tests: test_bundled_redis_is_the_default_bucket_store),
        # Redis requires the password, and its probe authenticates.
        (container,) = redis["spec"]["template"]["spec"]["containers"]
        assert container["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        ref = {"name": secret["metadata"]["name"], "key": "password"}
        assert env == {"REDIS_PASSWORD": ref, "REDISCLI_AUTH": ref}
        passwords.append(password)
    assert passwords[0] != passwords[1]  # generated, not a default every install shares


def test_external_redis_url_replaces_the_bundled_redis(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, {"redis": {"url": "redis://redis.example:6379/2"}})
    assert run_params(rendered, monkeypatch)["redis_url"] == "redis://redis.example:6379/2"
    assert not [o for o in rendered.objects if o["metadata"]["name"] == f"{FULLNAME}-redis"]


def test_redis_url_from_a_secret_stays_out_of_the_args(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, {"redis": {"urlSecret": {"name": "redis-creds", "key": "uri"}}})
    assert not any(a.startswith("--redis-url") for a in rendered.args)
    ref = rendered.env()["VIRTRIGAUD_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "redis-creds", "key": "uri"}
    assert not [o for o in rendered.objects if o["metadata"]["name"] == f"{FULLNAME}-redis"]
    # The variable is the one `--redis-url` reads.
    monkeypatch.setenv("VIRTRIGAUD_REDIS_URL", "redis://:pw@redis.example:6379/0")
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    assert run.make_context("run", []).params["redis_url"] == "redis://:pw@redis.example:6379/0"


def test_without_any_redis_the_buckets_stay_in_ray(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, {"redis": {"bundled": {"enabled": False}}})
    assert run_params(rendered, monkeypatch)["redis_url"] is None
    assert "VIRTRIGAUD_REDIS_URL" not in rendered.env()
    assert not [o for o in rendered.objects if o["metadata"]["name"] == f"{FULLNAME}-redis"]


# --- tests: the shard count ------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3, 5, MAX_SHARDS])
def test_configmap_carries_the_shard_count_the_leader_reads(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, shards: int
) -> None:
    rendered = render(chart, {"shards": shards})
    cm = rendered.one("ConfigMap", CONFIG_MAP)
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["data"] == {SHARDS_FIELD: str(shards)}
    # The leader looks for it in the namespace it is told.
    assert run_params(rendered, monkeypatch)["namespace"] == NAMESPACE


def test_changing_the_shard_count_does_not_restart_the_controller(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count travels only through the ConfigMap: the pod template stays the same, so
    `helm upgrade --set shards=N` resizes the shards live instead of rolling the pods
    (which, with a private Ray per pod, would restart every shard)."""
    three, five = render(chart, {"shards": 3}), render(chart, {"shards": 5})
    assert three.controller == five.controller
    assert run_params(five, monkeypatch)["shards"] is None
    assert three.one("ConfigMap", CONFIG_MAP) != five.one("ConfigMap", CONFIG_MAP)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"shards": 0}, "/shards"),
        ({"shards": MAX_SHARDS + 1}, "/shards"),
        ({"shards": "five"}, "/shards"),
        ({"watchNamespaces": ["Tenant_A"]}, "/watchNamespaces/0"),
        ({"watchNamespaces": "tenant-a"}, "/watchNamespaces"),
        ({"rbac": {"secretNamespaces": ["a", "a"]}}, "/rbac/secretNamespaces"),
        ({"rbac": {"everything": True}}, "everything"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"imagePullSecrets": [{"secret": "x"}]}, "/imagePullSecrets/0"),
        ({"serviceAccount": {"create": "yes"}}, "/serviceAccount/create"),
        ({"podAnnotations": {"a": 1}}, "/podAnnotations/a"),
        ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
        ({"controller": {"leaderElection": {"leaseDuration": "15s"}}}, "leaseDuration"),
        ({"controller": {"logLevel": "verbose"}}, "logLevel"),
        ({"redis": {"url": "redis.example:6379"}}, "/redis/url"),
        ({"ray": {"mode": "cluster"}}, "/ray/mode"),
        ({"ray": {"mode": "external"}}, "address"),
        ({"ray": {"mode": "external", "address": "ray-head"}}, "/ray/address"),
        ({"ray": {"mode": "external", "address": "http://head:8265"}}, "/ray/address"),
        ({"ray": {"mode": "embedded", "address": "head:6379"}}, "/ray/address"),
        ({"ray": {"mode": "kuberay", "shardsPerWorker": 0}}, "/ray/shardsPerWorker"),
        ({"metrics": {"port": 0}}, "/metrics/port"),
    ],
)
def test_values_the_controller_would_refuse_fail_at_install(
    chart: helm.Chart, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        render_raw(chart, values)
    assert where in str(err.value)


@pytest.mark.parametrize(
    "address", ["ray-head.ray:6379", "10.0.0.5:6379", "[fd00::5]:6379", "ray://ray-head:10001"]
)
def test_every_address_the_controller_accepts_installs(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    from virtrigaud.ray_connect import mode_for

    rendered = render(chart, {"ray": {"mode": "external", "address": address}})
    params = run_params(rendered, monkeypatch)
    assert params["ray_address"] == address
    assert mode_for(address, params["ray_node_ip"]) in ("node", "client")


def test_kuberay_without_a_redis_address_fails_with_the_fix(chart: helm.Chart) -> None:
    for values in (
        {**KUBERAY, "redis": {"bundled": {"enabled": False}}},
        {**KUBERAY, "redis": {"urlSecret": {"name": "redis-creds"}}},
        {**KUBERAY, "redis": {"url": "unix:///run/redis.sock"}},
    ):
        with pytest.raises(helm.HelmError) as err:
            render_raw(chart, values)
        assert "GCS fault tolerance" in str(err.value) and "redis.url" in str(err.value)


# --- tests: RBAC -----------------------------------------------------------------------

# Every API call the controller makes, as (scope, apiGroup, resource, verb, name). Scope
# is "cluster" (any namespace), "own" (the release namespace) or "secrets" (the namespaces
# of rbac.secretNamespaces). tests/controller/test_chart_rbac.py proves the list by running
# the controller against an API server that enforces the rendered rules.
ROUTED = [
    "virtualmachines",
    "providers",
    "vmclasses",
    "vmimages",
    "vmnetworkattachments",
    "vmsnapshots",
    "vmclones",
    "vmmigrations",
    "vmsets",
    "vmplacementpolicies",
]
CONTROLLER_CALLS = [
    # leader/coordinator.py: an informer (list + watch) per routed kind, all namespaces.
    *(("cluster", GROUP, kind, verb, "") for kind in ROUTED for verb in ("list", "watch")),
    # controllers/virtualmachine/reconciler.py, controllers/common/objects.py: read the VM,
    # its finalizer (patch), its status (PUT).
    ("cluster", GROUP, "virtualmachines", "get", "web"),
    ("cluster", GROUP, "virtualmachines", "patch", "web"),
    ("cluster", GROUP, "virtualmachines/status", "update", "web"),
    # controllers/vmset, vmsnapshot, vmclone: read the object (and a VM its revert names),
    # finalizers (patch), status (PUT).
    *(("cluster", GROUP, kind, "get", "x") for kind in ("vmsnapshots", "vmsets", "vmclones")),
    *(("cluster", GROUP, kind, "patch", "x") for kind in ("vmsnapshots", "vmsets")),
    *(
        ("cluster", GROUP, f"{kind}/status", "update", "x")
        for kind in ("vmsnapshots", "vmsets", "vmclones")
    ),
    # controllers/provider, vmclass, vmimage, vmnetworkattachment: status (PUT); a
    # Provider's finalizer (patch).
    ("cluster", GROUP, "providers", "patch", "x"),
    *(
        ("cluster", GROUP, f"{kind}/status", "update", "x")
        for kind in ("providers", "vmclasses", "vmimages", "vmnetworkattachments")
    ),
    # controllers/vmset/reconciler.py (its VMs), controllers/vmclone/reconciler.py (the
    # target VM), controllers/vmsnapshot/scheduled.py and virtualmachine/delete.py (the
    # VMSnapshots of a schedule, of a deleted VM).
    *(
        ("cluster", GROUP, kind, verb, "" if verb == "create" else "x")
        for kind in ("virtualmachines", "vmsnapshots")
        for verb in ("create", "delete")
    ),
    # controllers/provider/adoption.py: a VMClass per shape of the VMs a Provider adopts.
    ("cluster", GROUP, "vmclasses", "create", ""),
    # controllers/common/resolve.py, controllers/virtualmachine/spec.py: what a VM names.
    ("cluster", GROUP, "providers", "get", "p"),
    ("cluster", GROUP, "vmclasses", "get", "c"),
    ("cluster", GROUP, "vmimages", "get", "i"),
    ("cluster", GROUP, "vmnetworkattachments", "get", "n"),
    # controllers/provider/managed.py: a managed remote Provider's Deployment and Service.
    *(
        ("cluster", group, resource, verb, "" if verb == "create" else "x")
        for group, resource in (("apps", "deployments"), ("", "services"))
        for verb in ("get", "create", "update", "delete")
    ),
    # kube/events.py: Events next to the object, a repeat counted by patch.
    ("cluster", "", "events", "create", ""),
    ("cluster", "", "events", "patch", "e"),
    # leader/shard_count.py: ensure_namespace of its own namespace.
    ("cluster", "", "namespaces", "get", NAMESPACE),
    # leader/election.py: the Lease.
    ("own", "coordination.k8s.io", "leases", "get", LEASE_NAME),
    ("own", "coordination.k8s.io", "leases", "create", ""),
    ("own", "coordination.k8s.io", "leases", "update", LEASE_NAME),
    # leader/shard_count.py: the shard count the chart installs.
    ("own", "", "configmaps", "get", CONFIG_MAP),
    # controllers/common/resolve.py (get); leader/coordinator.py _track_secret (list, watch).
    ("secrets", "", "secrets", "get", "creds"),
    ("secrets", "", "secrets", "list", ""),
    ("secrets", "", "secrets", "watch", ""),
]


def _resource_matches(pattern: str, resource: str) -> bool:
    if pattern == resource or pattern == "*":
        return True
    if "/" in pattern and "/" in resource:
        p_res, p_sub = pattern.split("/", 1)
        r_res, r_sub = resource.split("/", 1)
        return p_res in ("*", r_res) and p_sub in ("*", r_sub)
    return False


def allows(
    rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str = ""
) -> bool:
    """Upstream RBAC matching: a rule with resourceNames matches only requests naming one
    of them (a create or a list names none)."""
    return any(
        group in rule.get("apiGroups", [])
        and any(_resource_matches(p, resource) for p in rule.get("resources", []))
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        for rule in rules
    )


def roles_in(rendered: Rendered, namespace: str) -> list[dict[str, Any]]:
    return [o for o in rendered.of_kind("Role") if o["metadata"]["namespace"] == namespace]


def grants(rendered: Rendered, scope: str, group: str, resource: str, verb: str, name: str) -> bool:
    cluster = rendered.one("ClusterRole", FULLNAME)["rules"]
    if allows(cluster, group, resource, verb, name):
        return True
    namespace = {"own": NAMESPACE, "secrets": "tenant-a"}.get(scope)
    return namespace is not None and any(
        allows(role["rules"], group, resource, verb, name) for role in roles_in(rendered, namespace)
    )


def test_rbac_covers_every_call_the_controller_makes(chart: helm.Chart) -> None:
    rendered = render(chart, {"rbac": {"secretNamespaces": ["tenant-a", "tenant-b"]}})
    assert [c for c in CONTROLLER_CALLS if not grants(rendered, *c)] == []
    subject = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    bindings = [*rendered.of_kind("ClusterRoleBinding"), *rendered.of_kind("RoleBinding")]
    assert sorted(
        (b["metadata"].get("namespace", ""), b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in bindings
    ) == [
        ("", "ClusterRole", FULLNAME),
        ("tenant-a", "Role", f"{FULLNAME}-secrets"),
        ("tenant-b", "Role", f"{FULLNAME}-secrets"),
        (NAMESPACE, "Role", FULLNAME),
    ]
    assert all(b["subjects"] == [subject] for b in bindings)


def test_rbac_grants_no_more_than_the_controller_needs(chart: helm.Chart) -> None:
    rendered = render(chart, {"rbac": {"secretNamespaces": ["tenant-a"]}})
    cluster = rendered.one("ClusterRole", FULLNAME)["rules"]
    every = [
        r for o in [*rendered.of_kind("ClusterRole"), *rendered.of_kind("Role")] for r in o["rules"]
    ]
    # No wildcard anywhere; no update of a whole object, no deletecollection; only VMs and
    # VMSnapshots are created or deleted (and VMClasses created, by adoption); only the
    # kinds with a controller are written.
    assert all("*" not in r["verbs"] + r["resources"] + r["apiGroups"] for r in every)
    for kind in ROUTED:
        for verb in ("deletecollection", "update"):
            assert not allows(cluster, GROUP, kind, verb, "x"), (kind, verb)
    for kind in set(ROUTED) - {"virtualmachines", "vmsnapshots"}:
        for verb in ("create", "delete"):
            if (kind, verb) == ("vmclasses", "create"):
                continue
            assert not allows(cluster, GROUP, kind, verb, "x"), (kind, verb)
    for kind in ("vmclasses", "vmimages", "vmnetworkattachments", "vmclones"):
        assert not allows(cluster, GROUP, kind, "patch", "x"), kind
    for kind in ("vmmigrations", "vmplacementpolicies"):
        assert not allows(cluster, GROUP, kind, "patch", "x"), kind
    assert not allows(cluster, GROUP, "vmmigrations/status", "update", "x")
    # Secrets: not cluster-wide, and only where asked; the release namespace is not implied.
    assert not allows(cluster, "", "secrets", "get", "creds")
    assert not roles_in(rendered, "tenant-b")
    assert not any(
        allows(role["rules"], "", "secrets", "get", "creds")
        for role in roles_in(rendered, NAMESPACE)
    )
    # Finalizers of the owners whose VMs carry blockOwnerDeletion, for
    # OwnerReferencesPermissionEnforcement; only those, and only update.
    for kind in ROUTED:
        needed = kind in ("vmsets", "vmclones", "providers")
        assert allows(cluster, GROUP, f"{kind}/finalizers", "update", "x") == needed, kind
        assert not allows(cluster, GROUP, f"{kind}/finalizers", "patch", "x"), kind
    # A managed provider server's Deployment and Service: no list, watch or patch, and no
    # other kind of workload.
    for group, resource in (("apps", "deployments"), ("", "services")):
        for verb in ("list", "watch", "patch", "deletecollection"):
            assert not allows(cluster, group, resource, verb, "x"), (resource, verb)
    for group, resource in (("apps", "statefulsets"), ("apps", "daemonsets"), ("", "pods")):
        assert not allows(cluster, group, resource, "create"), resource
    # Namespace, Lease and ConfigMap by name only.
    assert not allows(cluster, "", "namespaces", "get", "kube-system")
    own = roles_in(rendered, NAMESPACE)[0]["rules"]
    assert not allows(own, "coordination.k8s.io", "leases", "update", "someone-elses-lease")
    assert not allows(own, "", "configmaps", "get", "kube-root-ca.crt")
    assert not allows(own, "", "configmaps", "patch", CONFIG_MAP)


def test_secrets_default_to_the_release_namespace_or_all_by_opt_in(chart: helm.Chart) -> None:
    rendered = render(chart)
    assert [r["metadata"]["name"] for r in roles_in(rendered, NAMESPACE)] == [
        FULLNAME,
        f"{FULLNAME}-secrets",
    ]
    rendered = render(chart, {"rbac": {"secretsInAllNamespaces": True}})
    assert [r["metadata"]["name"] for r in rendered.of_kind("Role")] == [FULLNAME]
    cluster = rendered.one("ClusterRole", FULLNAME)["rules"]
    for verb in ("get", "list", "watch"):
        assert allows(cluster, "", "secrets", verb, "creds"), verb


def test_rbac_check_fails_when_a_grant_is_missing() -> None:
    rules = [{"apiGroups": [GROUP], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
    assert allows(rules, GROUP, "virtualmachines", "watch")
    assert not allows(rules, GROUP, "virtualmachines/status", "update")
    status_rule = {"apiGroups": [GROUP], "resources": ["*/status"], "verbs": ["update"]}
    assert allows([status_rule], GROUP, "virtualmachines/status", "update")
    assert not allows([status_rule], GROUP, "virtualmachines", "update")
    named = {
        "apiGroups": [""],
        "resources": ["leases"],
        "verbs": ["create"],
        "resourceNames": ["l"],
    }
    assert not allows([named], "", "leases", "create", "")


# --- tests: optional objects -----------------------------------------------------------


def test_service_monitor_scrapes_the_metrics_service(chart: helm.Chart) -> None:
    assert render(chart).of_kind("ServiceMonitor") == []
    rendered = render(chart, {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s"}}})
    monitor = rendered.one("ServiceMonitor", FULLNAME)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = rendered.one("Service", f"{FULLNAME}-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    # It must not also select the Redis Service.
    redis = rendered.one("Service", f"{FULLNAME}-redis")
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= redis["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    assert "metrics" in port_names


SWITCHES = {
    "networkPolicy.enabled": ("NetworkPolicy", f"{FULLNAME}-controller"),
    "metrics.serviceMonitor.enabled": ("ServiceMonitor", FULLNAME),
    "metrics.podMonitor.enabled": ("PodMonitor", FULLNAME),
    "metrics.prometheusRule.enabled": ("PrometheusRule", FULLNAME),
    "metrics.dashboard.enabled": ("ConfigMap", f"{FULLNAME}-dashboard"),
}


@pytest.mark.parametrize("mode", [{}, KUBERAY], ids=["embedded", "kuberay"])
def test_every_switch_combination_renders_exactly_its_objects(
    chart: helm.Chart, mode: dict[str, Any]
) -> None:
    import itertools

    def by_name(r: Rendered) -> dict[tuple[str, str], dict[str, Any]]:
        return {(o["kind"], o["metadata"]["name"]): o for o in r.objects}

    base = by_name(render(chart, mode))
    for on in itertools.product((False, True), repeat=len(SWITCHES)):
        values = copy.deepcopy(mode)
        for (path, _), enabled in zip(SWITCHES.items(), on, strict=True):
            values = with_value(values, tuple(path.split(".")), enabled)
        rendered = render(chart, values)
        for (path, (kind, name)), enabled in zip(SWITCHES.items(), on, strict=True):
            found = [o for o in rendered.of_kind(kind) if o["metadata"]["name"] == name]
            assert len(found) == int(enabled), (path, enabled)
        objects = by_name(rendered)
        assert [k for k, o in base.items() if objects.get(k) != o] == [], on
    # A switch adds its objects and changes no other: the built-in kinds of the last (all
    # on) render are checked against the Kubernetes schema; custom kinds are dry-run on
    # the API server with their CRDs (test_monitoring_kinds_dry_run_with_their_crds).
    built_in = [o for o in rendered.objects if o["kind"] in KINDS]
    problems = [e for o in built_in for e in structural_errors(o)]
    assert problems == [], problems[:5]


def test_monitoring_objects_carry_their_label_hooks(chart: helm.Chart) -> None:
    hook = {"release": "kube-prometheus-stack"}
    metrics = {k: {**v, "labels": hook} for k, v in MONITORING.items()}
    rendered = render(chart, {"metrics": metrics})
    for kind, name in (
        ("ServiceMonitor", FULLNAME),
        ("PodMonitor", FULLNAME),
        ("PrometheusRule", FULLNAME),
        ("ConfigMap", f"{FULLNAME}-dashboard"),
    ):
        assert rendered.one(kind, name)["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_pod_monitor_scrapes_the_coordinator_and_every_embedded_shard(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, {"shards": 4, "metrics": {"podMonitor": {"enabled": True}}})
    params = run_params(rendered, monkeypatch)
    endpoints = rendered.one("PodMonitor", FULLNAME)["spec"]["podMetricsEndpoints"]
    assert endpoints[0]["port"] == "metrics"
    # Shard i serves on --shard-metrics-port + i (shards/actor.py), bound on the pod address.
    assert [e["portNumber"] for e in endpoints[1:]] == [
        params["shard_metrics_port"] + i for i in range(4)
    ]
    assert params["metrics_address"] == "0.0.0.0"
    selector = rendered.one("PodMonitor", FULLNAME)["spec"]["selector"]["matchLabels"]
    assert selector.items() <= rendered.controller["spec"]["template"]["metadata"]["labels"].items()
    # With a Ray cluster the shards are elsewhere: only the coordinators.
    rendered = render(chart, {**KUBERAY, "metrics": {"podMonitor": {"enabled": True}}})
    assert len(rendered.one("PodMonitor", FULLNAME)["spec"]["podMetricsEndpoints"]) == 1


def test_kuberay_pod_monitor_scrapes_each_worker_pods_shard_slots(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With KubeRay a worker pod serves its shards on shardPort .. + shardsPerWorker - 1
    (--shard-metrics-slots): a second PodMonitor selects the worker pods and lists exactly
    those ports; tests/controller/test_shard_metrics_multinode.py scrapes them for real."""
    values = {
        "ray": {"mode": "kuberay", "shardsPerWorker": 3},
        "shards": 7,
        "metrics": {"shardPort": 9100, "podMonitor": {"enabled": True, "interval": "20s"}},
    }
    rendered = render(chart, values)
    params = run_params(rendered, monkeypatch)
    assert (params["shard_metrics_port"], params["shard_metrics_slots"]) == (9100, 3)
    assert params["metrics_address"] == "0.0.0.0" and params["shard_metrics_address"] is None
    monitor = rendered.one("PodMonitor", f"{FULLNAME}-shards")
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"portNumber": 9100 + slot, "path": "/metrics", "interval": "20s"} for slot in range(3)
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    workers = worker_group(rendered)["template"]["metadata"]["labels"]
    head = ray_cluster(rendered)["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    controller = rendered.controller["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= workers.items()
    assert not selector.items() <= head.items() and not selector.items() <= controller.items()
    # Not the shard count: `virtrigaud shards set` changes it without Helm.
    assert render(chart, {**values, "shards": 2}).one("PodMonitor", f"{FULLNAME}-shards") == (
        monitor
    )
    # Embedded and external modes have no worker pods of the chart's.
    for mode in ({}, EXTERNAL):
        others = render(chart, {**mode, "metrics": {"podMonitor": {"enabled": True}}})
        assert [m["metadata"]["name"] for m in others.of_kind("PodMonitor")] == [FULLNAME]
        assert "--shard-metrics-slots" not in " ".join(others.args)


def test_alerts_use_metrics_the_code_exports(chart: helm.Chart) -> None:
    exported = set()
    for path in (REPO / "virtrigaud").rglob("*.py"):
        exported |= set(re.findall(r'"(virtrigaud_[a-z_]+)"', path.read_text()))
    rendered = render(chart, {"metrics": MONITORING})
    rule = rendered.one("PrometheusRule", FULLNAME)
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert sorted(alerts) == [
        "VirtRigaudLeaderAbsent",
        "VirtRigaudProviderErrors",
        "VirtRigaudQueueWaitHigh",
        "VirtRigaudRateLimitSaturated",
        "VirtRigaudReconcileErrors",
        "VirtRigaudShardDown",
    ]
    dashboard = rendered.one("ConfigMap", f"{FULLNAME}-dashboard")["data"]["virtrigaud.json"]
    exprs = [
        *alerts.values(),
        *(t["expr"] for p in json_loads(dashboard)["panels"] for t in p["targets"]),
    ]
    for expr in exprs:
        used = set(re.findall(r"(virtrigaud_[a-z_]+?)(?:_bucket)?\b", expr))
        assert used and used <= exported, (expr, used - exported)
        assert f'namespace="{NAMESPACE}"' in expr or 'namespace="$namespace"' in expr, expr


def json_loads(text: str) -> Any:
    import json

    return json.loads(text)


def test_network_policies_let_only_the_release_reach_redis_and_ray(chart: helm.Chart) -> None:
    rendered = render(
        chart,
        {
            **KUBERAY,
            "networkPolicy": {"enabled": True},
            "metrics": {"podMonitor": {"enabled": True}},
        },
    )
    pods = {
        "controller": rendered.controller["spec"]["template"]["metadata"]["labels"],
        "ray-head": ray_cluster(rendered)["spec"]["headGroupSpec"]["template"]["metadata"][
            "labels"
        ],
        "ray-worker": worker_group(rendered)["template"]["metadata"]["labels"],
        "redis": rendered.one("Deployment", f"{FULLNAME}-redis")["spec"]["template"]["metadata"][
            "labels"
        ],
        "other release": {
            "app.kubernetes.io/name": "virtrigaud",
            "app.kubernetes.io/instance": "x",
            "app.kubernetes.io/component": "controller",
        },
        "anyone": {"app": "curl"},
    }

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        if not selector.get("matchLabels", {}).items() <= labels.items():
            return False
        return all(
            labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
        )

    def may_reach(target: str, source: str, port: int) -> bool:
        policies = [
            p
            for p in rendered.of_kind("NetworkPolicy")
            if selects(p["spec"]["podSelector"], pods[target])
        ]
        if not policies:
            return True
        for policy in policies:
            for rule in policy["spec"].get("ingress", []):
                ports = rule.get("ports")
                port_ok = ports is None or any(
                    p["port"] <= port <= p.get("endPort", p["port"]) for p in ports
                )
                peers = rule.get("from")
                peer_ok = peers is None or any(
                    "podSelector" in f and selects(f["podSelector"], pods[source]) for f in peers
                )
                if port_ok and peer_ok:
                    return True
        return False

    for source in ("controller", "ray-head", "ray-worker"):
        assert may_reach("redis", source, 6379), source
        assert may_reach("ray-head", source, 6379), source
        assert may_reach("ray-worker", source, 12345), source
        assert may_reach("controller", source, 12345), source  # the controller is a Ray node
    for source in ("other release", "anyone", "redis"):
        assert not may_reach("redis", source, 6379), source
        assert not may_reach("ray-head", source, 6379), source
        assert not may_reach("ray-worker", source, 12345), source
        assert not may_reach("controller", source, 12345), source
        assert may_reach("controller", source, 8080), source  # metrics: anyone by default
        # Every shard port the worker PodMonitor scrapes, and no other port of the range.
        slots = rendered.one("PodMonitor", f"{FULLNAME}-shards")["spec"]["podMetricsEndpoints"]
        ports = [e["portNumber"] for e in slots]
        assert all(may_reach("ray-worker", source, p) for p in ports), source
        assert not may_reach("ray-worker", source, max(ports) + 1), source
    # metricsFrom narrows the scrapes.
    rendered = render(
        chart,
        {
            "networkPolicy": {
                "enabled": True,
                "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
            }
        },
    )
    pods["prometheus"] = {"app": "prometheus"}
    assert may_reach("controller", "prometheus", 8080)
    assert not may_reach("controller", "anyone", 8080)


@pytest.mark.parametrize(("replicas", "has_pdb"), [(1, False), (2, True), (3, True)])
def test_pdb_keeps_a_standby_only_when_there_is_one(
    chart: helm.Chart, replicas: int, has_pdb: bool
) -> None:
    rendered = render(chart, {"controller": {"replicas": replicas}})
    assert rendered.controller["spec"]["replicas"] == replicas
    pdbs = rendered.of_kind("PodDisruptionBudget")
    assert bool(pdbs) == has_pdb
    if pdbs:
        assert pdbs[0]["spec"]["maxUnavailable"] == 1
        assert pdbs[0]["spec"]["selector"] == rendered.controller["spec"]["selector"]


def test_notes_tell_how_to_find_the_leader_shards_and_vms(chart: helm.Chart) -> None:
    notes = render(chart, {"shards": 7}).notes
    assert f"lease {LEASE_NAME}" in notes
    assert f"virtrigaud shards get --namespace {NAMESPACE} --instance {FULLNAME}" in notes
    assert f"virtrigaud shards set <N> --namespace {NAMESPACE} --instance {FULLNAME}" in notes
    assert "7 shard(s)" in notes
    assert "kubectl get vm -A" in notes
    vm_crd = next(c for c in chart.crds if c["filename"].endswith("virtualmachines.yaml"))
    assert "vm" in yaml.safe_load(vm_crd["data"])["spec"]["names"]["shortNames"]


# --- tests: no inert values ------------------------------------------------------------


def leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every value a user can set: scalars, and empty maps/lists (filled in as a whole)."""
    if isinstance(values, dict) and values:
        for key, item in values.items():
            yield from leaf_paths(item, (*prefix, key))
    else:
        yield prefix, values


def mutated(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, float) and path[-1].endswith("Ratio"):
        return value / 2
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return {
            "logLevel": "warning",
            "pullPolicy": "Always",
            "address": "ray-head.other:6379",
            "url": "redis://other:6379/0",
            "interval": "45s",
            "name": "redis-creds",
            "mode": "kuberay",
            "version": "2.61.0",
            "digest": "sha256:" + "a" * 64,
            "imageRegistry": "registry.example.com",
            "tmpSizeLimit": "2Gi",
        }.get(path[-1], value + "x" if value else "x")
    if isinstance(value, list) and path[-1] in ("secretNamespaces", "watchNamespaces"):
        return ["tenant-a"]
    if isinstance(value, list) and path[-1] == "metricsFrom":
        return [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]
    if isinstance(value, list) and path[-1] == "imagePullSecrets":
        return ["regcred"]
    if isinstance(value, list) and path[-1] == "extraEnv":
        return [{"name": "TZ", "value": "UTC"}]
    if isinstance(value, list) and path[-1] == "topologySpreadConstraints":
        return [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]
    if isinstance(value, list):
        return [*value, {"key": "k", "operator": "Exists"} if path[-1] == "tolerations" else "--x"]
    if isinstance(value, dict):
        return {"k": "v"}
    raise AssertionError(f"{'.'.join(path)}: unexpected value type {type(value).__name__}")


# Values that only matter when another one switches them on.
CONTEXTS: list[dict[str, Any]] = [
    {},
    {"metrics": MONITORING, "networkPolicy": {"enabled": True}},
    {"redis": {"urlSecret": {"name": "redis-creds"}}},
    KUBERAY,
    EXTERNAL,
]


def inert_values(
    chart: helm.Chart, defaults: dict[str, Any], contexts: list[dict[str, Any]]
) -> list[str]:
    """Values whose change leaves the rendered chart the same in every context where the
    change is valid (an address is valid only in external mode, for instance)."""
    inert = []
    for path, value in leaf_paths(defaults):
        changed = False
        rejected: list[str] = []
        for context in contexts:
            before = render_raw(chart, context)
            try:
                after = render_raw(chart, with_value(context, path, mutated(value, path)))
            except helm.HelmError as e:
                rejected.append(str(e))
                continue
            if before != after:
                changed = True
                break
        if len(rejected) == len(contexts):
            raise AssertionError(f"{'.'.join(path)}: mutation rejected everywhere: {rejected[0]}")
        if not changed:
            inert.append(".".join(path))
    return inert


def test_every_value_changes_the_rendered_chart(chart: helm.Chart) -> None:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert len(list(leaf_paths(defaults))) > 20
    assert inert_values(chart, defaults, CONTEXTS) == []


def test_inert_value_check_finds_a_value_that_changes_nothing(chart: helm.Chart) -> None:
    # The Secret key is read only when a Secret name is set: on its own it is inert.
    defaults = {"redis": {"urlSecret": {"key": "url"}}, "shards": 3}
    assert inert_values(chart, defaults, [{}]) == ["redis.urlSecret.key"]


def test_the_usual_chart_values(chart: helm.Chart) -> None:
    digest = "sha256:" + "0" * 64
    rendered = render(
        chart,
        {
            **KUBERAY,
            # A parent chart's globals, including keys this chart does not know.
            "global": {"imageRegistry": "registry.example.com/", "imagePullSecrets": ["a"], "x": 1},
            "image": {"digest": digest, "tag": "ignored"},
            "imagePullSecrets": [{"name": "b"}],
            "serviceAccount": {"create": False, "name": "platform-sa"},
            "podAnnotations": {"team": "infra"},
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
            "priorityClassName": "system-cluster-critical",
        },
    )
    assert rendered.of_kind("ServiceAccount") == []
    bindings = [*rendered.of_kind("ClusterRoleBinding"), *rendered.of_kind("RoleBinding")]
    assert {s["name"] for b in bindings for s in b["subjects"]} == {"platform-sa"}
    image = f"registry.example.com/virtrigaud/virtrigaud@{digest}"
    cluster = ray_cluster(rendered)["spec"]
    pods = [
        rendered.controller["spec"]["template"],
        cluster["headGroupSpec"]["template"],
        cluster["workerGroupSpecs"][0]["template"],
    ]
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == "platform-sa"
        assert pod["spec"]["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]
        assert pod["spec"]["containers"][0]["image"] == image
    template = rendered.controller["spec"]["template"]
    assert template["metadata"]["annotations"] == {"team": "infra"}
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    assert rendered.env()["TZ"] == {"name": "TZ", "value": "UTC"}
    # Without serviceAccount.name and create, the pods use the namespace's default.
    rendered = render(chart, {"serviceAccount": {"create": False}})
    assert rendered.controller["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_every_pod_runs_read_only_with_writable_tmp_and_home(chart: helm.Chart) -> None:
    rendered = render(chart, KUBERAY)
    cluster = ray_cluster(rendered)["spec"]
    pods = {
        "controller": rendered.controller["spec"]["template"]["spec"],
        "ray-head": cluster["headGroupSpec"]["template"]["spec"],
        "ray-worker": cluster["workerGroupSpecs"][0]["template"]["spec"],
    }
    for name, pod in pods.items():
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        # The image's HOME (image/build.sh IMAGE_HOME): ssh writes known_hosts there.
        assert {"/tmp", "/home/virtrigaud", "/dev/shm"} <= mounts.keys(), name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert all("emptyDir" in volumes[v] for v in mounts.values()), name
        # What the image test (tests/image/test_image.py) proves Ray needs writable on a
        # read-only root, the chart gives every pod.
        image_test = (REPO / "tests" / "image" / "test_image.py").read_text()
        writable = re.search(r"^WRITABLE = \((.*)\)$", image_test, re.M)
        assert writable is not None
        assert set(re.findall(r'"([^"]+)"', writable.group(1))) <= mounts.keys(), name
    home = re.search(r"^IMAGE_HOME=(\S+)$", (REPO / "image" / "build.sh").read_text(), re.M)
    assert home is not None and home.group(1) == "/home/virtrigaud"


# --- tests: the probes and the image ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(command: list[str]) -> int:
    assert command[0] == "python"
    return subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, timeout=30
    ).returncode


def test_probes_check_the_endpoint_the_controller_serves(chart: helm.Chart) -> None:
    port = _free_port()
    container = render(chart, {"metrics": {"port": port}}).container
    probes = [container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")]
    commands = [p["exec"]["command"] for p in probes]
    assert all(c == commands[0] for c in commands)
    assert _probe(commands[0]) != 0, "the probe passed with nothing listening"
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from virtrigaud.metrics_server import serve_metrics\n"
            "serve_metrics(int(sys.argv[1]))\nprint('up', flush=True)\ntime.sleep(120)",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        assert _probe(commands[0]) == 0
    finally:
        server.kill()
        server.wait()


def test_image_user_and_entrypoint_match_the_chart(chart: helm.Chart) -> None:
    # image/build.sh makes the image (tests/image checks the built config against it).
    build = (REPO / "image" / "build.sh").read_text()
    user = re.search(r"^IMAGE_USER=(\d+)$", build, re.M)
    assert user, "image/build.sh must set a numeric IMAGE_USER"
    psc = chart.values["podSecurityContext"]
    assert (int(user[1]), int(user[1])) == (psc["runAsUser"], psc["runAsGroup"])
    assert (
        "--config.entrypoint /usr/bin/tini --config.entrypoint -- --config.entrypoint virtrigaud"
        in build
    )
    assert "--config.cmd run" in build
    # The chart's args replace the image's Cmd, so they start with the subcommand.
    assert render(chart).args[0] == "run"


def test_metrics_endpoint_binds_a_pod_reachable_address(chart: helm.Chart) -> None:
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    options = {opt for p in run.params for opt in p.opts}
    assert "--metrics-address" in options
    assert "--metrics-address=0.0.0.0" in render(chart).args


def test_ray_loopback_env_only_with_a_private_ray(chart: helm.Chart) -> None:
    def env_names(values: dict[str, Any]) -> set[str]:
        return {e["name"] for e in render(chart, values).container["env"]}

    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in env_names({})
    for values in (EXTERNAL, KUBERAY):
        assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env_names(values)


# --- tests: against the dev stack's API server ----------------------------------------


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(kubeconfig) as client:
        yield client


def _apply_params(dry_run: bool) -> dict[str, str | int | bool]:
    params: dict[str, str | int | bool] = {"fieldManager": "helm-chart-test", "force": True}
    if dry_run:
        params["dryRun"] = "All"
    return params


async def server_apply(
    kube: KubeClient, res: Resource, obj: dict[str, Any], *, dry_run: bool
) -> dict[str, Any]:
    meta = obj["metadata"]
    return await kube.request(
        "PATCH",
        res.object_path(meta["name"], meta.get("namespace")),
        params=_apply_params(dry_run),
        body=obj,
        content_type="application/apply-patch+yaml",
    )


@pytest.fixture
async def release_namespace(kube: KubeClient) -> AsyncIterator[str]:
    name = f"helm-test-{uuid.uuid4().hex[:8]}"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    # A reused stack (VIRTRIGAUD_TEST_STATE_DIR) keeps running: leave nothing behind.
    for res, obj_name, namespace in ((CONFIG_MAPS, CONFIG_MAP, name), (NAMESPACES, name, None)):
        try:
            await kube.delete(res, obj_name, namespace)
        except ApiError as e:
            if not e.not_found:
                raise


async def test_crds_and_served_kinds_dry_run_cleanly(
    chart: helm.Chart, kube: KubeClient, release_namespace: str
) -> None:
    rendered = chart.render({"shards": 5}, name=RELEASE, namespace=release_namespace)
    objects = [
        doc
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    served = {"ConfigMap": CONFIG_MAPS, "ServiceAccount": SERVICE_ACCOUNTS}
    tried = []
    for obj in objects:
        if obj["kind"] in served:
            obj["metadata"].setdefault("namespace", release_namespace)
            result = await server_apply(kube, served[obj["kind"]], obj, dry_run=True)
            assert result["metadata"]["name"] == obj["metadata"]["name"]
            tried.append(obj["kind"])
    assert sorted(tried) == ["ConfigMap", "ServiceAccount"]
    crds = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CRD", False)
    assert len(chart.crds) == 10
    for entry in chart.crds:
        crd = yaml.safe_load(entry["data"])
        result = await server_apply(kube, crds, crd, dry_run=True)
        assert result["spec"]["group"] == GROUP
    # Dry-run stored nothing.
    with pytest.raises(ApiError) as err:
        await kube.get(CONFIG_MAPS, CONFIG_MAP, release_namespace)
    assert err.value.not_found


async def test_server_rejects_a_malformed_configmap(
    kube: KubeClient, release_namespace: str
) -> None:
    """The dry-run above can fail: malformed objects are refused."""
    bad = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": release_namespace},
        "data": {SHARDS_FIELD: 5},
    }
    with pytest.raises(ApiError) as err:
        await server_apply(kube, CONFIG_MAPS, bad, dry_run=True)
    assert ".data.shards: expected string" in str(err.value)
    # And a label value with a space is refused by validation.
    bad = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "sa", "namespace": release_namespace, "labels": {"a": "b c"}},
    }
    with pytest.raises(ApiError) as err:
        await server_apply(kube, SERVICE_ACCOUNTS, bad, dry_run=True)
    assert err.value.status == 422


async def test_leader_reads_the_shard_count_the_chart_installs(
    chart: helm.Chart, kube: KubeClient, release_namespace: str
) -> None:
    rendered = chart.render({"shards": 5}, name=RELEASE, namespace=release_namespace)
    cm = yaml.safe_load(rendered["virtrigaud/templates/configmap.yaml"])
    await server_apply(kube, CONFIG_MAPS, cm, dry_run=False)
    assert await read_shard_count(kube, release_namespace, name=CONFIG_MAP) == 5
    # An upgrade to 8 is what the leader reads next.
    rendered = chart.render({"shards": 8}, name=RELEASE, namespace=release_namespace)
    cm = yaml.safe_load(rendered["virtrigaud/templates/configmap.yaml"])
    await server_apply(kube, CONFIG_MAPS, cm, dry_run=False)
    assert await read_shard_count(kube, release_namespace, name=CONFIG_MAP) == 8


async def upgrade_configmap(
    chart: helm.Chart, kube: KubeClient, kubeconfig: str, namespace: str, how: str, shards: int
) -> None:
    """What `helm upgrade` does to the shard-count ConfigMap. Helm 3 patches by a three-way
    strategic merge (the previous release's manifest, the new one, the live object), the
    algorithm `kubectl apply` runs with its last-applied annotation standing in for the
    release record; Helm 4 may server-side apply as field manager "helm"."""
    rendered = chart.render(
        {"shards": shards, "image": {"tag": f"upgrade-{shards}"}},
        name=RELEASE,
        namespace=namespace,
    )
    manifest = rendered["virtrigaud/templates/configmap.yaml"]
    if how == "three-way":
        await asyncio.to_thread(
            subprocess.run,
            [KUBECTL, "--kubeconfig", kubeconfig, "apply", "-f", "-"],
            input=manifest, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    else:
        cm = yaml.safe_load(manifest)
        await kube.request(
            "PATCH",
            CONFIG_MAPS.object_path(cm["metadata"]["name"], namespace),
            params={"fieldManager": "helm", "force": True},
            body=cm,
            content_type="application/apply-patch+yaml",
        )


@pytest.mark.parametrize("how", ["three-way", "server-side"])
async def test_shards_set_survives_upgrades_until_the_charts_count_changes(
    chart: helm.Chart, kube: KubeClient, kubeconfig: str, release_namespace: str, how: str
) -> None:
    from typer.testing import CliRunner

    async def upgrade(shards: int) -> None:
        await upgrade_configmap(chart, kube, kubeconfig, release_namespace, how, shards)

    async def in_effect() -> int:
        return await read_shard_count(kube, release_namespace, name=CONFIG_MAP)

    async def cli(*args: str) -> str:
        common = ["--kubeconfig", kubeconfig, "--namespace", release_namespace]
        common += ["--instance", FULLNAME]
        # The command runs its own event loop: off this one.
        result = await asyncio.to_thread(CliRunner().invoke, app, ["shards", *args, *common])
        assert result.exit_code == 0, result.output
        return result.output

    await upgrade(3)  # the install
    assert await in_effect() == 3
    assert (await cli("set", "5")).startswith(
        "shards: 5 (virtrigaud shards set, over the installed 3)"
    )
    assert await in_effect() == 5
    await upgrade(3)  # an upgrade that leaves `shards` alone (a new image)
    assert await in_effect() == 5
    assert "shards: 5 (virtrigaud shards set" in await cli("get")
    await upgrade(4)  # the chart's count changes: the newer decision
    assert await in_effect() == 4
    assert "replaced by a later change of the installed count" in await cli("get")
    assert (await cli("set", "6")).startswith(
        "shards: 6 (virtrigaud shards set, over the installed 4)"
    )
    await upgrade(4)
    assert await in_effect() == 6


async def test_an_upgrade_reverts_a_count_written_to_the_charts_own_key(
    chart: helm.Chart, kube: KubeClient, kubeconfig: str, release_namespace: str
) -> None:
    """Why the override has keys of its own: Helm's merge resets the key it renders."""
    from virtrigaud.leader.shard_count import write_shard_count

    await upgrade_configmap(chart, kube, kubeconfig, release_namespace, "three-way", 3)
    await write_shard_count(kube, release_namespace, 5, CONFIG_MAP)
    assert await read_shard_count(kube, release_namespace, name=CONFIG_MAP) == 5
    await upgrade_configmap(chart, kube, kubeconfig, release_namespace, "three-way", 3)
    assert await read_shard_count(kube, release_namespace, name=CONFIG_MAP) == 3


# --- tests: ray.mode kuberay -----------------------------------------------------------


def ray_cluster(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("RayCluster", RAY_CLUSTER)


def worker_group(rendered: Rendered) -> dict[str, Any]:
    groups = ray_cluster(rendered)["spec"]["workerGroupSpecs"]
    assert len(groups) == 1
    group: dict[str, Any] = groups[0]
    return group


def test_only_kuberay_mode_renders_a_ray_cluster(chart: helm.Chart) -> None:
    assert render(chart).of_kind("RayCluster") == []
    assert render(chart, EXTERNAL).of_kind("RayCluster") == []
    cluster = ray_cluster(render(chart, KUBERAY))
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["enableInTreeAutoscaling"] is False


def test_kuberay_head_offers_no_cpus_and_keeps_its_state_in_the_charts_redis(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(chart, KUBERAY)
    spec = ray_cluster(rendered)["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert SHARD_RESOURCE not in head["rayStartParams"].get("resources", "")
    redis_service = rendered.one("Service", f"{FULLNAME}-redis")
    port = redis_service["spec"]["ports"][0]["port"]
    assert spec["gcsFaultToleranceOptions"] == {
        "redisAddress": f"{FULLNAME}-redis:{port}",
        "redisPassword": {
            "valueFrom": {"secretKeyRef": {"name": f"{FULLNAME}-redis", "key": "password"}}
        },
    }
    # The controller reaches the head through the Service KubeRay creates for it.
    assert run_params(rendered, monkeypatch)["ray_address"].startswith(
        f"{ray_cluster(rendered)['metadata']['name']}-head-svc."
    )
    external = render(chart, {**KUBERAY, "redis": {"url": "redis://:pw@redis.example:6380/3"}})
    assert ray_cluster(external)["spec"]["gcsFaultToleranceOptions"] == {
        "redisAddress": "redis.example:6380"
    }


@pytest.mark.parametrize(
    ("shards", "per_worker", "spare"), [(1, 4, 1), (3, 4, 1), (4, 4, 1), (9, 4, 0), (256, 8, 2)]
)
def test_kuberay_workers_follow_the_shard_count(
    chart: helm.Chart, shards: int, per_worker: int, spare: int
) -> None:
    values = {
        "shards": shards,
        "ray": {"mode": "kuberay", "shardsPerWorker": per_worker, "spareWorkers": spare},
    }
    group = worker_group(render(chart, values))
    pods = math.ceil(shards / per_worker) + spare
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (pods, pods, pods)
    # Each pod offers room for shardsPerWorker shards: together at least `shards`, and a
    # lost pod's shards fit on the spares.
    offered = yaml.safe_load(json_unquote(group["rayStartParams"]["resources"]))
    assert offered == {SHARD_RESOURCE: per_worker}
    assert pods * per_worker >= shards
    assert (pods - 1) * per_worker >= shards or spare == 0


def json_unquote(value: str) -> str:
    """rayStartParams values go through a shell: '"{\\"a\\": 1}"' is {"a": 1} there."""
    return str(subprocess.run(["bash", "-c", f"printf %s {value}"], capture_output=True,
                              text=True, check=True).stdout)  # fmt: skip


def test_kuberay_worker_pods_are_sized_from_their_shards(chart: helm.Chart) -> None:
    values = {
        "ray": {
            "mode": "kuberay",
            "shardsPerWorker": 6,
            "shardMemoryMB": 400,
            "worker": {"baseMemoryMB": 800, "cpuPerShardMillis": 250},
        }
    }
    pod = worker_group(render(chart, values))["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "1500m", "memory": f"{6 * 400 + 800}Mi"},
        "limits": {"memory": f"{6 * 400 + 800}Mi"},
    }


def test_kuberay_pods_run_the_project_image_with_the_charts_service_account(
    chart: helm.Chart,
) -> None:
    rendered = render(chart, KUBERAY)
    spec = ray_cluster(rendered)["spec"]
    for pod in (
        spec["headGroupSpec"]["template"]["spec"],
        worker_group(rendered)["template"]["spec"],
    ):
        assert pod["serviceAccountName"] == FULLNAME
        (container,) = pod["containers"]
        assert container["image"] == rendered.container["image"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    # Shards call the API with the worker pod's token.
    assert worker_group(rendered)["template"]["spec"]["automountServiceAccountToken"] is True


def test_kuberay_workers_spread_over_machines_and_drain_one_at_a_time(chart: helm.Chart) -> None:
    rendered = render(chart, KUBERAY)
    pod = worker_group(rendered)["template"]
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    pdb = rendered.one("PodDisruptionBudget", f"{RAY_CLUSTER}-workers")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    head_labels = ray_cluster(rendered)["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= head_labels.items()
    controller_labels = rendered.controller["spec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= controller_labels.items()
    assert render(chart).of_kind("PodDisruptionBudget") == [render(chart).one(
        "PodDisruptionBudget", FULLNAME)]  # fmt: skip


def test_kuberay_resize_changes_only_the_worker_count(chart: helm.Chart) -> None:
    """`helm upgrade --set shards=N` in kuberay mode: KubeRay adds worker pods; the
    controller pods and the head stay as they are (no restart)."""
    small = render(chart, {**KUBERAY, "shards": 4})
    large = render(chart, {**KUBERAY, "shards": 17})
    assert small.controller == large.controller
    assert (
        ray_cluster(small)["spec"]["headGroupSpec"] == ray_cluster(large)["spec"]["headGroupSpec"]
    )
    assert worker_group(small)["template"] == worker_group(large)["template"]
    assert worker_group(small)["replicas"] < worker_group(large)["replicas"]


def test_kuberay_names_stay_valid_with_the_longest_release_name(chart: helm.Chart) -> None:
    release = "a" * 53
    cluster = render(chart, KUBERAY, release).of_kind("RayCluster")[0]
    head_service = f"{cluster['metadata']['name']}-head-svc"
    assert DNS_LABEL.match(head_service) and len(head_service) <= 63, head_service


# --- tests: the RayCluster against KubeRay's own CRD -----------------------------------


def kubectl_dry_run(kubeconfig: str, manifest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, "apply", "--dry-run=server",
         "--validate=strict", "-f", "-"],
        input=manifest, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def kuberay_crd(kubeconfig: str) -> str:
    """KubeRay's RayCluster CRD, served by the dev stack's API server."""
    if not KUBERAY_CRD.exists():
        pytest.skip(
            f"KubeRay's CRD is not here ({KUBERAY_CRD}): ../shared is absent; runs wherever "
            "../shared/third-party sits beside the checkout (as in CI)"
        )
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", str(KUBERAY_CRD)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # `kubectl wait` fails on a CRD whose status has no conditions yet: poll instead.
    established = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + 60
    while True:
        got = subprocess.run(
            [KUBECTL, "--kubeconfig", kubeconfig, "get", "crd/rayclusters.ray.io",
             "-o", f"jsonpath={established}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if got.stdout.strip() == "True":
            return kubeconfig
        assert time.monotonic() < deadline, f"KubeRay's CRD not established: {got.stderr}"
        time.sleep(0.2)


@pytest.mark.parametrize("values", [KUBERAY, {**KUBERAY, "shards": 37}], ids=["3", "37"])
async def test_ray_cluster_is_valid_for_kuberays_crd(
    chart: helm.Chart, kuberay_crd: str, release_namespace: str, values: dict[str, Any]
) -> None:
    rendered = chart.render(values, name=RELEASE, namespace=release_namespace)
    manifest = rendered["virtrigaud/templates/raycluster.yaml"]
    assert "kind: RayCluster" in manifest
    done = kubectl_dry_run(kuberay_crd, manifest)
    assert done.returncode == 0, done.stderr
    assert "created (server dry run)" in done.stdout


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda c: c["spec"]["workerGroupSpecs"][0].pop("groupName"), "groupName"),
        (lambda c: c["spec"]["workerGroupSpecs"][0].update(replicas="four"), "replicas"),
        (lambda c: c["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
         "num-cpus"),
        (lambda c: c["spec"].update(shardsPerWorker=4), "shardsPerWorker"),
    ],
)  # fmt: skip
async def test_kuberays_crd_rejects_a_malformed_ray_cluster(
    chart: helm.Chart, kuberay_crd: str, release_namespace: str, edit: Any, problem: str
) -> None:
    """The dry run above can fail: the served CRD refuses what KubeRay would not take."""
    rendered = chart.render(KUBERAY, name=RELEASE, namespace=release_namespace)
    cluster = yaml.safe_load(rendered["virtrigaud/templates/raycluster.yaml"])
    edit(cluster)
    done = kubectl_dry_run(kuberay_crd, yaml.safe_dump(cluster))
    assert done.returncode != 0, done.stdout
    assert problem in done.stderr, done.stderr


# --- tests: the monitoring kinds against the Prometheus Operator's CRDs ------------------


def apply_crds(kubeconfig: str, paths: list[Path]) -> None:
    for path in paths:
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", str(path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        crd = yaml.safe_load(path.read_text())["metadata"]["name"]
        established = '{.status.conditions[?(@.type=="Established")].status}'
        deadline = time.monotonic() + 60
        while True:
            got = subprocess.run(
                [KUBECTL, "--kubeconfig", kubeconfig, "get", f"crd/{crd}",
                 "-o", f"jsonpath={established}"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if got.stdout.strip() == "True":
                break
            assert time.monotonic() < deadline, f"{crd} not established: {got.stderr}"
            time.sleep(0.2)


@pytest.fixture
def prometheus_crds(kubeconfig: str) -> str:
    """ServiceMonitor, PodMonitor and PrometheusRule CRDs, served by the dev API server."""
    paths = [
        PROMETHEUS_CRDS / f"monitoring.coreos.com_{plural}.yaml"
        for plural in ("servicemonitors", "podmonitors", "prometheusrules")
    ]
    if not all(p.exists() for p in paths):
        pytest.skip(
            f"the Prometheus Operator's CRDs are not here ({PROMETHEUS_CRDS}): ../shared is "
            "absent; runs wherever ../shared/third-party sits beside the checkout (as in CI)"
        )
    apply_crds(kubeconfig, paths)
    return kubeconfig


@pytest.mark.parametrize("mode", [{}, KUBERAY], ids=["embedded", "kuberay"])
async def test_monitoring_kinds_dry_run_with_their_crds(
    chart: helm.Chart, prometheus_crds: str, release_namespace: str, mode: dict[str, Any]
) -> None:
    hook = {"release": "kube-prometheus-stack"}
    metrics = {k: {**v, "labels": hook} for k, v in MONITORING.items()}
    rendered = chart.render({**mode, "metrics": metrics}, name=RELEASE, namespace=release_namespace)
    for template, kind in (
        ("servicemonitor.yaml", "ServiceMonitor"),
        ("podmonitor.yaml", "PodMonitor"),
        ("prometheusrule.yaml", "PrometheusRule"),
    ):
        manifest = rendered[f"virtrigaud/templates/{template}"]
        assert f"kind: {kind}" in manifest
        done = kubectl_dry_run(prometheus_crds, manifest)
        assert done.returncode == 0, (kind, done.stderr)
        names = [d["metadata"]["name"] for d in yaml.safe_load_all(manifest) if d]
        # With KubeRay the shards' PodMonitor too: every object of the file is accepted.
        assert len(names) == (2 if kind == "PodMonitor" and mode else 1), names
        for name in names:
            assert f"{name} created (server dry run)" in done.stdout, done.stdout


async def test_the_monitoring_crds_reject_a_malformed_object(
    chart: helm.Chart, prometheus_crds: str, release_namespace: str
) -> None:
    """The dry run above can fail: a malformed PodMonitor and PrometheusRule are refused."""
    rendered = chart.render({"metrics": MONITORING}, name=RELEASE, namespace=release_namespace)
    monitor = yaml.safe_load(rendered["virtrigaud/templates/podmonitor.yaml"])
    monitor["spec"]["podMetricsEndpoints"][1]["portNumber"] = "eighty"
    done = kubectl_dry_run(prometheus_crds, yaml.safe_dump(monitor))
    assert done.returncode != 0 and "portNumber" in done.stderr, done.stderr
    rule = yaml.safe_load(rendered["virtrigaud/templates/prometheusrule.yaml"])
    rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
    done = kubectl_dry_run(prometheus_crds, yaml.safe_dump(rule))
    assert done.returncode != 0 and "for" in done.stderr, done.stderr
