"""Fixtures for the controller tests: a Ray driver, a kube client, a namespace per test,
the shard actors cleaned up around a test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from virtrigaud.kube.client import KubeClient

# fixtures_vm is a helper module of these tests: let pytest rewrite its asserts too.
pytest.register_assert_rewrite("fixtures_vm", "sasl_libvirtd")


@pytest.fixture(scope="session")
def ray_driver(ray_address: str) -> Iterator[str]:
    """This test process connected to the session's Ray cluster as a driver."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, namespace="virtrigaud-tests", log_to_driver=False)
    yield ray_address
    kill_shard_actors()
    ray.shutdown()


def kill_shard_actors() -> None:
    """Remove every shard actor (they are detached: nothing else ends them)."""
    import ray

    from virtrigaud.shards.actor import ACTOR_PREFIX, RAY_NAMESPACE

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == RAY_NAMESPACE and entry["name"].startswith(ACTOR_PREFIX):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(entry["name"], namespace=RAY_NAMESPACE), no_restart=True)


@pytest.fixture
def clean_shards(ray_driver: str) -> Iterator[None]:
    kill_shard_actors()
    yield
    kill_shard_actors()


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(kubeconfig)
    yield client
    await client.close()


@pytest.fixture
async def namespace(kube: KubeClient) -> AsyncIterator[str]:
    from runtime_support import fresh_namespace

    async with fresh_namespace(kube) as name:
        yield name
