"""The run-time shard count: key `shards` of the ConfigMap `virtrigaud-config`.

The leader polls it and resizes the shard set when it changes; `virtrigaud shards set N`
writes it. When the ConfigMap does not exist yet, the leader creates it with the count
from `virtrigaud run --shards`.
"""

from __future__ import annotations

from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import CONFIG_MAPS, NAMESPACES

CONFIG_MAP = "virtrigaud-config"
SHARDS_FIELD = "shards"
MAX_SHARDS = 256


def parse_count(raw: object, where: str) -> int:
    try:
        count = int(str(raw).strip())
    except ValueError as e:
        raise ValueError(
            f"{where}: data.{SHARDS_FIELD} must be a whole number of shards, got {raw!r}"
        ) from e
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(
            f"{where}: data.{SHARDS_FIELD} must be between 1 and {MAX_SHARDS}, got {count}"
        )
    return count


async def ensure_namespace(kube: KubeClient, namespace: str) -> None:
    try:
        await kube.get(NAMESPACES, namespace)
    except ApiError as e:
        if not e.not_found:
            raise
        try:
            namespace_obj = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace},
            }
            await kube.create(NAMESPACES, namespace_obj)
        except ApiError as e2:
            if not e2.conflict:
                raise


async def read_shard_count(kube: KubeClient, namespace: str, default: int | None = None) -> int:
    """The configured count; creates the ConfigMap with `default` when it is missing."""
    where = f"ConfigMap {namespace}/{CONFIG_MAP}"
    try:
        cm = await kube.get(CONFIG_MAPS, CONFIG_MAP, namespace)
    except ApiError as e:
        if not e.not_found or default is None:
            raise
        await write_shard_count(kube, namespace, default)
        return default
    raw = (cm.get("data") or {}).get(SHARDS_FIELD)
    if raw is None:
        if default is None:
            raise ValueError(f"{where} has no data.{SHARDS_FIELD}: run `virtrigaud shards set N`")
        await write_shard_count(kube, namespace, default)
        return default
    return parse_count(raw, where)


async def write_shard_count(kube: KubeClient, namespace: str, count: int) -> None:
    parse_count(count, f"ConfigMap {namespace}/{CONFIG_MAP}")
    await ensure_namespace(kube, namespace)
    await kube.apply(
        CONFIG_MAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": namespace},
            "data": {SHARDS_FIELD: str(count)},
        },
        field_manager="virtrigaud",
    )
