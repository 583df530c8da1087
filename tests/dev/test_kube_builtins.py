"""Built-in kinds on the dev API server behave as on a real cluster, seen through kubectl.

Secrets fold stringData into data; Events take the field selectors kubectl uses, so
`kubectl describe` lists a VirtualMachine's Events; `kubectl get` prints the server-side
table columns kube-apiserver gives Events, Secrets, ConfigMaps, Leases, Namespaces,
Deployments and Services. A Deployment has a status subresource and a generation that
counts spec changes (nothing runs it: there is no controller-manager); a Service gets
kube-apiserver's defaults for type, protocol and targetPort (no cluster IP).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from virtrigaud import API_VERSION
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.events import EventRecorder
from virtrigaud.kube.resources import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    EVENTS,
    LEASES,
    NAMESPACES,
    SECRETS,
    SERVICES,
    VIRTUAL_MACHINES,
)

pytestmark = pytest.mark.stack

KUBECTL = (
    shutil.which(
        "kubectl",
        path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    or "kubectl"
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def kubectl(kubeconfig: str, *args: str) -> str:
    proc = subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
async def kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(kubeconfig) as client:
        yield client


@pytest.fixture(scope="module")
async def ns(kube: KubeClient) -> AsyncIterator[str]:
    name = unique("builtins")
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await kube.delete(NAMESPACES, name)


def secret(name: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **fields}


# --- Secret stringData ---------------------------------------------------------------------


async def test_secret_string_data_is_folded_into_data_on_create(kube: KubeClient, ns: str) -> None:
    name = unique("creds")
    created = await kube.create(
        SECRETS,
        secret(
            name,
            data={"username": b64("old"), "keep": b64("k")},
            stringData={"username": "u", "password": "p"},
        ),
        ns,
    )
    stored = await kube.get(SECRETS, name, ns)
    for obj in (created, stored):
        assert "stringData" not in obj
        # stringData wins over data for the same key; other data keys stay.
        assert obj["data"] == {"username": b64("u"), "password": b64("p"), "keep": b64("k")}
        assert obj["type"] == "Opaque"


async def test_secret_string_data_is_folded_on_update_patch_and_apply(
    kube: KubeClient, ns: str
) -> None:
    name = unique("creds")
    created = await kube.create(SECRETS, secret(name, stringData={"password": "one"}), ns)
    replaced = await kube.replace(
        SECRETS, dict(created, stringData={"password": "two", "token": "t"})
    )
    assert "stringData" not in replaced
    assert replaced["data"] == {"password": b64("two"), "token": b64("t")}
    patched = await kube.patch(SECRETS, name, ns, {"stringData": {"password": "three"}})
    assert "stringData" not in patched
    assert patched["data"] == {"password": b64("three"), "token": b64("t")}
    applied = await kube.apply(
        SECRETS,
        secret(name, metadata={"name": name, "namespace": ns}, stringData={"password": "four"}),
        field_manager="builtins-test",
    )
    stored = await kube.get(SECRETS, name, ns)
    for obj in (applied, stored):
        assert "stringData" not in obj
        assert obj["data"]["password"] == b64("four")


async def test_kubectl_apply_of_a_string_data_secret_reads_back_as_data(
    kubeconfig: str, ns: str, tmp_path: Any
) -> None:
    name = unique("provider-creds")
    manifest = tmp_path / "secret.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        "stringData:\n  username: admin\n  password: s3cret\n"
    )
    kubectl(kubeconfig, "apply", "-f", str(manifest))
    data = kubectl(
        kubeconfig, "get", "secret", name, "-n", ns, "-o", "jsonpath={.data.password}|{.stringData}"
    )
    assert data == f"{b64('s3cret')}|"


# --- Events: describe, field selectors, table ----------------------------------------------


def vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "providerRef": {"name": "vsphere-a"},
            "classRef": {"name": "small"},
            "imageRef": {"name": "ubuntu-22"},
        },
    }


@pytest.fixture(scope="module")
async def vm_events(kube: KubeClient, ns: str) -> AsyncIterator[dict[str, Any]]:
    """Two VMs; the first has a Warning and a Normal Event, the second one Normal Event."""
    first = await kube.create(VIRTUAL_MACHINES, vm(unique("web")), ns)
    second = await kube.create(VIRTUAL_MACHINES, vm(unique("db")), ns)
    recorder = EventRecorder(kube, component="builtins-test", instance="node-a")
    warning = await recorder.record(
        first, "Warning", "ProviderUnreachable", "dial tcp 10.0.0.1:443: connection refused"
    )
    normal = await recorder.record(first, "Normal", "Created", "created on host esx-1")
    other = await recorder.record(second, "Normal", "PoweredOn", "powered on")
    assert warning and normal and other
    yield {
        "first": first,
        "second": second,
        "warning": warning.name,
        "normal": normal.name,
        "other": other.name,
    }
    await kube.request("DELETE", VIRTUAL_MACHINES.collection_path(ns))


def events_section(describe: str) -> str:
    return describe[describe.index("\nEvents:") :]


async def test_kubectl_describe_virtualmachine_lists_its_events(
    kubeconfig: str, ns: str, vm_events: dict[str, Any]
) -> None:
    name = vm_events["first"]["metadata"]["name"]
    out = kubectl(kubeconfig, "describe", "virtualmachine", name, "-n", ns)
    events = events_section(out)
    assert "<none>" not in events
    assert re.search(
        r"Warning\s+ProviderUnreachable\s+.*dial tcp 10\.0\.0\.1:443: connection refused", events
    ), events
    assert re.search(r"Normal\s+Created\s+.*created on host esx-1", events), events
    # The other VM's Event is not listed: describe selects by the involved object.
    assert "PoweredOn" not in events


async def test_kubectl_get_events_prints_the_event_columns(
    kubeconfig: str, ns: str, vm_events: dict[str, Any]
) -> None:
    name = vm_events["first"]["metadata"]["name"]
    lines = kubectl(kubeconfig, "get", "events", "-n", ns).splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    row = next(line for line in lines if "ProviderUnreachable" in line)
    assert row.split()[1:4] == ["Warning", "ProviderUnreachable", f"virtualmachine/{name}"]
    assert row.endswith("dial tcp 10.0.0.1:443: connection refused")
    wide = kubectl(kubeconfig, "get", "events", "-n", ns, "-o", "wide").splitlines()
    assert wide[0].split() == [
        "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE",
        "FIRST", "SEEN", "COUNT", "NAME",
    ]  # fmt: skip
    row = next(line for line in wide if "ProviderUnreachable" in line)
    assert "builtins-test, node-a" in row
    assert row.split()[-2:] == ["1", vm_events["warning"]]


def selector_cases() -> list[tuple[str, str, str]]:
    """(field, value of the first VM's Warning Event, a value no Event of the test has)."""
    return [
        ("involvedObject.kind", "VirtualMachine", "Secret"),
        ("involvedObject.name", "{first_name}", "nope"),
        ("involvedObject.namespace", "{ns}", "elsewhere"),
        ("involvedObject.uid", "{first_uid}", "00000000-0000-0000-0000-000000000000"),
        ("involvedObject.apiVersion", API_VERSION, "v1"),
        ("involvedObject.resourceVersion", "{first_rv}", "1"),
        ("involvedObject.fieldPath", "", "spec.containers{x}"),
        ("reason", "ProviderUnreachable", "Nope"),
        ("source", "builtins-test", "kubelet"),
        ("type", "Warning", "Error"),
        ("reportingComponent", "builtins-test", "kubelet"),
        ("metadata.name", "{warning}", "nope"),
    ]


@pytest.mark.parametrize(
    ("field", "match", "miss"), selector_cases(), ids=[c[0] for c in selector_cases()]
)
async def test_each_event_field_selector_filters(
    kube: KubeClient, ns: str, vm_events: dict[str, Any], field: str, match: str, miss: str
) -> None:
    first = vm_events["first"]["metadata"]
    values = {
        "first_name": first["name"],
        "first_uid": first["uid"],
        "first_rv": first["resourceVersion"],
        "ns": ns,
        "warning": vm_events["warning"],
    }
    selected = await kube.list(EVENTS, ns, field_selector=f"{field}={match.format(**values)}")
    names = {e["metadata"]["name"] for e in selected["items"]}
    assert vm_events["warning"] in names
    missed = await kube.list(EVENTS, ns, field_selector=f"{field}={miss}")
    assert missed["items"] == []


async def test_events_of_one_object_are_selected_as_kubectl_describe_does(
    kube: KubeClient, ns: str, vm_events: dict[str, Any]
) -> None:
    first = vm_events["first"]["metadata"]
    selector = (
        f"involvedObject.name={first['name']},involvedObject.namespace={ns},"
        f"involvedObject.kind=VirtualMachine,involvedObject.uid={first['uid']}"
    )
    selected = await kube.list(EVENTS, ns, field_selector=selector)
    assert {e["metadata"]["name"] for e in selected["items"]} == {
        vm_events["warning"],
        vm_events["normal"],
    }
    negated = await kube.list(
        EVENTS, ns, field_selector=f"type!=Warning,involvedObject.name={first['name']}"
    )
    assert {e["metadata"]["name"] for e in negated["items"]} == {vm_events["normal"]}


async def test_an_unknown_event_field_selector_is_a_400_naming_the_field(
    kube: KubeClient, ns: str
) -> None:
    with pytest.raises(ApiError) as err:
        await kube.list(EVENTS, ns, field_selector="involvedObject.color=red")
    assert err.value.status == 400
    assert "involvedObject.color" in err.value.message


# --- tables of the other built-ins ---------------------------------------------------------


async def test_kubectl_get_prints_upstream_columns_for_the_other_built_ins(
    kube: KubeClient, kubeconfig: str, ns: str
) -> None:
    name = unique("t")
    await kube.create(SECRETS, secret(name, stringData={"a": "1", "b": "2"}), ns)
    await kube.create(
        CONFIG_MAPS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"x": "y"}},
        ns,
    )
    await kube.create(
        LEASES,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": "shard-0"},
        },
        ns,
    )
    expected = {
        "secret": (["NAME", "TYPE", "DATA", "AGE"], [name, "Opaque", "2"]),
        "configmap": (["NAME", "DATA", "AGE"], [name, "1"]),
        "lease": (["NAME", "HOLDER", "AGE"], [name, "shard-0"]),
    }
    for kind, (header, cells) in expected.items():
        header_line, row = kubectl(kubeconfig, "get", kind, name, "-n", ns).splitlines()
        assert header_line.split() == header, kind
        assert row.split()[: len(cells)] == cells, kind
    header_line, row = kubectl(kubeconfig, "get", "namespace", ns).splitlines()
    assert header_line.split() == ["NAME", "STATUS", "AGE"]
    assert row.split()[:2] == [ns, "Active"]


# --- Deployments and Services ----------------------------------------------------------------


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "provider", "image": "example/p:1"}]},
            },
        },
    }


async def test_deployment_generation_counts_spec_changes_and_status_is_a_subresource(
    kube: KubeClient, ns: str
) -> None:
    name = unique("deploy")
    body = deployment(name)
    body["status"] = {"replicas": 9}  # a client cannot set status on create
    created = await kube.create(DEPLOYMENTS, body, ns)
    assert created["metadata"]["generation"] == 1
    assert not created.get("status")
    # Labels are no spec change; replicas are.
    labelled = await kube.patch(DEPLOYMENTS, name, ns, {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["generation"] == 1
    scaled = await kube.patch(
        DEPLOYMENTS, name, ns, {"spec": {"replicas": 3}, "status": {"replicas": 5}}
    )
    assert scaled["metadata"]["generation"] == 2
    assert not scaled.get("status")  # status through the main resource is ignored
    status = {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3}
    reported = await kube.patch(
        DEPLOYMENTS,
        name,
        ns,
        {"spec": {"replicas": 1}, "status": status},
        subresource="status",
    )
    assert reported["status"] == status
    assert reported["spec"]["replicas"] == 3  # spec through /status is ignored
    assert reported["metadata"]["generation"] == 2
    stored = await kube.get(DEPLOYMENTS, name, ns)
    assert stored["status"] == status and stored["spec"]["replicas"] == 3
    # An update of the spec keeps the status the controller wrote.
    replaced = await kube.replace(DEPLOYMENTS, dict(stored, spec=deployment(name, 4)["spec"]))
    assert replaced["status"] == status and replaced["metadata"]["generation"] == 3
    await kube.delete(DEPLOYMENTS, name, ns)
    with pytest.raises(ApiError) as err:
        await kube.get(DEPLOYMENTS, name, ns)
    assert err.value.not_found


async def test_service_gets_the_defaults_a_client_reads_back(kube: KubeClient, ns: str) -> None:
    name = unique("svc")
    created = await kube.create(
        SERVICES,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": "p"}, "ports": [{"name": "grpc", "port": 9443}]},
        },
        ns,
    )
    assert created["spec"]["type"] == "ClusterIP"
    assert created["spec"]["ports"] == [
        {"name": "grpc", "port": 9443, "targetPort": 9443, "protocol": "TCP"}
    ]


COUNTS = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}


async def test_kubectl_get_deploy_and_svc_print_their_columns(
    kube: KubeClient, kubeconfig: str, ns: str
) -> None:
    name = unique("p")
    await kube.create(DEPLOYMENTS, deployment(name), ns)
    await kube.patch(
        DEPLOYMENTS,
        name,
        ns,
        {"status": COUNTS},
        subresource="status",
    )
    await kube.create(
        SERVICES,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": "grpc", "port": 9443}, {"name": "metrics", "port": 8080}],
            },
        },
        ns,
    )
    header, row = kubectl(kubeconfig, "get", "deploy", name, "-n", ns).splitlines()
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row.split()[:4] == [name, "1/2", "2", "1"]
    header, row = kubectl(kubeconfig, "get", "deploy", name, "-n", ns, "-o", "wide").splitlines()
    assert header.split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert row.split()[-3:] == ["provider", "example/p:1", f"app={name}"]
    header, row = kubectl(kubeconfig, "get", "svc", name, "-n", ns).splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert row.split()[:5] == [name, "ClusterIP", "<none>", "<none>", "9443/TCP,8080/TCP"]
