"""`virtrigaud dev up/down/status/env`: the local stack from the command line."""

from __future__ import annotations

import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from virtrigaud.dev import kubeauth
from virtrigaud.dev import remote_providers as remote_providers_mod
from virtrigaud.dev.authzlog import read_decisions
from virtrigaud.dev.config import ProxmoxOptions, RayOptions, StackConfig
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import PARTS, StackInfo, VcsimInventory
from virtrigaud.dev.stack import DevStack, parse_parts

dev_app = typer.Typer(help="The local dev stack: API server, simulators, Redis and Ray.")
console = Console()
err_console = Console(stderr=True)

DEFAULT_STATE_DIR = Path(".state/dev")
StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where the stack keeps its files and stack.json.")
]


def _fail(e: StackError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {e}", soft_wrap=True, highlight=False)
    return typer.Exit(1)


class _ProgressView:
    """Feeds the stack's progress(stage, done, total) calls into one rich progress line."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.stage = ""
        self.task: TaskID | None = None
        self.lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self.lock:
            if stage != self.stage or self.task is None:
                # A new line per stage: rich cannot turn a counted task back into a spinner.
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.stage = stage
                self.task = self.progress.add_task(stage, total=total or None, completed=done)
            else:
                self.progress.update(self.task, completed=done)


@dev_app.command()
def up(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    parts: Annotated[
        str, typer.Option(help=f"Comma-separated parts to start: {','.join(PARTS)}.")
    ] = ",".join(PARTS),
    kube_port: Annotated[int | None, typer.Option(help="Fixed API server port.")] = None,
    vcsim_port: Annotated[int | None, typer.Option(help="Fixed vcsim port.")] = None,
    proxmox_port: Annotated[int | None, typer.Option(help="Fixed fakepve port.")] = None,
    redis_port: Annotated[int | None, typer.Option(help="Fixed Redis port.")] = None,
    ray_port: Annotated[int | None, typer.Option(help="Fixed Ray GCS port.")] = None,
    vcsim_hosts: Annotated[int, typer.Option(help="vcsim hosts per cluster.")] = 3,
    vcsim_clusters: Annotated[int, typer.Option(help="vcsim clusters per datacenter.")] = 1,
    vcsim_vms: Annotated[int, typer.Option(help="vcsim VMs per resource pool.")] = 2,
    pve_nodes: Annotated[int, typer.Option(help="Proxmox nodes pve1..pveN.")] = 3,
    pve_time_scale: Annotated[
        float, typer.Option(help="Real seconds per PVE second (0: tasks finish at once).")
    ] = 0.0,
    ray_cpus: Annotated[int, typer.Option(help="CPUs the Ray head offers.")] = 2,
    rbac: Annotated[
        bool,
        typer.Option(
            "--rbac",
            help="API server with token authentication and RBAC; decisions logged "
            "(see `dev kube-user` and `dev decisions`).",
        ),
    ] = False,
    remote_providers: Annotated[
        bool,
        typer.Option(
            help="Also run each simulator's provider as a provider.v1 server with mTLS "
            "(a private CA and certificates in STATE_DIR/pki)."
        ),
    ] = False,
    ray_nodes: Annotated[
        int,
        typer.Option(
            min=0,
            max=16,
            help="Ray worker nodes: 0 runs one node; N starts a head with no CPUs plus N "
            "worker nodes on loopback addresses of their own, which host the shards.",
        ),
    ] = 0,
    ray_shards_per_node: Annotated[
        int, typer.Option(min=1, help="Shard actors each Ray worker node may host.")
    ] = 4,
    ray_node_memory_mb: Annotated[
        int, typer.Option(min=64, help="Memory (MiB) each Ray worker node offers to actors.")
    ] = 2048,
) -> None:
    """Start the parts that are not running yet and print where they are."""
    config = StackConfig(
        kube_port=kube_port,
        kube_rbac=rbac,
        vcsim_port=vcsim_port,
        proxmox_port=proxmox_port,
        redis_port=redis_port,
        ray_port=ray_port,
        vcsim=VcsimInventory(
            clusters=vcsim_clusters, hosts_per_cluster=vcsim_hosts, vms_per_pool=vcsim_vms
        ),
        proxmox=ProxmoxOptions(nodes=pve_nodes, time_scale=pve_time_scale),
        ray=RayOptions(
            num_cpus=ray_cpus,
            worker_nodes=ray_nodes,
            shards_per_node=ray_shards_per_node,
            node_memory_mb=ray_node_memory_mb,
        ),
    )
    stack = DevStack(state_dir, config)
    began = time.monotonic()
    before = set(stack.info().running_parts())
    try:
        wanted = parse_parts(parts)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            info = stack.up(wanted, progress=_ProgressView(progress))
            remote = None
            if remote_providers:
                progress.add_task("remote provider servers (mTLS)", total=None)
                remote = remote_providers_mod.start(stack.state_dir, info)
    except StackError as e:
        raise _fail(e) from e
    _print_summary(info, wanted, before)
    if remote is not None:
        for server in remote.servers.values():
            console.print(f"remote {server.type} provider: {server.address} (mTLS)")
        console.print(f"client certificate for them: {remote.client_tls_dir}")
    console.print(f"up in {time.monotonic() - began:.1f}s; state in {stack.state_dir}")
    console.print(f'eval "$({virtrigaud_command()} dev env --state-dir {stack.state_dir})"')


def virtrigaud_command() -> str:
    """How to run this CLI again from any shell: the entry point installed beside this
    interpreter (a bare `python` may be another one, without virtrigaud)."""
    script = Path(sys.executable).with_name("virtrigaud")
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m virtrigaud.cli"


def _print_summary(info: StackInfo, wanted: list[str], before: set[str]) -> None:
    table = Table(title="virtrigaud dev stack")
    table.add_column("part")
    table.add_column("address")
    table.add_column("version")
    table.add_column("start (s)", justify="right")
    for name in wanted:
        part = info.part(name)
        if part is None:
            continue
        started = "running" if name in before else f"{part.start_seconds:.2f}"
        table.add_row(name, part.address, part.version, started)
    console.print(table)
    if info.ray is not None and len(info.ray.nodes) > 1:
        nodes = ", ".join(f"{n.name} {n.ip}" for n in info.ray.nodes)
        console.print(f"ray nodes: {nodes}; state API at {info.ray.dashboard_url}")
        console.print(
            f"controllers join from their own node: --ray-node-ip "
            f"{' | '.join(info.ray.controller_ips)}"
        )
    if info.kube is not None:
        console.print(f"kubeconfig: {info.kube.kubeconfig}")
        if info.kube.crds:
            console.print(f"CRDs established: {len(info.kube.crds)}")
        if info.kube.crd_note:
            console.print(f"[yellow]{info.kube.crd_note}[/yellow]")
        if info.kube.rbac:
            console.print(
                f"RBAC on: the kubeconfig above is {kubeauth.ADMIN_USER} (system:masters); "
                "add identities with `virtrigaud dev kube-user NAME --group G`; "
                f"decisions in {info.kube.authz_log} (`virtrigaud dev decisions`)"
            )
    if info.secrets:
        console.print(f"credential Secrets in namespace default: {', '.join(info.secrets)}")


@dev_app.command()
def down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Stop every part started in the state dir."""
    stack = DevStack(state_dir)
    names = list(stack.info().running_parts())
    remote = remote_providers_mod.load(stack.state_dir)
    if remote is not None:
        remote_providers_mod.stop_all(stack.state_dir)
        names += [f"provider-{t}" for t in remote.servers]
    try:
        stack.down()
    except StackError as e:
        raise _fail(e) from e
    console.print(f"stopped: {', '.join(names) if names else 'nothing was running'}")


@dev_app.command()
def status(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Health of each part; exits 1 when a started part is down or nothing runs."""
    stack = DevStack(state_dir)
    table = Table(title=f"dev stack in {stack.state_dir}")
    table.add_column("part")
    table.add_column("state")
    table.add_column("detail")
    states = stack.status()
    recorded = stack.info().running_parts()
    for name, st in states.items():
        if name not in recorded:
            table.add_row(name, "[dim]not started[/dim]", "")
            continue
        table.add_row(name, "[green]up[/green]" if st.running else "[red]down[/red]", st.detail)
    console.print(table)
    broken = [n for n in recorded if not states[n].running]
    if not recorded or broken:
        raise typer.Exit(1)


@dev_app.command()
def env(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Shell exports for the running stack (credentials stay in stack.json and the Secrets)."""
    stack = DevStack(state_dir)
    info = stack.info()
    if not info.running_parts():
        raise _fail(StackError("dev stack", f"nothing runs in {stack.state_dir}", "run dev up"))
    exports = {"VIRTRIGAUD_DEV_STATE_DIR": str(stack.state_dir)}
    if info.kube:
        exports["KUBECONFIG"] = info.kube.kubeconfig
    if info.redis:
        exports["VIRTRIGAUD_REDIS_URL"] = info.redis.url
    if info.vcsim:
        exports["VIRTRIGAUD_VCSIM_URL"] = info.vcsim.url
    if info.libvirt:
        exports["LIBVIRT_DEFAULT_URI"] = info.libvirt.uri
    if info.proxmox:
        exports["VIRTRIGAUD_PVE_URL"] = info.proxmox.url
    if info.ray:
        exports["RAY_ADDRESS"] = info.ray.address
        exports.update(info.ray.env)
        if info.ray.controller_ips:
            # `virtrigaud run` joins a multi-node cluster as a zero-CPU node of its own.
            exports["VIRTRIGAUD_RAY_NODE_IP"] = info.ray.controller_ips[0]
    remote = remote_providers_mod.load(stack.state_dir)
    if remote is not None:
        exports["VIRTRIGAUD_PROVIDER_CLIENT_TLS_DIR"] = remote.client_tls_dir
        for server in remote.servers.values():
            exports[f"VIRTRIGAUD_REMOTE_{server.type.upper()}"] = server.address
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")


@dev_app.command("kube-user")
def kube_user(
    name: Annotated[
        str, typer.Argument(help="User name, or NAMESPACE/NAME with --service-account.")
    ],
    group: Annotated[list[str] | None, typer.Option(help="A group of the user (repeat).")] = None,
    service_account: Annotated[
        bool,
        typer.Option(
            "--service-account", help="NAME is NAMESPACE/NAME of a ServiceAccount: its user/groups."
        ),
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Give an identity a token on the RBAC-mode API server; prints its kubeconfig path."""
    groups = list(group or [])
    if service_account:
        namespace, _, sa = name.partition("/")
        if not namespace or not sa:
            raise _fail(StackError("kube", f"{name!r} is not NAMESPACE/NAME", "e.g. demo/ctrl"))
        name, sa_groups = kubeauth.service_account(namespace, sa)
        groups = [*sa_groups, *groups]
    try:
        added = DevStack(state_dir).add_kube_user(name, groups)
    except StackError as e:
        raise _fail(e) from e
    print(added.kubeconfig)


@dev_app.command()
def decisions(
    user: Annotated[str | None, typer.Option(help="Only this user's requests.")] = None,
    denied: Annotated[bool, typer.Option("--denied", help="Only denied requests.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """The RBAC-mode API server's authorization decisions, one line each; exits 1 on a denial."""
    kube = DevStack(state_dir).info().kube
    if kube is None or not kube.rbac:
        why = "no RBAC-mode API server runs here"
        raise _fail(StackError("kube", why, "run `virtrigaud dev up --rbac`"))
    shown = [
        d
        for d in read_decisions(kube.authz_log)
        if (user is None or d.user == user) and (not denied or not d.allowed)
    ]
    for d in shown:
        grants = ", ".join(f"{g.role}[{g.rule}]" for g in d.grants)
        print(d.describe() + (f" by {grants}" if grants else ""))
    if any(not d.allowed for d in shown):
        raise typer.Exit(1)


if __name__ == "__main__":
    dev_app()
