"""`virtrigaud run` (the controller process) and `virtrigaud shards ...`.

Several `virtrigaud run` processes may run against one Ray cluster: one holds the Lease
and coordinates, the others stand by and take over within the lease duration (at once
when the leader exits gracefully, since it releases the Lease). Shard actors are
detached: they keep running, with their keys, when a coordinator exits, and the next
leader re-attaches to them. `--shutdown-shards-on-exit` (for demos) or
`virtrigaud shards stop` ends them.

Without `--ray-address` the process starts a private local Ray on 127.0.0.1; its shards
end with the process (it stops them before it lets the Lease go), and a standby in
another process cannot reach them: after taking over an expired Lease it waits until
their leases have surely run out (`--shard-lease`) before it hands out keys. With
`--ray-address` and `--ray-node-ip` it joins that cluster as a Ray node of its own with
no CPUs; `ray://` addresses go through Ray Client (see ray_connect.py). Shards are placed
only on nodes offering the shard resource (see shards/placement.py). Without
`--redis-url` the per-Provider buckets live in a Ray actor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from virtrigaud.instance import DEFAULT_NAMESPACE as DEFAULT_INSTANCE_NAMESPACE
from virtrigaud.instance import Instance
from virtrigaud.leader.election import LeaseTimings
from virtrigaud.leader.links import LeaseTerms
from virtrigaud.ray_connect import RayConnectError, RayConnection, connect, warn_without_shard_nodes
from virtrigaud.shards.placement import DEFAULT_SHARD_MEMORY_MB, ShardPlacement
from virtrigaud.shards.reconciler import DEFAULT_RESYNC_PERIOD, DEFAULT_SWEEP_PERIOD

log = logging.getLogger("virtrigaud.run")


LEASE_NAME = Instance().lease
DEFAULT_NAMESPACE = DEFAULT_INSTANCE_NAMESPACE

shards_app = typer.Typer(help="Inspect and change the shard count.", no_args_is_help=True)

KubeconfigOpt = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
]
NamespaceOpt = Annotated[
    str,
    typer.Option(
        "--namespace", help="Namespace of the leader Lease and the shard-count ConfigMap."
    ),
]
InstanceOpt = Annotated[
    str | None,
    typer.Option(
        "--instance",
        envvar="VIRTRIGAUD_INSTANCE",
        help="Name of this installation: Lease <instance>-leader, ConfigMap <instance>-config "
        "and Redis keys of its own, so two installations never share them (the chart passes "
        "its release's full name; default: virtrigaud-leader, virtrigaud-config).",
    ),
]


def _instance(namespace: str, name: str | None) -> Instance:
    try:
        return Instance(namespace, name)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--instance") from e


RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="VIRTRIGAUD_RAY_ADDRESS",
        help="host:port of a Ray cluster's GCS, or ray://host:port for Ray Client "
        "(default: start a private local Ray on 127.0.0.1).",
    ),
]
RayNodeIpOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-node-ip",
        envvar="VIRTRIGAUD_RAY_NODE_IP",
        help="Join --ray-address as a Ray node of its own on this address of this host, "
        "with no CPUs and no shard resource (no shard is placed there).",
    ),
]


def _connect_ray(address: str | None, node_ip: str | None = None) -> RayConnection:
    try:
        return connect(address, node_ip)
    except RayConnectError as e:
        raise typer.BadParameter(str(e)) from e


def run_command(
    kubeconfig: KubeconfigOpt = None,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            min=1,
            help="Shard count; written to ConfigMap virtrigaud-config at start "
            "(default: keep the configured count, or 3).",
        ),
    ] = None,
    workers_per_shard: Annotated[
        int, typer.Option("--workers-per-shard", min=1, help="Reconcile workers per shard.")
    ] = 4,
    ray_address: RayAddressOpt = None,
    ray_node_ip: RayNodeIpOpt = None,
    shard_memory_mb: Annotated[
        int,
        typer.Option(
            "--shard-memory-mb",
            min=0,
            help="Memory each shard actor reserves on its Ray node (Ray's memory resource).",
        ),
    ] = DEFAULT_SHARD_MEMORY_MB,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="VIRTRIGAUD_REDIS_URL",
            help="Redis for the shared per-Provider buckets (default: a Ray actor).",
        ),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option("--metrics-port", min=0, help="Coordinator /metrics port (0: any free)."),
    ] = 8080,
    metrics_address: Annotated[
        str,
        typer.Option(
            "--metrics-address",
            help="Address the /metrics endpoints bind (0.0.0.0 in a pod, for Prometheus).",
        ),
    ] = "127.0.0.1",
    shard_metrics_port: Annotated[
        int,
        typer.Option(
            "--shard-metrics-port",
            min=0,
            help="Shard i serves /metrics on this port + i (0: any free port, see the logs); "
            "with --shard-metrics-slots, on one of this port's slots on its node.",
        ),
    ] = 0,
    shard_metrics_slots: Annotated[
        int,
        typer.Option(
            "--shard-metrics-slots",
            min=0,
            help="On a Ray cluster whose nodes hold up to N shards each: a shard takes the "
            "first free of --shard-metrics-port .. + N - 1 on its node, so every node serves "
            "its shards on the same N ports (0: shard i on --shard-metrics-port + i).",
        ),
    ] = 0,
    shard_metrics_address: Annotated[
        str | None,
        typer.Option(
            "--shard-metrics-address",
            help="Address the shards' /metrics bind (default: --metrics-address; `node`: the "
            "address of the Ray node each shard runs on).",
        ),
    ] = None,
    identity: Annotated[
        str | None, typer.Option("--id", help="Leader election identity (default: host-pid).")
    ] = None,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    instance_name: InstanceOpt = None,
    watch_namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--watch-namespace",
            help="Reconcile objects in this namespace only; repeat for several (default: "
            "all namespaces).",
        ),
    ] = None,
    resync_period: Annotated[
        float,
        typer.Option(
            "--resync-period",
            min=1.0,
            help="Seconds between periodic passes of each VM: a safety net behind the sweep.",
        ),
    ] = DEFAULT_RESYNC_PERIOD,
    sweep_period: Annotated[
        float,
        typer.Option(
            "--sweep-period",
            min=1.0,
            help="Seconds between sweeps: one batched listing per Provider per shard, which "
            "queues only the VMs that drifted.",
        ),
    ] = DEFAULT_SWEEP_PERIOD,
    lease_duration: Annotated[float, typer.Option("--lease-duration")] = 15.0,
    renew_deadline: Annotated[float, typer.Option("--renew-deadline")] = 10.0,
    retry_period: Annotated[float, typer.Option("--retry-period")] = 2.0,
    shard_lease: Annotated[
        float,
        typer.Option(
            "--shard-lease",
            min=0.5,
            help="Seconds a shard keeps reconciling without hearing from its leader; an "
            "unreachable shard's keys move after this (plus 5 %% and 0.5 s).",
        ),
    ] = 4.0,
    heartbeat: Annotated[
        float,
        typer.Option("--heartbeat", min=0.1, help="Seconds between lease renewals per shard."),
    ] = 1.0,
    shutdown_shards_on_exit: Annotated[
        bool,
        typer.Option(
            "--shutdown-shards-on-exit",
            help="Stop the shard actors when this process exits (demos; default: leave them "
            "running for the next leader).",
        ),
    ] = False,
    reconciler: Annotated[
        str,
        typer.Option("--reconciler", hidden=True, help="module:factory building the Reconciler."),
    ] = "",
    reconciler_path: Annotated[
        list[Path] | None,
        typer.Option("--reconciler-path", hidden=True, help="Extra import path for --reconciler."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run the controller: leader election, coordinator, and the shard actors."""
    from virtrigaud.shards.actor import DEFAULT_RECONCILER, ShardConfig
    from virtrigaud.shards.audit import AUDIT_ENV
    from virtrigaud.shards.kube_access import kubeconfig_for_shards
    from virtrigaud.shards.logs import setup_json_logging

    ident = identity or f"{socket.gethostname()}-{os.getpid()}"
    instance = _instance(namespace, instance_name)
    setup_json_logging(log_level, component="coordinator", id=ident)
    if shard_metrics_slots and not shard_metrics_port:
        raise typer.BadParameter(
            "--shard-metrics-slots needs --shard-metrics-port: the slots are ports from it"
        )
    try:
        timings = LeaseTimings(lease_duration, renew_deadline, retry_period)
        lease_terms = LeaseTerms(duration=shard_lease, heartbeat=heartbeat)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    kubeconfig_path = kubeconfig_for_shards(str(kubeconfig) if kubeconfig else None)
    shard_config = ShardConfig(
        kubeconfig=kubeconfig_path,
        redis_url=redis_url,
        workers=workers_per_shard,
        resync_period=resync_period,
        sweep_period=sweep_period,
        metrics_port=shard_metrics_port,
        metrics_slots=shard_metrics_slots,
        metrics_address=shard_metrics_address or metrics_address,
        reconciler=reconciler or DEFAULT_RECONCILER,
        audit_redis=os.environ.get(AUDIT_ENV) or None,
        redis_prefix=instance.redis.prefix,
        log_level=log_level,
        python_path=tuple(str(p.resolve()) for p in reconciler_path or ()),
        # A private Ray is this pod alone: its memory limit is the bound, not a reservation.
        placement=ShardPlacement(memory_mb=shard_memory_mb if ray_address else 0),
    )
    connection = _connect_ray(ray_address, ray_node_ip)
    warn_without_shard_nodes()
    try:
        asyncio.run(
            _run(
                ident=ident,
                kubeconfig=kubeconfig_path,
                instance=instance,
                shards=shards,
                shard_config=shard_config,
                metrics_port=metrics_port,
                metrics_address=metrics_address,
                timings=timings,
                watch_namespaces=tuple(watch_namespace or ()),
                lease_terms=lease_terms,
                private_ray=not ray_address,
                shutdown_shards=shutdown_shards_on_exit,
            )
        )
    finally:
        connection.close()


async def _run(
    *,
    ident: str,
    kubeconfig: str | None,
    instance: Instance,
    shards: int | None,
    shard_config: Any,
    metrics_port: int,
    metrics_address: str,
    timings: LeaseTimings,
    watch_namespaces: tuple[str, ...],
    lease_terms: LeaseTerms,
    private_ray: bool,
    shutdown_shards: bool,
) -> None:
    from virtrigaud.kube.client import KubeClient
    from virtrigaud.leader.coordinator import Coordinator, CoordinatorConfig
    from virtrigaud.leader.election import LeaderElector
    from virtrigaud.leader.shard_count import ensure_namespace, write_shard_count
    from virtrigaud.metrics_server import serve_metrics

    port = serve_metrics(metrics_port, metrics_address)
    kube = KubeClient.from_kubeconfig(kubeconfig)
    stop = asyncio.Event()
    coordinator = Coordinator(
        kube,
        shard_config,
        CoordinatorConfig(
            namespace=instance.namespace,
            config_map=instance.config_map,
            default_shards=shards or 3,
            watch_namespaces=watch_namespaces,
            lease=lease_terms,
            private_ray=private_ray,
            takeover_window=timings.renew_deadline - timings.lease_duration,
        ),
    )

    def on_signal() -> None:
        # Only a graceful exit stops the shards; losing the Lease never does (they fence
        # themselves). Shards in a private Ray are stopped before the Lease is released:
        # a standby cannot reach them to take their keys over.
        coordinator.stop_shards_on_exit = shutdown_shards or private_ray
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await ensure_namespace(kube, instance.namespace)
        if shards is not None:
            await write_shard_count(kube, instance.namespace, shards, instance.config_map)
        elector = LeaderElector(
            kube,
            namespace=instance.namespace,
            name=instance.lease,
            identity=ident,
            on_started_leading=coordinator.lead,
            timings=timings,
        )
        coordinator.leadership = elector
        log.info(
            "campaigning",
            extra={
                "lease": f"{instance.namespace}/{instance.lease}",
                "id": ident,
                "metrics_port": port,
            },
        )
        await elector.run(stop)
    finally:
        await kube.close()
    log.info("exited")


async def stop_shards(grace: float = 30.0) -> int:
    """Stop every shard actor gracefully, then remove it; returns how many there were."""
    import ray

    from virtrigaud.leader.coordinator import existing_shard_indexes
    from virtrigaud.shards.actor import RAY_NAMESPACE, actor_name

    handles = []
    for index in sorted(existing_shard_indexes()):
        try:
            handles.append(ray.get_actor(actor_name(index), namespace=RAY_NAMESPACE))
        except ValueError:
            continue
    results = await asyncio.gather(*(h.stop.remote(grace) for h in handles), return_exceptions=True)
    for h, result in zip(handles, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("stopping a shard: %s", result)
        ray.kill(h, no_restart=True)
    return len(handles)


@shards_app.command("set")
def shards_set(
    count: Annotated[int, typer.Argument(min=1, help="The new number of shards.")],
    kubeconfig: KubeconfigOpt = None,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    instance_name: InstanceOpt = None,
) -> None:
    """Change the shard count; the leader moves about 1/N of the VMs per shard added/removed.

    This overrides the installed count (the chart's `shards`) until that count itself
    changes: `helm upgrade`s that leave `shards` alone keep it."""
    from virtrigaud.kube.client import KubeClient
    from virtrigaud.leader.shard_count import set_shard_override

    instance = _instance(namespace, instance_name)

    async def go() -> str:
        async with KubeClient.from_kubeconfig(str(kubeconfig) if kubeconfig else None) as kube:
            setting = await set_shard_override(kube, namespace, count, instance.config_map)
            return setting.describe()

    described = asyncio.run(go())
    typer.echo(f"shards: {described} (ConfigMap {namespace}/{instance.config_map})")


@shards_app.command("get")
def shards_get(
    kubeconfig: KubeconfigOpt = None,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    instance_name: InstanceOpt = None,
) -> None:
    """Print the shard count in effect (and where it comes from) and the current leader."""
    from virtrigaud.kube.client import ApiError, KubeClient
    from virtrigaud.kube.resources import LEASES
    from virtrigaud.leader.shard_count import read_shard_setting

    instance = _instance(namespace, instance_name)

    async def go() -> tuple[str, str]:
        async with KubeClient.from_kubeconfig(str(kubeconfig) if kubeconfig else None) as kube:
            try:
                count = (await read_shard_setting(kube, namespace, instance.config_map)).describe()
            except ApiError as e:
                if not e.not_found:
                    raise
                count = "not set"
            try:
                lease = await kube.get(LEASES, instance.lease, namespace)
                holder = str((lease.get("spec") or {}).get("holderIdentity") or "none")
            except ApiError as e:
                if not e.not_found:
                    raise
                holder = "none"
            return count, holder

    count, holder = asyncio.run(go())
    typer.echo(f"shards: {count}\nleader: {holder}")


@shards_app.command("stop")
def shards_stop(
    ray_address: Annotated[
        str,
        typer.Option(
            "--ray-address",
            envvar="VIRTRIGAUD_RAY_ADDRESS",
            help="host:port of the GCS, or ray://host:port.",
        ),
    ],
    ray_node_ip: RayNodeIpOpt = None,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds to let reconciles finish.")
    ] = 30.0,
) -> None:
    """Stop and remove every shard actor (they are detached and outlive coordinators)."""
    connection = _connect_ray(ray_address, ray_node_ip)
    try:
        n = asyncio.run(stop_shards(grace))
    finally:
        connection.close()
    typer.echo(f"stopped {n} shard actor(s)")
