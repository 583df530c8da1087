"""Every shard's /metrics on a multi-node Ray, scraped at the ports and path the chart's
KubeRay PodMonitor (`<release>-virtrigaud-shards`) lists for each worker pod.

The chart is rendered with the real Helm engine for a RayCluster whose worker pods hold
two shards each; `virtrigaud run` gets the shard-metrics flags of the rendered Deployment
and joins the dev stack's head + two worker nodes (each its own `ray start` on its own
loopback address, as a worker pod has its own address). Four shards land two per node;
each node must then serve one shard on each PodMonitor endpoint, every shard must be
found exactly once, on the node Ray placed it, and no shard on a port the chart does not
list. `--shard-metrics-address node` stands in for the pod's 0.0.0.0: on one machine the
nodes share the ports of the wildcard address.
"""

from __future__ import annotations

import contextlib
import re
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from test_multinode import controller, in_cluster_env, placed, service_account, wait_until

from virtrigaud.dev.config import RayOptions, StackConfig
from virtrigaud.dev.info import KubeInfo, RayInfo
from virtrigaud.dev.stack import DevStack
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import NAMESPACES
from virtrigaud.netports import free_ports

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

__all__ = ["service_account"]  # a fixture this module uses, defined with the multi-node test

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "virtrigaud"
RELEASE = "vr"
SHARDS = 4  # test_multinode.controller starts this many
PER_NODE = 2
SHARD_LABEL = re.compile(r'^virtrigaud_shard_owned_keys\{shard="(shard-\d+)"\}', re.M)


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive ports free on every interface."""
    for _ in range(50):
        (base,) = free_ports(1)
        try:
            for port in range(base, base + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def render_chart(shard_port: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The worker pods' scrape endpoints and the controller's args, as Helm renders them."""
    values = {
        "ray": {"mode": "kuberay", "shardsPerWorker": PER_NODE},
        "shards": SHARDS,
        "metrics": {"shardPort": shard_port, "podMonitor": {"enabled": True}},
    }
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values, name=RELEASE, namespace="virtrigaud-system", is_install=True)
    docs = [d for d in yaml.safe_load_all(files["virtrigaud/templates/podmonitor.yaml"]) if d]
    (monitor,) = [d for d in docs if d["metadata"]["name"] == f"{RELEASE}-virtrigaud-shards"]
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "ray-worker"
    )
    deployment = yaml.safe_load(files["virtrigaud/templates/deployment.yaml"])
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return monitor["spec"]["podMetricsEndpoints"], [
        a for a in args if a.startswith(("--shard-metrics-port=", "--shard-metrics-slots="))
    ]


@pytest.fixture(scope="module")
def ray_cluster(
    kube_info: KubeInfo, service_account: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RayInfo]:
    """Head + two worker nodes offering PER_NODE shard slots each (a worker pod's
    `virtrigaud_shard: shardsPerWorker`)."""
    options = RayOptions(
        worker_nodes=SHARDS // PER_NODE,
        shards_per_node=PER_NODE,
        node_memory_mb=PER_NODE * 512 + 256,
        node_env=in_cluster_env(kube_info, service_account),
    )
    stack = DevStack(tmp_path_factory.mktemp("raynodes"), StackConfig(ray=options))
    try:
        info = stack.ensure("ray")
        assert isinstance(info, RayInfo)
        yield info
    finally:
        stack.down()


@pytest.fixture
async def lease_namespace(kubeconfig: str) -> AsyncIterator[str]:
    name = f"vr-metrics-{uuid.uuid4().hex[:6]}"
    kube = KubeClient.from_kubeconfig(kubeconfig)
    try:
        await kube.create(NAMESPACES, {"metadata": {"name": name}})
        yield name
    finally:
        with contextlib.suppress(ApiError):
            await kube.delete(NAMESPACES, name)
        await kube.close()


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def shards_served(node_ips: list[str], endpoints: list[dict[str, Any]]) -> dict[str, list[str]]:
    """http://node:port/path -> the shards whose series it serves (absent: nothing there)."""
    found = {}
    for ip in node_ips:
        for e in endpoints:
            url = f"http://{ip}:{e['portNumber']}{e['path']}"
            text = scrape(url)
            if text is not None:
                found[url] = sorted(SHARD_LABEL.findall(text))
    return found


async def test_every_shard_is_scraped_at_the_ports_the_chart_lists(
    ray_cluster: RayInfo,
    kube_info: KubeInfo,
    service_account: Path,
    redis_url: str,
    lease_namespace: str,
    tmp_path: Path,
) -> None:
    base = consecutive_free_ports(PER_NODE + 1)  # and one past the last slot, checked free
    endpoints, flags = render_chart(base)
    assert [e["portNumber"] for e in endpoints] == [base + slot for slot in range(PER_NODE)]
    assert sorted(flags) == [f"--shard-metrics-port={base}", f"--shard-metrics-slots={PER_NODE}"]
    node_ips = [node.ip for node, _ in ray_cluster.worker_nodes()]
    targets = len(node_ips) * len(endpoints)
    extra = (*flags, "--shard-metrics-address", "node")
    args = (ray_cluster, kube_info, service_account, redis_url, lease_namespace)

    async def detail() -> str:
        return f"served: {shards_served(node_ips, endpoints)}; placed: {placed(ray_cluster)}"

    with controller(*args, tmp_path / "run.log", extra=extra) as ctl:
        await wait_until(lambda: len(placed(ray_cluster)) == SHARDS, 120, "the shards", ctl)
        await wait_until(
            lambda: sum(len(s) for s in shards_served(node_ips, endpoints).values()) == SHARDS,
            60,
            "every shard's metrics",
            ctl,
            detail=detail,
        )
        served = shards_served(node_ips, endpoints)
        # Every target the PodMonitor lists is up and serves one shard; every shard once.
        assert len(served) == targets and all(len(s) == 1 for s in served.values()), served
        everywhere = sorted(s for shards in served.values() for s in shards)
        assert everywhere == sorted(f"shard-{i}" for i in range(SHARDS)), served
        # ... on the node Ray placed it on.
        where = {s: url.split("//")[1].split(":")[0] for url, (s,) in served.items()}
        assert where == {name: loc.node_ip for name, loc in placed(ray_cluster).items()}
        # No shard on a port the chart does not list.
        beyond = [{"portNumber": base + PER_NODE, "path": "/metrics"}]
        assert shards_served(node_ips, beyond) == {}
        print(f"\n{SHARDS} shards scraped at {targets} PodMonitor targets: {served}")
