"""`virtrigaud demo` (`make demo`): the whole system converging on one machine.

Starts the dev stack (API server, vcsim, libvirtd test driver, fakepve, Redis, Ray),
applies the CRDs' sample objects from ``demo/`` (one Provider per simulator, VMClasses,
VMImages), creates ~60 VirtualMachines across the three providers, starts the sharded
controller (`virtrigaud run`, 3 shards) as a subprocess, shows progress until every VM is
Ready, reconfigures one running VM, prints a summary (VMs per provider and shard, time to
Ready, hypervisor calls from the shards' Prometheus endpoints; Provider health and image
readiness from their status), then deletes the VMs
(through the finalizers, so the hypervisors end empty) and shuts everything down.
Exits non-zero when anything does not converge within the timeout.

With `--ray-nodes N` the Ray part is a cluster: a head with no CPUs and N worker nodes on
loopback addresses of their own; the controller joins it as a zero-CPU node and the demo
shows, from Ray's state API, which worker node hosts each shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from virtrigaud import API_VERSION
from virtrigaud.dev.config import RayOptions, StackConfig
from virtrigaud.dev.info import StackInfo
from virtrigaud.dev.libvirtd import SAMPLE_POOL, SAMPLE_VOLUME, ensure_libvirt_base_volume
from virtrigaud.dev.stack import DevStack
from virtrigaud.kube.client import ApiError, KubeClient, WatchEvent
from virtrigaud.kube.resources import (
    LEASES,
    NAMESPACES,
    PROVIDERS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_IMAGES,
    VM_SETS,
    VM_SNAPSHOTS,
    Resource,
)

JSON = dict[str, Any]

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
VM_NAMESPACE = "virtrigaud-demo"
PROVIDER_NAMESPACE = "default"
FIELD_MANAGER = "virtrigaud-demo"
# Where `virtrigaud run` keeps its leader Lease (its defaults).
CONTROLLER_NAMESPACE = "virtrigaud-system"
LEADER_LEASE = "virtrigaud-leader"
LIBVIRT_POOL = SAMPLE_POOL
LIBVIRT_BASE_VOLUME = SAMPLE_VOLUME

# provider name -> image name (both from demo/*.yaml)
PROVIDERS_AND_IMAGES = {
    "vcsim": "vsphere-template",
    "libvirt": "libvirt-base",
    "proxmox": "proxmox-debian",
}
CLASSES = ("small", "small", "medium", "large")
KINDS: dict[str, Resource] = {
    "Provider": PROVIDERS,
    "VMClass": VM_CLASSES,
    "VMImage": VM_IMAGES,
    "VirtualMachine": VIRTUAL_MACHINES,
    "VMSet": VM_SETS,
    "VMSnapshot": VM_SNAPSHOTS,
}
DEMO_SET = "web"
DEMO_SET_REPLICAS = 10
DEMO_SCHEDULE = "every-minute"
SET_LABEL = "vmset.infra.virtrigaud.io/name"
SCHEDULE_LABEL = "snapshot.infra.virtrigaud.io/schedule"

console = Console()


class DemoFailed(Exception):
    pass


# ---------------------------------------------------------------------------------- objects


def demo_set() -> JSON:
    """A VMSet of 10 libvirt VMs, scaled in parallel."""
    return {
        "apiVersion": API_VERSION,
        "kind": "VMSet",
        "metadata": {"name": DEMO_SET, "namespace": VM_NAMESPACE},
        "spec": {
            "replicas": DEMO_SET_REPLICAS,
            "selector": {"matchLabels": {"app": DEMO_SET}},
            "updateStrategy": {"rollingUpdate": {"podManagementPolicy": "Parallel"}},
            "template": {
                "metadata": {"labels": {"app": DEMO_SET}},
                "spec": {
                    "providerRef": {"name": "libvirt", "namespace": PROVIDER_NAMESPACE},
                    "classRef": {"name": "small"},
                    "imageRef": {"name": PROVIDERS_AND_IMAGES["libvirt"]},
                    "powerState": "On",
                },
            },
        },
    }


def demo_schedule(vm: str) -> JSON:
    """A snapshot of vm every minute, the newest 2 kept."""
    return {
        "apiVersion": API_VERSION,
        "kind": "VMSnapshot",
        "metadata": {"name": DEMO_SCHEDULE, "namespace": VM_NAMESPACE},
        "spec": {
            "vmRef": {"name": vm},
            "schedule": {"enabled": True, "cronSpec": "* * * * *"},
            "retentionPolicy": {"maxCount": 2},
        },
    }


def render_templates(values: dict[str, str]) -> list[JSON]:
    """demo/*.yaml (minus the human-only sample) with ${...} filled in, as objects."""
    objects: list[JSON] = []
    for name in ("providers.yaml", "classes.yaml", "images.yaml"):
        text = string.Template((DEMO_DIR / name).read_text()).substitute(values)
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def template_values(info: StackInfo) -> dict[str, str]:
    if info.vcsim is None or info.libvirt is None or info.proxmox is None:
        raise DemoFailed("the dev stack is missing a simulator; run `virtrigaud dev up`")
    return {
        "vcsim_url": info.vcsim.url,
        "libvirt_uri": info.libvirt.uri,
        "proxmox_url": info.proxmox.url,
        "vm_namespace": VM_NAMESPACE,
    }


def sample_vms(count: int) -> list[JSON]:
    """count VMs spread over the providers, mixed classes, every fifth one powered off."""
    vms: list[JSON] = []
    providers = list(PROVIDERS_AND_IMAGES)
    for i in range(count):
        provider = providers[i % len(providers)]
        vms.append(
            {
                "apiVersion": API_VERSION,
                "kind": "VirtualMachine",
                "metadata": {
                    "name": f"{provider}-vm-{i:03d}",
                    "namespace": VM_NAMESPACE,
                    "labels": {"app.kubernetes.io/part-of": "virtrigaud-demo"},
                },
                "spec": {
                    "providerRef": {"name": provider, "namespace": PROVIDER_NAMESPACE},
                    "classRef": {"name": CLASSES[i % len(CLASSES)]},
                    "imageRef": {"name": PROVIDERS_AND_IMAGES[provider]},
                    "powerState": "Off" if i % 5 == 4 else "On",
                    "tags": ["demo", f"index={i}"],
                },
            }
        )
    return vms


async def apply_all(kube: KubeClient, objects: list[JSON], parallel: int = 16) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(obj: JSON) -> None:
        async with gate:
            await kube.apply(KINDS[obj["kind"]], obj, field_manager=FIELD_MANAGER)

    await asyncio.gather(*(one(o) for o in objects))


async def ensure_namespace(kube: KubeClient, name: str) -> None:
    try:
        await kube.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
    except ApiError as e:
        if not e.conflict:
            raise


# ---------------------------------------------------------------------------------- tracking


def _ready(obj: JSON) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@dataclass
class Tracker:
    """What the watch has shown of the demo's VMs."""

    created_at: dict[str, float] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)
    objects: dict[str, JSON] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def see(self, event: WatchEvent) -> None:
        name = event.object.get("metadata", {}).get("name")
        if not name or event.type == "BOOKMARK":
            return
        if event.type == "DELETED":
            self.deleted.add(name)
            self.objects.pop(name, None)
            return
        self.objects[name] = event.object
        if _ready(event.object):
            self.ready_at.setdefault(name, time.monotonic())
        else:
            self.ready_at.pop(name, None)

    def ready_count(self) -> int:
        return sum(1 for name in self.created_at if name in self.ready_at)

    def seconds_to_ready(self) -> list[float]:
        return sorted(
            self.ready_at[n] - self.created_at[n] for n in self.created_at if n in self.ready_at
        )


async def watch_vms(kube: KubeClient, tracker: Tracker, stop: asyncio.Event) -> None:
    """Keep tracker current from a watch (relisting on 410 or a dropped stream)."""
    while not stop.is_set():
        items, rv = await kube.list_all(VIRTUAL_MACHINES, VM_NAMESPACE)
        for item in items:
            tracker.see(WatchEvent("ADDED", item))
        try:
            async for event in kube.watch(
                VIRTUAL_MACHINES, VM_NAMESPACE, resource_version=rv, timeout_seconds=60
            ):
                tracker.see(event)
                if stop.is_set():
                    return
        except ApiError as e:
            # 410: relist. 429 and 5xx (e.g. "storage is (re)initializing" right after new
            # CRDs): the server asks to come back; a dead watch would stall the demo.
            if not (e.gone or e.status == 429 or e.status >= 500):
                raise
            await asyncio.sleep(0.5)
        except (TimeoutError, OSError):
            await asyncio.sleep(0.5)


def progress_view(tracker: Tracker, step: Step, started: float) -> Group:
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[n]}"))
    done = step.done()
    bar.add_task(step.title, total=step.total, completed=done, n=f"{done}/{step.total} {step.unit}")
    table = Table(title=f"{time.monotonic() - started:5.1f} s", expand=False)
    table.add_column("provider")
    for phase in ("Pending", "Provisioning", "Running", "Stopped", "Failed", "other"):
        table.add_column(phase, justify="right")
    counts: dict[str, dict[str, int]] = {p: {} for p in PROVIDERS_AND_IMAGES}
    for obj in tracker.objects.values():
        provider = obj["spec"]["providerRef"]["name"]
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        if phase not in ("Pending", "Provisioning", "Running", "Stopped", "Failed"):
            phase = "other"
        counts.setdefault(provider, {})[phase] = counts.get(provider, {}).get(phase, 0) + 1
    for provider, by_phase in counts.items():
        table.add_row(
            provider,
            *(
                str(by_phase.get(p, 0))
                for p in ("Pending", "Provisioning", "Running", "Stopped", "Failed", "other")
            ),
        )
    return Group(bar, table)


@dataclass(frozen=True)
class Step:
    """One thing the demo waits for: done() counts up to total."""

    title: str
    total: int
    unit: str
    done: Callable[[], int]


async def wait_until(step: Step, tracker: Tracker, timeout: float) -> None:
    started = time.monotonic()
    with Live(progress_view(tracker, step, started), console=console, refresh_per_second=4) as live:
        while step.done() < step.total:
            if time.monotonic() - started > timeout:
                raise DemoFailed(f"{step.title}: not done within {timeout:.0f} s")
            await asyncio.sleep(0.25)
            live.update(progress_view(tracker, step, started))
        live.update(progress_view(tracker, step, started))


def not_ready_report(tracker: Tracker) -> str:
    lines = []
    for name in sorted(tracker.created_at):
        if name in tracker.ready_at:
            continue
        obj = tracker.objects.get(name, {})
        conditions: list[JSON] = (obj.get("status") or {}).get("conditions") or []
        ready: JSON = next((c for c in conditions if c["type"] == "Ready"), {})
        lines.append(f"  {name}: {ready.get('reason', 'no status')}: {ready.get('message', '')}")
    return "\n".join(lines[:20])


# ---------------------------------------------------------------------------------- controller


@dataclass
class Controller:
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, grace: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_controller(
    info: StackInfo, shards: int, log_path: Path, metrics_port: int, shard_metrics_port: int
) -> Controller:
    """`virtrigaud run` against the dev stack, as a subprocess (its own process group)."""
    if info.kube is None or info.redis is None or info.ray is None:
        raise DemoFailed("the dev stack lacks kube, redis or ray")
    exe = shutil.which("virtrigaud", path=str(Path(sys.executable).parent)) or shutil.which(
        "virtrigaud"
    )
    if exe is None:
        raise DemoFailed("the `virtrigaud` command is not installed; run `make setup`")
    env = dict(os.environ)
    env.update(info.ray.env)
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    command = [
        exe,
        "run",
        "--kubeconfig",
        info.kube.kubeconfig,
        "--redis-url",
        info.redis.url,
        "--ray-address",
        info.ray.address,
        "--shards",
        str(shards),
        "--metrics-port",
        str(metrics_port),
        "--shard-metrics-port",
        str(shard_metrics_port),
        # The demo owns its shards: they go when the controller does.
        "--shutdown-shards-on-exit",
    ]
    if info.ray.controller_ips:
        # A multi-node cluster: join it as a node of its own (no CPUs, no shards).
        command += ["--ray-node-ip", info.ray.controller_ips[0]]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return Controller(process, log_path)


async def wait_for_leader(kube: KubeClient, controller: Controller, timeout: float) -> str:
    """The controller's identity once it holds the leader Lease (then it runs shards)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if controller.process.poll() is not None:
            raise DemoFailed(
                f"the controller exited with code {controller.process.returncode}; "
                f"see {controller.log_path}"
            )
        try:
            lease = await kube.get(LEASES, LEADER_LEASE, CONTROLLER_NAMESPACE)
            holder = (lease.get("spec") or {}).get("holderIdentity")
            if holder:
                return str(holder)
        except ApiError as e:
            if not e.not_found:
                raise
        await asyncio.sleep(0.25)
    raise DemoFailed(f"the controller did not become leader within {timeout:.0f} s")


async def wait_for_shards(controller: Controller, ports: range, timeout: float) -> None:
    """Each shard serves /metrics once it is built: then it takes keys at full speed."""
    deadline = time.monotonic() + timeout
    waiting = list(ports)
    while waiting:
        if controller.process.poll() is not None:
            raise DemoFailed(f"the controller exited; see {controller.log_path}")
        if time.monotonic() > deadline:
            raise DemoFailed(f"shard metrics ports {waiting} not serving within {timeout:.0f} s")
        still = []
        for port in waiting:
            try:
                await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
            except OSError:
                still.append(port)
        waiting = still
        if waiting:
            await asyncio.sleep(0.25)


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (no client needed)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)
    return values


def hypervisor_calls(metrics: dict[str, float]) -> dict[str, float]:
    """Calls per Provider from virtrigaud_hypervisor_calls_total samples."""
    per_provider: dict[str, float] = {}
    for name, value in metrics.items():
        if not name.startswith("virtrigaud_hypervisor_calls_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in name[name.index("{") + 1 : -1].split(",") if "=" in part
        )
        provider = labels.get("provider", "?").strip('"')
        per_provider[provider] = per_provider.get(provider, 0.0) + value
    return per_provider


def free_port_run(count: int) -> int:
    """A base port with count free consecutive loopback ports after it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise DemoFailed(f"found no {count} free consecutive ports on 127.0.0.1")


# ---------------------------------------------------------------------------------- summary


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summary(tracker: Tracker, calls: dict[str, float]) -> Table:
    table = Table(title="VirtRigaud demo: summary")
    table.add_column("provider")
    table.add_column("VMs", justify="right")
    table.add_column("per shard")
    table.add_column("Ready p50 / p99 (s)", justify="right")
    table.add_column("hypervisor calls", justify="right")
    table.add_column("calls / VM", justify="right")
    by_provider: dict[str, list[str]] = {}
    for name in tracker.created_at:
        obj = tracker.objects.get(name)
        if obj is not None:
            by_provider.setdefault(obj["spec"]["providerRef"]["name"], []).append(name)
    for provider, names in sorted(by_provider.items()):
        shards: dict[str, int] = {}
        for n in names:
            shard = (tracker.objects[n].get("status") or {}).get("shard") or "?"
            shards[shard] = shards.get(shard, 0) + 1
        times = sorted(
            tracker.ready_at[n] - tracker.created_at[n] for n in names if n in tracker.ready_at
        )
        n_calls = calls.get(f"{PROVIDER_NAMESPACE}/{provider}", 0.0)
        table.add_row(
            provider,
            str(len(names)),
            ", ".join(f"{s}: {c}" for s, c in sorted(shards.items())),
            f"{percentile(times, 50):.2f} / {percentile(times, 99):.2f}",
            f"{n_calls:.0f}",
            f"{n_calls / len(names):.1f}" if names else "-",
        )
    return table


def _condition(obj: JSON, type_: str) -> JSON:
    found = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_),
        None,
    )
    return found or {}


async def health_table(kube: KubeClient) -> Table:
    """Provider health and image readiness, as their controllers wrote them in status."""
    table = Table(title="Providers and images (from their status)")
    table.add_column("object")
    table.add_column("Ready")
    table.add_column("details")
    providers, _ = await kube.list_all(PROVIDERS, PROVIDER_NAMESPACE)
    for obj in sorted(providers, key=lambda o: str(o["metadata"]["name"])):
        st = obj.get("status") or {}
        ready = _condition(obj, "Ready")
        table.add_row(
            f"Provider {obj['metadata']['name']}",
            f"{ready.get('status', '?')} ({ready.get('reason', '-')})",
            f"version {st.get('version', '?')}, {st.get('connectedVMs', 0)} VMs, "
            f"capabilities: {', '.join(st.get('capabilities') or []) or '-'}",
        )
    images, _ = await kube.list_all(VM_IMAGES, VM_NAMESPACE)
    for obj in sorted(images, key=lambda o: str(o["metadata"]["name"])):
        st = obj.get("status") or {}
        ready = _condition(obj, "Ready")
        table.add_row(
            f"VMImage {obj['metadata']['name']}",
            f"{ready.get('status', '?')} ({ready.get('reason', '-')})",
            f"phase {st.get('phase', '?')}, on: {', '.join(st.get('availableOn') or []) or '-'}",
        )
    return table


# ---------------------------------------------------------------------------------- driver


@dataclass
class DemoOptions:
    vms: int
    shards: int
    timeout: float
    state_dir: Path
    keep: bool
    metrics_port: int
    ray_nodes: int = 0


def stack_config(options: DemoOptions) -> StackConfig:
    if not options.ray_nodes:
        return StackConfig()
    # Room for every shard on each node, so the survivors can take a lost node's shards.
    return StackConfig(
        ray=RayOptions(worker_nodes=options.ray_nodes, shards_per_node=options.shards)
    )


def memory_table(info: StackInfo, controller_pid: int) -> Table | None:
    """PSS of each Ray node (without its shards), of each shard on it, and of the
    controller (with the Ray node it joined from, if any)."""
    if info.ray is None:
        return None
    from virtrigaud.dev.memory import node_memory, tree_pss_bytes

    mib = 2**20
    table = Table(title="memory (PSS, MiB)")
    table.add_column("Ray node")
    table.add_column("node without shards", justify="right")
    table.add_column("shards", justify="right")
    table.add_column("each shard", justify="right")
    for mem in node_memory(info.ray):
        each = ", ".join(f"{size / mib:.0f}" for size in sorted(mem.shards.values()))
        table.add_row(
            f"{mem.name} ({mem.ip})", f"{mem.base_bytes / mib:.0f}", str(len(mem.shards)), each
        )
    controller = tree_pss_bytes(controller_pid)
    table.add_row("controller (+ its own node)", f"{controller / mib:.0f}", "0", "")
    return table


def placement_table(info: StackInfo) -> Table | None:
    """Shard -> Ray node, from the state API (multi-node clusters only)."""
    if info.ray is None or not info.ray.dashboard_url:
        return None
    from virtrigaud.shards.locate import shard_locations

    names = {n.ip: n.name for n in info.ray.nodes}
    table = Table(title="shards on Ray nodes (Ray state API)")
    table.add_column("shard")
    table.add_column("node")
    table.add_column("address")
    table.add_column("pid", justify="right")
    for shard, where in sorted(shard_locations(info.ray.dashboard_url).items()):
        table.add_row(shard, names.get(where.node_ip, "?"), where.node_ip, str(where.pid))
    return table


@contextlib.contextmanager
def dev_stack(options: DemoOptions) -> Iterator[StackInfo]:
    stack = DevStack(options.state_dir, stack_config(options))
    already = set(stack.info().running_parts())
    with console.status("starting the dev stack (API server, simulators, Redis, Ray)..."):
        info = stack.up()
    console.print(f"dev stack up in {options.state_dir}")
    try:
        yield info
    finally:
        if options.keep or already:
            console.print(f"dev stack left running ({options.state_dir})")
        else:
            with console.status("stopping the dev stack..."):
                stack.down()


async def run_demo(options: DemoOptions, info: StackInfo) -> None:
    assert info.kube is not None and info.libvirt is not None
    ensure_libvirt_base_volume(info.libvirt.uri)
    kube = KubeClient.from_kubeconfig(info.kube.kubeconfig)
    tracker = Tracker()
    stop = asyncio.Event()
    controller: Controller | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        await ensure_namespace(kube, VM_NAMESPACE)
        await apply_all(kube, render_templates(template_values(info)))
        vms = sample_vms(options.vms)
        watcher = asyncio.create_task(watch_vms(kube, tracker, stop))
        log_path = options.state_dir / "logs" / "controller.log"
        shard_ports = free_port_run(options.shards)
        controller = start_controller(
            info, options.shards, log_path, options.metrics_port, shard_ports
        )
        console.print(f"controller started (pid {controller.process.pid}, log {log_path})")
        with console.status("waiting for the controller to lead and its shards to serve..."):
            await wait_for_leader(kube, controller, options.timeout)
            ports = range(shard_ports, shard_ports + options.shards)
            await wait_for_shards(controller, ports, options.timeout)
        console.print(f"controller ready: leader, {options.shards} shards serving")
        placed = await asyncio.to_thread(placement_table, info)
        if placed is not None:
            console.print(placed)
        now = time.monotonic()
        for vm in vms:
            tracker.created_at[vm["metadata"]["name"]] = now
        await apply_all(kube, vms)
        total = len(vms)
        try:
            await wait_until(
                Step("VMs converging", total, "Ready", tracker.ready_count),
                tracker,
                options.timeout,
            )
        except DemoFailed:
            console.print(not_ready_report(tracker))
            raise

        # Reconfigure one running VM in place (vSphere applies CPU changes online).
        target = next(
            v["metadata"]["name"]
            for v in vms
            if v["spec"]["providerRef"]["name"] == "vcsim" and v["spec"]["powerState"] == "On"
        )
        await kube.patch(
            VIRTUAL_MACHINES, target, VM_NAMESPACE, {"spec": {"resources": {"cpu": 3}}}
        )

        def reconfigured() -> int:
            obj = tracker.objects.get(target)
            if obj is None or not _ready(obj):
                return 0
            return int(((obj.get("status") or {}).get("currentResources") or {}).get("cpu") == 3)

        await wait_until(
            Step(f"reconfigure {target} to 3 CPUs", 1, "done", reconfigured),
            tracker,
            options.timeout,
        )
        console.print(f"reconfigured {target} while running: 3 CPUs")
        await fleet_steps(kube, tracker, target, options.timeout)

        calls: dict[str, float] = {}
        for port in range(shard_ports, shard_ports + options.shards):
            for provider, n in hypervisor_calls(scrape(f"http://127.0.0.1:{port}/metrics")).items():
                calls[provider] = calls.get(provider, 0.0) + n
        console.print(summary(tracker, calls))
        console.print(await health_table(kube))
        memory = await asyncio.to_thread(memory_table, info, controller.process.pid)
        if memory is not None:
            console.print(memory)

        # Clean up through the controller: finalizers delete the hypervisor VMs.
        for vm in vms:
            with contextlib.suppress(ApiError):
                await kube.delete(VIRTUAL_MACHINES, vm["metadata"]["name"], VM_NAMESPACE)
        await wait_until(
            Step(
                "deleting VMs",
                total,
                "deleted",
                lambda: sum(1 for n in tracker.created_at if n in tracker.deleted),
            ),
            tracker,
            options.timeout,
        )
        console.print("all VMs deleted (and their hypervisor VMs with them)")
    finally:
        stop.set()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        if controller is not None:
            with console.status("stopping the controller..."):
                code = controller.stop()
            console.print(f"controller stopped (exit code {code})")
        await kube.close()


async def fleet_steps(kube: KubeClient, tracker: Tracker, vm: str, timeout: float) -> None:
    """A VMSet of 10 converging, and the first snapshot of an every-minute schedule."""

    def set_vms() -> list[JSON]:
        return [
            o
            for o in tracker.objects.values()
            if (o["metadata"].get("labels") or {}).get(SET_LABEL) == DEMO_SET
        ]

    await apply_all(kube, [demo_set(), demo_schedule(vm)])
    await wait_until(
        Step(
            f"VMSet {DEMO_SET}",
            DEMO_SET_REPLICAS,
            "Ready",
            lambda: sum(1 for o in set_vms() if _ready(o)),
        ),
        tracker,
        timeout,
    )
    console.print(f"VMSet {DEMO_SET}: {DEMO_SET_REPLICAS} VirtualMachines Ready")

    taken: list[str] = []

    async def first_snapshot() -> None:
        deadline = time.monotonic() + 75 + timeout
        while time.monotonic() < deadline:
            listed = await kube.list(
                VM_SNAPSHOTS, VM_NAMESPACE, label_selector=f"{SCHEDULE_LABEL}={DEMO_SCHEDULE}"
            )
            taken[:] = [
                i["metadata"]["name"]
                for i in listed.get("items", [])
                if (i.get("status") or {}).get("phase") == "Ready"
            ]
            if taken:
                return
            await asyncio.sleep(1.0)
        raise DemoFailed(f"schedule {DEMO_SCHEDULE}: no snapshot Ready within a minute and more")

    with console.status(f"waiting for the first firing of schedule {DEMO_SCHEDULE} (* * * * *)"):
        await first_snapshot()
    console.print(f"snapshot schedule {DEMO_SCHEDULE} on {vm}: took {taken[0]}")

    # The schedule stops; its snapshots go with their VM when the demo's VMs are deleted.
    with contextlib.suppress(ApiError):
        await kube.delete(VM_SNAPSHOTS, DEMO_SCHEDULE, VM_NAMESPACE)
    await kube.delete(VM_SETS, DEMO_SET, VM_NAMESPACE)
    await wait_until(
        Step(
            f"deleting VMSet {DEMO_SET}",
            DEMO_SET_REPLICAS,
            "deleted",
            lambda: DEMO_SET_REPLICAS - len(set_vms()),
        ),
        tracker,
        timeout,
    )
    console.print(f"VMSet {DEMO_SET} deleted with its VirtualMachines")


def demo_command(
    vms: Annotated[int, typer.Option(help="How many sample VMs to create.")] = 60,
    shards: Annotated[int, typer.Option(help="Shard actors the controller runs.")] = 3,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for convergence before failing.")
    ] = 300.0,
    state_dir: Annotated[
        Path, typer.Option(help="Dev stack state directory (reused when it runs already).")
    ] = Path(".state/demo"),
    keep: Annotated[bool, typer.Option(help="Leave the dev stack running afterwards.")] = False,
    metrics_port: Annotated[
        int, typer.Option(help="Coordinator metrics port (0: any free port).")
    ] = 0,
    ray_nodes: Annotated[
        int,
        typer.Option(
            min=0,
            max=16,
            help="Ray worker nodes hosting the shards (0: one Ray node runs everything).",
        ),
    ] = 0,
) -> None:
    """Dev stack + sharded controller + sample VMs converging, then a summary."""
    options = DemoOptions(vms, shards, timeout, state_dir.resolve(), keep, metrics_port, ray_nodes)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.monotonic()
    try:
        with dev_stack(options) as info:
            asyncio.run(run_demo(options, info))
    except DemoFailed as e:
        console.print(f"[red]demo failed:[/red] {e}")
        raise typer.Exit(1) from e
    console.print(f"[green]demo done in {time.monotonic() - started:.0f} s[/green]")


if __name__ == "__main__":
    typer.run(demo_command)
