"""The dev API server's RBAC mode: token identities, upstream RBAC rule matching, decisions.

A private stack (kube only) started with `kube_rbac=True`; each test gives fresh
identities exactly the rules it is about, through the admin (system:masters) kubeconfig.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from virtrigaud import API_VERSION
from virtrigaud.dev import kubeapi, kubeauth
from virtrigaud.dev.authzlog import Decision, Grant, read_decisions, role_id, unused_rules
from virtrigaud.dev.cli import dev_app
from virtrigaud.dev.config import StackConfig
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import KubeInfo
from virtrigaud.dev.stack import DevStack
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import (
    CONFIG_MAPS,
    LEASES,
    NAMESPACES,
    SECRETS,
    VIRTUAL_MACHINES,
    Resource,
)

pytestmark = pytest.mark.stack

ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
CLUSTER_ROLES = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
)
CLUSTER_ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
KUBECTL = (
    shutil.which(
        "kubectl",
        path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    or "kubectl"
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def rbac_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    stack = DevStack(tmp_path_factory.mktemp("rbac"), StackConfig(kube_rbac=True))
    try:
        stack.up(["kube"])
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def info(rbac_stack: DevStack) -> KubeInfo:
    kube = rbac_stack.info().kube
    assert kube is not None and kube.rbac
    return kube


@pytest.fixture(scope="module")
async def admin(info: KubeInfo) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(info.kubeconfig) as client:
        yield client


@pytest.fixture
async def ns(admin: KubeClient) -> AsyncIterator[str]:
    name = unique("rbac")
    await admin.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await admin.delete(NAMESPACES, name)


class Identity:
    """A user on the RBAC-mode server: its own client, and its decisions from the log."""

    def __init__(self, stack: DevStack, info: KubeInfo, name: str, groups: tuple[str, ...] = ()):
        self.user = stack.add_kube_user(name, groups)
        self.info = info
        self.client = KubeClient.from_kubeconfig(self.user.kubeconfig)

    @property
    def name(self) -> str:
        return self.user.name

    def decisions(self) -> list[Decision]:
        return [d for d in read_decisions(self.info.authz_log) if d.user == self.name]


@pytest.fixture
async def identities(rbac_stack: DevStack, info: KubeInfo) -> AsyncIterator[Any]:
    made: list[Identity] = []

    def make(prefix: str, groups: tuple[str, ...] = ()) -> Identity:
        identity = Identity(rbac_stack, info, unique(prefix), groups)
        made.append(identity)
        return identity

    yield make
    for identity in made:
        await identity.client.close()


async def grant_role(
    admin: KubeClient, ns: str, subject: dict[str, Any], rules: list[dict[str, Any]]
) -> tuple[dict[str, Any], str]:
    """A Role with `rules` bound to `subject` in ns; returns the Role and the binding's name."""
    name = unique("role")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": ns},
        "rules": rules,
    }
    await admin.create(ROLES, role, ns)
    await admin.create(
        ROLE_BINDINGS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject],
        },
        ns,
    )
    return role, name


def user(name: str) -> dict[str, Any]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def rule(resources: list[str], verbs: list[str], **more: Any) -> dict[str, Any]:
    return {
        "apiGroups": more.pop("apiGroups", [""]),
        "resources": resources,
        "verbs": verbs,
        **more,
    }


async def forbidden(call: Any) -> ApiError:
    with pytest.raises(ApiError) as err:
        await call
    assert err.value.status == 403, err.value
    return err.value


def get_raw(info: KubeInfo, token: str, path: str) -> int:
    """Status of a GET that answers no JSON (e.g. /metrics), as `token`."""
    headers = {"Authorization": f"Bearer {token}"}
    r = requests.get(info.server + path, headers=headers, verify=kubeapi.ca_file(info), timeout=5)
    return r.status_code


async def run_kubectl(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}}


# --- authentication ------------------------------------------------------------------------


def test_unknown_token_is_401_and_anonymous_reaches_only_public_info(info: KubeInfo) -> None:
    ca = kubeapi.ca_file(info)
    url = info.server + "/api/v1/namespaces/default/configmaps"
    assert (
        requests.get(
            url, headers={"Authorization": "Bearer wrong"}, verify=ca, timeout=5
        ).status_code
        == 401
    )
    assert requests.get(url, verify=ca, timeout=5).status_code == 403
    assert requests.get(info.server + "/version", verify=ca, timeout=5).status_code == 200
    assert (
        requests.get(
            url, headers={"Authorization": f"Bearer {info.token}"}, verify=ca, timeout=5
        ).status_code
        == 200
    )


async def test_admin_kubeconfig_has_full_access(admin: KubeClient, ns: str, info: KubeInfo) -> None:
    await admin.create(
        SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, ns
    )
    everywhere = await admin.request("GET", "/api/v1/secrets")
    assert any(s["metadata"]["namespace"] == ns for s in everywhere["items"])
    assert get_raw(info, info.token, "/metrics") == 200
    mine = [d for d in read_decisions(info.authz_log) if d.user == kubeauth.ADMIN_USER]
    assert mine and all(d.allowed and d.grants == [] for d in mine)
    assert mine[-1].reason == "member of the privileged group system:masters"


# --- RBAC rule matching --------------------------------------------------------------------


async def test_an_allowed_request_succeeds_and_a_disallowed_one_is_403(
    admin: KubeClient, ns: str, identities: Any
) -> None:
    alice = identities("alice")
    await admin.create(CONFIG_MAPS, configmap("settings"), ns)
    await grant_role(admin, ns, user(alice.name), [rule(["configmaps"], ["get", "list"])])
    assert (await alice.client.get(CONFIG_MAPS, "settings", ns))["data"] == {"a": "b"}
    assert [c["metadata"]["name"] for c in (await alice.client.list(CONFIG_MAPS, ns))["items"]] == [
        "settings"
    ]
    # Each of verb, resource and namespace outside the rule is refused.
    err = await forbidden(alice.client.create(CONFIG_MAPS, configmap("new"), ns))
    assert f'User "{alice.name}" cannot create resource "configmaps"' in err.message
    await forbidden(alice.client.list(SECRETS, ns))
    await forbidden(alice.client.list(CONFIG_MAPS, "default"))
    await forbidden(alice.client.request("GET", "/api/v1/configmaps"))


async def test_a_resource_names_rule_grants_only_the_named_objects(
    admin: KubeClient, ns: str, identities: Any
) -> None:
    bob = identities("bob")
    for name in ("provider-creds", "other-creds"):
        await admin.create(
            SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}, ns
        )
    await grant_role(
        admin,
        ns,
        user(bob.name),
        [rule(["secrets"], ["get", "list", "watch"], resourceNames=["provider-creds"])],
    )
    assert (await bob.client.get(SECRETS, "provider-creds", ns))["metadata"][
        "name"
    ] == "provider-creds"
    await forbidden(bob.client.get(SECRETS, "other-creds", ns))
    # A list names no object, so a resourceNames rule does not grant it...
    await forbidden(bob.client.list(SECRETS, ns))
    # ...unless it selects exactly the named object, as kube-apiserver authorizes it.
    one = await bob.client.list(SECRETS, ns, field_selector="metadata.name=provider-creds")
    assert [s["metadata"]["name"] for s in one["items"]] == ["provider-creds"]
    await forbidden(bob.client.list(SECRETS, ns, field_selector="metadata.name=other-creds"))


def vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "providerRef": {"name": "p"},
            "classRef": {"name": "c"},
            "imageRef": {"name": "i"},
        },
    }


async def test_subresources_are_matched_as_resource_slash_subresource(
    admin: KubeClient, ns: str, identities: Any
) -> None:
    await admin.create(VIRTUAL_MACHINES, vm("web"), ns)
    status_writer, spec_writer, any_status = (
        identities("status"),
        identities("spec"),
        identities("anystatus"),
    )
    vms = {"apiGroups": [VIRTUAL_MACHINES.group]}
    await grant_role(
        admin, ns, user(status_writer.name), [rule(["virtualmachines/status"], ["patch"], **vms)]
    )
    await grant_role(
        admin, ns, user(spec_writer.name), [rule(["virtualmachines"], ["patch"], **vms)]
    )
    await grant_role(
        admin, ns, user(any_status.name), [rule(["*/status"], ["patch"], apiGroups=["*"])]
    )
    status_patch = {"status": {"message": "checked"}}
    spec_patch = {"metadata": {"labels": {"tier": "web"}}}

    for allowed in (status_writer, any_status):
        patched = await allowed.client.patch(
            VIRTUAL_MACHINES, "web", ns, status_patch, subresource="status"
        )
        assert patched["status"]["message"] == "checked"
        await forbidden(allowed.client.patch(VIRTUAL_MACHINES, "web", ns, spec_patch))
    assert (await spec_writer.client.patch(VIRTUAL_MACHINES, "web", ns, spec_patch))["metadata"][
        "labels"
    ] == {"tier": "web"}
    # The resource's rule does not cover its subresources.
    await forbidden(
        spec_writer.client.patch(VIRTUAL_MACHINES, "web", ns, status_patch, subresource="status")
    )
    status = [d for d in status_writer.decisions() if d.allowed]
    assert [(d.resource, d.subresource, d.verb, d.name) for d in status] == [
        ("virtualmachines", "status", "patch", "web")
    ]


async def test_cluster_roles_wildcards_and_non_resource_urls(
    admin: KubeClient, ns: str, identities: Any
) -> None:
    carol = identities("carol")
    assert get_raw(carol.info, carol.user.token, "/metrics") == 403
    name = unique("cluster")
    await admin.create(
        CLUSTER_ROLES,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]},
                {"nonResourceURLs": ["/metr*"], "verbs": ["get"]},
            ],
        },
    )
    await admin.create(
        CLUSTER_ROLE_BINDINGS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [user(carol.name)],
        },
    )
    await admin.create(CONFIG_MAPS, configmap("anywhere"), ns)
    assert (await carol.client.get(CONFIG_MAPS, "anywhere", ns))["metadata"]["name"] == "anywhere"
    assert (await carol.client.get(NAMESPACES, ns))["metadata"]["name"] == ns
    assert get_raw(carol.info, carol.user.token, "/metrics") == 200
    await forbidden(carol.client.list(CONFIG_MAPS, ns))  # verb "get" only
    metrics = next(d for d in carol.decisions() if d.path == "/metrics" and d.allowed)
    assert not metrics.resource_request
    assert metrics.grants == [
        Grant(binding=f"ClusterRoleBinding/{name}", role=f"ClusterRole/{name}", rule=1)
    ]


async def test_a_service_account_subject_and_kubectl_with_its_kubeconfig(
    rbac_stack: DevStack, admin: KubeClient, ns: str
) -> None:
    sa_user, sa_groups = kubeauth.service_account(ns, "controller")
    sa = rbac_stack.add_kube_user(sa_user, sa_groups)
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader"},
    }
    await admin.create(LEASES, lease, ns)
    # A ServiceAccount subject without a namespace is in the binding's namespace.
    await grant_role(
        admin,
        ns,
        {"kind": "ServiceAccount", "name": "controller"},
        [
            rule(
                ["leases"],
                ["get", "list"],
                apiGroups=["coordination.k8s.io"],
                resourceNames=["leader"],
            )
        ],
    )
    got = await run_kubectl(sa.kubeconfig, "-n", ns, "get", "lease", "leader", "-o", "name")
    assert got[:2] == (0, "lease.coordination.k8s.io/leader\n"), got[2]
    code, _, err = await run_kubectl(sa.kubeconfig, "-n", ns, "get", "configmaps")
    assert code == 1
    assert f'User "{sa_user}" cannot list resource "configmaps"' in err


# --- the decision log ----------------------------------------------------------------------


async def test_the_decision_log_records_allowed_and_denied_requests_with_their_rule(
    admin: KubeClient, ns: str, identities: Any, rbac_stack: DevStack
) -> None:
    dave = identities("dave")
    await admin.create(CONFIG_MAPS, configmap("app"), ns)
    role, binding = await grant_role(
        admin, ns, user(dave.name), [rule(["configmaps"], ["get"]), rule(["secrets"], ["list"])]
    )
    await dave.client.get(CONFIG_MAPS, "app", ns)
    await forbidden(dave.client.get(SECRETS, "db-password", ns))

    logged = [d for d in dave.decisions() if d.resource_request]
    allowed = [d for d in logged if d.allowed]
    denied = [d for d in logged if not d.allowed]
    assert [
        (d.verb, d.api_group, d.resource, d.subresource, d.namespace, d.name) for d in allowed
    ] == [("get", "", "configmaps", "", ns, "app")]
    assert allowed[0].grants == [
        Grant(binding=f"RoleBinding/{ns}/{binding}", role=role_id(role), rule=0)
    ]
    assert [(d.verb, d.resource, d.namespace, d.name, d.grants) for d in denied] == [
        ("get", "secrets", ns, "db-password", [])
    ]
    assert "system:authenticated" in denied[0].groups
    # The rule no request needed is what a least-privilege check reports.
    assert unused_rules([role], logged) == [(role_id(role), 1, rule(["secrets"], ["list"]))]
    # The CLI reads the same log and exits 1 when it shows a denial.
    result = CliRunner().invoke(
        dev_app,
        ["decisions", "--state-dir", str(rbac_stack.state_dir), "--user", dave.name, "--denied"],
    )
    assert result.exit_code == 1
    assert result.stdout.strip() == f"{dave.name} get secrets db-password in namespace {ns}: DENIED"


def test_rbac_asked_of_a_running_api_server_without_it_is_refused(
    dev_stack: DevStack, kube_info: KubeInfo
) -> None:
    if kube_info.rbac:
        pytest.skip("the session API server runs with RBAC (VIRTRIGAUD_TEST_STATE_DIR)")
    with pytest.raises(StackError, match="runs without RBAC"):
        DevStack(dev_stack.state_dir, StackConfig(kube_rbac=True)).ensure("kube")
    with pytest.raises(StackError, match="without RBAC"):
        DevStack(dev_stack.state_dir).add_kube_user("someone")
