"""The chart's RBAC, enforced: the controller runs as the chart's ServiceAccount against an
API server that authorizes every request by the Roles and ClusterRoles the chart renders.

Once with the chart's defaults (every namespace watched: a ClusterRole) and once with
`watchNamespaces` (Roles in the watched namespaces only, one of them without objects).
Two real `virtrigaud run` processes (the rendered Deployment's arguments, with the
session's Ray and Redis) converge VMs on all three simulators, resize one, fail over (the
leader is killed), follow a shard-count change, run the fleet kinds on vcsim (a VMSet
placed by a VMPlacementPolicy, scaled 2 -> 1 and deleted, a VMSnapshot taken and
reverted to, a schedule firing, a VMClone), run a remote Provider's server (its
Deployment and Service created, updated with the spec, deleted with it) and delete the
VMs, which deletes their VMSnapshots, then the Providers; the Providers, VMClasses, VMImages, the
VMNetworkAttachment and the VMPlacementPolicy report their status. The API server's
decision log must then show no denial for the ServiceAccount, and every (rule, resource,
verb) the chart grants must have allowed at least one request (but the few in
RARELY_USED, each with the code that needs it, and the finalizers grants of
ADMISSION_ONLY, which this API server never checks): a grant the run never needed is one
too many.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from fixtures_vm import (
    API,
    PROVIDER_TYPES,
    _b64,
    condition,
    image_source,
    is_ready,
    provider_spec,
)

from virtrigaud.controllers.vmset.reconciler import SET_LABEL
from virtrigaud.controllers.vmsnapshot.passbase import SCHEDULE_LABEL
from virtrigaud.dev.authzlog import Decision, read_decisions, role_id
from virtrigaud.dev.config import StackConfig
from virtrigaud.dev.info import KubeInfo
from virtrigaud.dev.kubeauth import service_account
from virtrigaud.dev.stack import DevStack
from virtrigaud.instance import Instance
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    LEASES,
    NAMESPACES,
    PROVIDERS,
    SECRETS,
    SERVICES,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_CLONES,
    VM_IMAGES,
    VM_NETWORK_ATTACHMENTS,
    VM_PLACEMENT_POLICIES,
    VM_SETS,
    VM_SNAPSHOTS,
    Resource,
)

pytest_plugins = ["fixtures_vm"]

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "virtrigaud"
RELEASE = "vr"
FULLNAME = f"{RELEASE}-virtrigaud"
RBAC_KINDS: dict[str, Resource] = {
    "ServiceAccount": Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    "ClusterRole": Resource(
        "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
    ),
    "ClusterRoleBinding": Resource(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
    ),
    "Role": Resource("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    "RoleBinding": Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    "ConfigMap": CONFIG_MAPS,
}
# Faster than the chart's 15 / 10 / 2 s, same relationships.
TIMINGS = {"--lease-duration": "4", "--renew-deadline": "3", "--retry-period": "0.5"}
JSON = dict[str, Any]
# Grants whose request a run like this one makes only by chance, each with the code that
# needs it: kept in the chart, left out of the "every grant used" check.
RARELY_USED = {
    (kind, "get"): "a requeued key the shard holds no object of is read first "
    f"(controllers/{package}/reconciler.py reconcile)"
    for kind, package in (("vmsets", "vmset"), ("vmclones", "vmclone"))
} | {
    ("vmclasses", "create"): "an adopting Provider creates a VMClass per shape of the VMs "
    "it adopts (controllers/provider/adoption.py ensure_class; tests/controller/"
    "test_adoption.py)"
}
# Grants no request of the controller uses, each with the API server check that needs it.
# A VMSet's VMs and a VMClone's target carry ownerReferences with blockOwnerDeletion: true
# (controllers/vmset/reconciler.py, controllers/vmclone/reconciler.py); kube-apiserver's
# OwnerReferencesPermissionEnforcement admission then requires their creator to have
# update on the owner's finalizers. That plugin lives only in the kube-apiserver tree
# (plugin/pkg/admission/gc), which no package provides for the dev API server (research
# k8s-apiserver.md), so no request here is authorized against these grants: they are
# left out of the "every grant used" check, and the test asserts that none was ever
# checked, so the exception ends the day the API server does check them.
ADMISSION_ONLY = {
    (f"{kind}/finalizers", "update"): "OwnerReferencesPermissionEnforcement, when a "
    f"{kind[:-1]} creates an object it owns with blockOwnerDeletion"
    for kind in ("vmsets", "vmclones", "providers")
}


@pytest.fixture(scope="module")
def rbac_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """An API server of its own that enforces RBAC (the simulators, Ray and Redis are
    the session's)."""
    stack = DevStack(tmp_path_factory.mktemp("chart-rbac"), StackConfig(kube_rbac=True))
    try:
        stack.up(["kube"])
        yield stack
    finally:
        stack.down()


@pytest.fixture
async def admin(rbac_kube: DevStack) -> AsyncIterator[KubeClient]:
    info = rbac_kube.info().kube
    assert isinstance(info, KubeInfo) and info.rbac
    async with KubeClient.from_kubeconfig(info.kubeconfig) as client:
        yield client


def render(values: JSON, namespace: str) -> list[JSON]:
    import yaml

    with helm.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=namespace, is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def controller_command(deployment: JSON, ident: str, kubeconfig: Path) -> list[str]:
    """The rendered container's arguments, with what only a pod has replaced."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args: list[str] = []
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        if flag in (
            "--id",
            "--metrics-port",
            "--shard-metrics-port",
            "--metrics-address",
            "--ray-node-ip",
        ):
            continue  # pod name, fixed ports, 0.0.0.0, pod IP: replaced below / dropped
        if flag in TIMINGS:
            arg = f"{flag}={TIMINGS[flag]}"
        args.append(arg)
    virtrigaud = str(Path(sys.executable).parent / "virtrigaud")
    return [
        virtrigaud,
        *args,
        f"--id={ident}",
        "--metrics-port=0",
        "--shard-metrics-port=0",
        "--metrics-address=127.0.0.1",
        f"--kubeconfig={kubeconfig}",
    ]


class Controller:
    def __init__(self, command: list[str], log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            command, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()


async def until(check: Any, timeout: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
            pytest.fail(f"{what} not reached within {timeout} s\n{tails}")
        await asyncio.sleep(0.3)


def template_of(role: str) -> str:
    """A Role the chart renders in several namespaces counts once: Role/<ns>/<name> and
    Role/<other ns>/<name> are the same grant (a watched namespace without VMs uses less)."""
    kind, *rest = role.split("/")
    return f"{kind}/{rest[-1]}"


def unused_grants(roles: list[JSON], decisions: list[Decision]) -> list[str]:
    """Every (role, rule, resource, verb) of `roles` that allowed none of `decisions`."""
    used = {
        (
            template_of(g.role),
            g.rule,
            d.resource + (f"/{d.subresource}" if d.subresource else ""),
            d.verb,
        )
        for d in decisions
        for g in d.grants
    }
    return sorted(
        {
            f"{template_of(role_id(role))} rule {i}: {verb} {resource}"
            for role in roles
            for i, rule in enumerate(role.get("rules") or [])
            for resource in rule["resources"]
            for verb in rule["verbs"]
            if (template_of(role_id(role)), i, resource, verb) not in used
            and (resource, verb) not in RARELY_USED
            and (resource, verb) not in ADMISSION_ONLY
        }
    )


async def vm_objects(admin: KubeClient, ns: str, stack: DevStack, libvirt_image: str) -> None:
    async def apply(res: Resource, obj: JSON) -> None:
        await admin.apply(res, obj, field_manager="chart-rbac-test")

    for t in PROVIDER_TYPES:
        spec, data = provider_spec(t, stack)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{t}-credentials", "namespace": ns},
            "data": {k: _b64(v) for k, v in data.items()},
        }
        await apply(SECRETS, secret)
        spec |= {"credentialSecretRef": {"name": f"{t}-credentials"}}
        spec |= {"rateLimit": {"qps": 500, "burst": 500}}
        meta = {"name": t, "namespace": ns}
        await apply(
            PROVIDERS, {"apiVersion": API, "kind": "Provider", "metadata": meta, "spec": spec}
        )
        image = {"source": image_source(t, libvirt_image)}
        meta = {"name": f"{t}-image", "namespace": ns}
        await apply(
            VM_IMAGES, {"apiVersion": API, "kind": "VMImage", "metadata": meta, "spec": image}
        )
    for name, cpu, memory in (("small", 1, "512Mi"), ("medium", 2, "1Gi")):
        meta = {"name": name, "namespace": ns}
        spec = {"cpu": cpu, "memory": memory}
        await apply(
            VM_CLASSES, {"apiVersion": API, "kind": "VMClass", "metadata": meta, "spec": spec}
        )
    await apply(
        VM_NETWORK_ATTACHMENTS,
        {
            "apiVersion": API,
            "kind": "VMNetworkAttachment",
            "metadata": {"name": "lan", "namespace": ns},
            "spec": {"network": {"vsphere": {"portgroup": "VM Network"}}},
        },
    )
    for t in PROVIDER_TYPES:
        spec = {
            "providerRef": {"name": t},
            "classRef": {"name": "small"},
            "imageRef": {"name": f"{t}-image"},
            "powerState": "On",
        }
        if t == "vsphere":
            spec["networks"] = [{"name": "nic0", "networkRef": {"name": "lan"}}]
        meta = {"name": f"web-{t}", "namespace": ns}
        await admin.create(
            VIRTUAL_MACHINES,
            {"apiVersion": API, "kind": "VirtualMachine", "metadata": meta, "spec": spec},
        )


async def dependencies_reported(admin: KubeClient, ns: str) -> bool:
    """The Providers are Ready and hold their finalizer; the classes, images and the network
    say whether they are Ready."""
    kinds = (PROVIDERS, VM_CLASSES, VM_IMAGES, VM_NETWORK_ATTACHMENTS)
    for res in kinds:
        for obj in (await admin.list(res, ns))["items"]:
            ready = condition(obj, "Ready")
            if ready is None:
                return False
            if res is PROVIDERS and not (
                ready["status"] == "True" and obj["metadata"].get("finalizers")
            ):
                return False
    return True


async def fleet_kinds(admin: KubeClient, ns: str, logs: list[Path]) -> None:
    """VMSet, VMSnapshot (single, reverted to, scheduled) and VMClone through their
    controllers, on vcsim (the quickest at each), next to web-vsphere."""
    source = "web-vsphere"
    vm_spec = (await admin.get(VIRTUAL_MACHINES, source, ns))["spec"]

    async def create(res: Resource, name: str, spec: JSON) -> None:
        meta = {"name": name, "namespace": ns}
        await admin.create(
            res, {"apiVersion": API, "kind": res.kind, "metadata": meta, "spec": spec}
        )

    async def get(res: Resource, name: str) -> JSON | None:
        try:
            return await admin.get(res, name, ns)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def listed(res: Resource, selector: str) -> list[JSON]:
        return list((await admin.list(res, ns, label_selector=selector))["items"])

    def phase(obj: JSON | None) -> str:
        return str(((obj or {}).get("status") or {}).get("phase") or "")

    await create(VM_SNAPSHOTS, "before", {"vmRef": {"name": source}})
    # Suspended until the test says when it last fired: a firing comes at once, not at the
    # next minute.
    schedule = {"enabled": True, "cronSpec": "* * * * *", "suspend": True}
    await create(VM_SNAPSHOTS, "every-minute", {"vmRef": {"name": source}, "schedule": schedule})
    clone = {"source": {"vmRef": {"name": source}}, "target": {"name": f"{source}-copy"}}
    await create(VM_CLONES, "copy", clone | {"options": {"type": "FullClone"}})
    # The set's VMs are spread by a placement policy (two per host at most).
    anti = {"hostAntiAffinity": {"enabled": True, "maxVMsPerHost": 2}}
    await create(VM_PLACEMENT_POLICIES, "apart", {"antiAffinity": anti})
    template = {
        "metadata": {"labels": {"app": "pool"}},
        "spec": {k: v for k, v in vm_spec.items() if k != "snapshot"}
        | {"placementRef": {"name": "apart"}},
    }
    await create(
        VM_SETS,
        "pool",
        {"replicas": 2, "selector": {"matchLabels": {"app": "pool"}}, "template": template},
    )

    async def set_has(replicas: int) -> bool:
        obj = await get(VM_SETS, "pool")
        vms = await listed(VIRTUAL_MACHINES, f"{SET_LABEL}=pool")
        status = (obj or {}).get("status") or {}
        return (
            obj is not None
            and is_ready(obj)
            and status.get("availableReplicas") == replicas
            and len(vms) == replicas
            and all(is_ready(vm) for vm in vms)
        )

    async def fleet_ready() -> bool:
        sched = await get(VM_SNAPSHOTS, "every-minute")
        ready = condition(sched or {}, "Ready")
        target = await get(VIRTUAL_MACHINES, f"{source}-copy")
        return (
            phase(await get(VM_SNAPSHOTS, "before")) == "Ready"
            and ready is not None
            and ready["reason"] == "Scheduled"
            and phase(await get(VM_CLONES, "copy")) == "Ready"
            and target is not None
            and is_ready(target)
            and await set_has(2)
            and await policy_reports(2)
        )

    async def policy_reports(users: int) -> bool:
        status = (await get(VM_PLACEMENT_POLICIES, "apart") or {}).get("status") or {}
        placed = (status.get("placementStats") or {}).get("placementDistribution") or {}
        return len(status.get("usedByVMs") or []) == users and sum(placed.values()) == users

    await until(fleet_ready, 120, "the VMSet, VMSnapshots and VMClone to be Ready", logs)

    # Revert to the snapshot.
    uid = (await admin.get(VM_SNAPSHOTS, "before", ns))["metadata"]["uid"]
    await admin.patch(
        VIRTUAL_MACHINES, source, ns, {"spec": {"snapshot": {"revertToRef": {"name": "before"}}}}
    )

    async def reverted() -> bool:
        vm = await admin.get(VIRTUAL_MACHINES, source, ns)
        return is_ready(vm) and vm["status"].get("provider", {}).get("revertedTo") == uid

    await until(reverted, 60, "the revert", logs)

    # The schedule last fired two minutes ago: the missed firing is caught up at once.
    earlier = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    await admin.patch(
        VM_SNAPSHOTS,
        "every-minute",
        ns,
        {"status": {"lastScheduleTime": earlier}},
        subresource="status",
    )
    await admin.patch(VM_SNAPSHOTS, "every-minute", ns, {"spec": {"schedule": {"suspend": False}}})

    async def fired() -> bool:
        children = await listed(VM_SNAPSHOTS, f"{SCHEDULE_LABEL}=every-minute")
        return any(phase(c) == "Ready" for c in children)

    await until(fired, 60, "a scheduled snapshot", logs)
    # The schedule goes (its snapshot stays, and goes with the VM); it fires no more.
    await admin.delete(VM_SNAPSHOTS, "every-minute", ns)

    # Scale down, then delete the set: its controller deletes the VMs.
    await admin.patch(VM_SETS, "pool", ns, {"spec": {"replicas": 1}})
    await until(lambda: set_has(1), 60, "the VMSet scaled to 1", logs)
    await admin.delete(VM_SETS, "pool", ns)

    async def set_gone() -> bool:
        return await get(VM_SETS, "pool") is None and not await listed(
            VIRTUAL_MACHINES, f"{SET_LABEL}=pool"
        )

    await until(set_gone, 60, "the VMSet and its VMs to be deleted", logs)
    # A clone leaves its target behind (no garbage collector here): both are deleted.
    await admin.delete(VM_CLONES, "copy", ns)
    await admin.delete(VIRTUAL_MACHINES, f"{source}-copy", ns)


async def managed_runtime(admin: KubeClient, ns: str, stack: DevStack, logs: list[Path]) -> None:
    """A remote Provider with spec.runtime.image: the controller creates its Deployment and
    Service, replaces both when the port changes, and deletes both with the Provider."""
    spec, _ = provider_spec("libvirt", stack)
    spec |= {
        "credentialSecretRef": {"name": "libvirt-credentials"},
        "runtime": {
            "mode": "Remote",
            "image": "virtrigaud:dev",
            "service": {"port": 9443, "tls": {"enabled": False}},
        },
        "healthCheck": {"interval": "30s", "timeout": "2s"},
    }
    meta = {"name": "served", "namespace": ns}
    await admin.create(
        PROVIDERS, {"apiVersion": API, "kind": "Provider", "metadata": meta, "spec": spec}
    )
    name = f"virtrigaud-provider-{ns}-served"

    async def read(res: Resource) -> JSON | None:
        try:
            return await admin.get(res, name, ns)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def serving_on(port: int) -> bool:
        dep, svc = await read(DEPLOYMENTS), await read(SERVICES)
        if dep is None or svc is None:
            return False
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        return svc["spec"]["ports"][0]["port"] == port and f"0.0.0.0:{port}" in container["args"]

    await until(lambda: serving_on(9443), 30, "the provider server's Deployment and Service", logs)
    await admin.patch(PROVIDERS, "served", ns, {"spec": {"runtime": {"service": {"port": 9555}}}})
    await until(lambda: serving_on(9555), 30, "the provider server on the new port", logs)
    await admin.delete(PROVIDERS, "served", ns)

    async def removed() -> bool:
        return await read(DEPLOYMENTS) is None and await read(SERVICES) is None

    await until(removed, 30, "the provider server's Deployment and Service to be deleted", logs)


@pytest.mark.parametrize("scope", ["cluster", "watchNamespaces"])
async def test_the_controller_needs_exactly_the_charts_rbac(
    scope: str,
    rbac_kube: DevStack,
    admin: KubeClient,
    dev_stack: DevStack,
    vcsim_info: Any,
    pve_info: Any,
    libvirt_image: str,
    redis_url: str,
    ray_address: str,
    clean_shards: None,
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    release_ns, vm_ns, idle_ns = f"vr-system-{suffix}", f"vms-{suffix}", f"idle-{suffix}"
    for ns in (release_ns, vm_ns, idle_ns):
        await admin.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        )
    values: JSON = {
        "ray": {"mode": "external", "address": ray_address},
        "redis": {"url": redis_url},
        "shards": 2,
        # Only where Providers are: a Role in a namespace without one would go unused.
        "rbac": {"secretNamespaces": [vm_ns]},
    }
    if scope == "watchNamespaces":  # a watch per namespace and kind; Roles, no ClusterRole
        values["watchNamespaces"] = [vm_ns, idle_ns]
    objects = render(values, release_ns)
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    for obj in objects:
        if obj["kind"] in RBAC_KINDS:
            res = RBAC_KINDS[obj["kind"]]
            if res.namespaced:
                obj["metadata"].setdefault("namespace", release_ns)
            await admin.apply(res, obj, field_manager="helm")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    sa_user, sa_groups = service_account(
        release_ns, deployment["spec"]["template"]["spec"]["serviceAccountName"]
    )
    sa = rbac_kube.add_kube_user(sa_user, sa_groups)
    await vm_objects(admin, vm_ns, dev_stack, libvirt_image)

    instance = Instance(release_ns, FULLNAME)  # what the chart's --instance names
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = Controller(controller_command(deployment, "a", sa.kubeconfig), logs[0])
    b: Controller | None = None
    names = [f"web-{t}" for t in PROVIDER_TYPES]

    async def holder() -> str:
        try:
            lease = await admin.get(LEASES, instance.lease, release_ns)
        except ApiError as e:
            if e.not_found:
                return ""
            raise
        return str(lease["spec"].get("holderIdentity") or "")

    async def all_ready() -> bool:
        vms = [await admin.get(VIRTUAL_MACHINES, n, vm_ns) for n in names]
        return all(is_ready(vm) for vm in vms)

    try:
        await until(lambda: _eq(holder(), "a"), 60, "a to lead", logs)
        b = Controller(controller_command(deployment, "b", sa.kubeconfig), logs[1])
        await until(all_ready, 120, "the VMs to be Ready", logs)
        await until(lambda: dependencies_reported(admin, vm_ns), 30, "their status", logs)

        # Resize: a bigger class.
        await admin.patch(
            VIRTUAL_MACHINES, "web-vsphere", vm_ns, {"spec": {"classRef": {"name": "medium"}}}
        )
        await until(all_ready, 60, "the resize", logs)

        # Failover: the leader dies; the standby takes the Lease and the running shards.
        a.kill()
        await until(lambda: _eq(holder(), "b"), 30, "b to lead", logs)
        await admin.patch(CONFIG_MAPS, instance.config_map, release_ns, {"data": {"shards": "3"}})
        await admin.patch(VIRTUAL_MACHINES, "web-libvirt", vm_ns, {"spec": {"powerState": "Off"}})
        await until(all_ready, 60, "a change after the failover", logs)
        await admin.patch(VIRTUAL_MACHINES, "web-libvirt", vm_ns, {"spec": {"powerState": "On"}})
        await until(all_ready, 60, "a second power change", logs)

        await fleet_kinds(admin, vm_ns, logs)
        await managed_runtime(admin, vm_ns, dev_stack, logs)

        for n in names:
            await admin.delete(VIRTUAL_MACHINES, n, vm_ns)

        async def gone() -> bool:
            left = [await admin.list(res, vm_ns) for res in (VIRTUAL_MACHINES, VM_SNAPSHOTS)]
            return not any(found["items"] for found in left)

        await until(gone, 60, "the VMs and their VMSnapshots to be deleted", logs)

        # A Provider's finalizer goes once no VM uses it.
        for t in PROVIDER_TYPES:
            await admin.delete(PROVIDERS, t, vm_ns)

        async def providers_gone() -> bool:
            return not (await admin.list(PROVIDERS, vm_ns))["items"]

        await until(providers_gone, 30, "the Providers to be deleted", logs)
    except BaseException:
        # A denial mostly shows as a step that never completes: say which.
        print("denied:", denials(rbac_kube, sa_user))
        raise
    finally:
        a.stop()
        if b is not None:
            b.stop()

    info = rbac_kube.info().kube
    assert isinstance(info, KubeInfo)
    mine = [d for d in read_decisions(info.authz_log) if d.user == sa_user]
    assert denials(rbac_kube, sa_user) == []
    assert unused_grants(roles, mine) == []
    # The exception stays honest: the chart grants it, and nothing ever asked for it.
    granted = {
        (resource, verb)
        for role in roles
        for rule in role.get("rules") or []
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert set(ADMISSION_ONLY) <= granted
    checked = {(f"{d.resource}/{d.subresource}", d.verb) for d in mine if d.subresource}
    assert not checked & set(ADMISSION_ONLY), checked & set(ADMISSION_ONLY)


def denials(rbac_kube: DevStack, user: str) -> list[str]:
    info = rbac_kube.info().kube
    assert isinstance(info, KubeInfo)
    decisions = read_decisions(info.authz_log)
    return sorted({d.describe() for d in decisions if d.user == user and not d.allowed})


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
