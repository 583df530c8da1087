"""The run-time shard count, in the ConfigMap `<instance>-config` (`virtrigaud-config`
without `--instance`; virtrigaud/instance.py).

Two writers, two keys, so neither undoes the other:

* `shards`: the installed count. The Helm chart renders it from its `shards` value;
  `virtrigaud run --shards` writes it at start; the leader creates it with its default
  when the ConfigMap is missing.
* `shardsOverride` and `shardsOverrideOf`: `virtrigaud shards set N` writes N, and the
  `shards` value it overrides at that moment.

The override wins while `shards` still holds the value it overrode: a live resize survives
`helm upgrade`s that leave the chart's `shards` alone (Helm's three-way merge keeps keys
it never rendered). A `helm upgrade` that changes `shards` is the newer decision and wins
(the override is then stale and ignored, which `virtrigaud shards get` shows). The leader
polls the ConfigMap and resizes the shard set when the count in effect changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import CONFIG_MAPS, NAMESPACES

CONFIG_MAP = "virtrigaud-config"
SHARDS_FIELD = "shards"
OVERRIDE_FIELD = "shardsOverride"
OVERRIDE_OF_FIELD = "shardsOverrideOf"
OVERRIDE_MANAGER = "virtrigaud-shards-set"
MAX_SHARDS = 256


def parse_count(raw: object, where: str, field: str = SHARDS_FIELD) -> int:
    try:
        count = int(str(raw).strip())
    except ValueError as e:
        raise ValueError(
            f"{where}: data.{field} must be a whole number of shards, got {raw!r}"
        ) from e
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"{where}: data.{field} must be between 1 and {MAX_SHARDS}, got {count}")
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


@dataclass(frozen=True)
class ShardSetting:
    """The count in effect and where it comes from."""

    count: int | None
    installed: int | None  # data.shards
    override: int | None  # data.shardsOverride, when it is in effect
    stale_override: int | None  # an override a later change of data.shards replaced

    def describe(self) -> str:
        if self.override is not None:
            return (
                f"{self.override} (virtrigaud shards set, over the installed "
                f"{self.installed if self.installed is not None else 'none'})"
            )
        text = f"{self.installed} (installed)" if self.installed is not None else "not set"
        if self.stale_override is not None:
            text += (
                f"; the override {self.stale_override} from `virtrigaud shards set` was "
                "replaced by a later change of the installed count"
            )
        return text


def shard_setting(data: dict[str, Any], where: str) -> ShardSetting:
    raw = data.get(SHARDS_FIELD)
    installed = None if raw is None else parse_count(raw, where)
    raw_override = data.get(OVERRIDE_FIELD)
    if raw_override is None:
        return ShardSetting(installed, installed, None, None)
    override = parse_count(raw_override, where, OVERRIDE_FIELD)
    if str(data.get(OVERRIDE_OF_FIELD) or "") == ("" if raw is None else str(raw)):
        return ShardSetting(override, installed, override, None)
    return ShardSetting(installed, installed, None, override)


async def read_shard_setting(
    kube: KubeClient, namespace: str, name: str = CONFIG_MAP
) -> ShardSetting:
    """The setting in ConfigMap namespace/name; ApiError (404) when it does not exist."""
    cm = await kube.get(CONFIG_MAPS, name, namespace)
    return shard_setting(cm.get("data") or {}, f"ConfigMap {namespace}/{name}")


async def read_shard_count(
    kube: KubeClient, namespace: str, default: int | None = None, name: str = CONFIG_MAP
) -> int:
    """The count in effect; creates the ConfigMap with `default` when it is missing."""
    try:
        setting = await read_shard_setting(kube, namespace, name)
    except ApiError as e:
        if not e.not_found or default is None:
            raise
        await write_shard_count(kube, namespace, default, name)
        return default
    if setting.count is None:
        if default is None:
            raise ValueError(
                f"ConfigMap {namespace}/{name} has no data.{SHARDS_FIELD}: "
                "run `virtrigaud shards set N`"
            )
        await write_shard_count(kube, namespace, default, name)
        return default
    return setting.count


async def write_shard_count(
    kube: KubeClient, namespace: str, count: int, name: str = CONFIG_MAP
) -> None:
    """Write the installed count (data.shards), as `virtrigaud run --shards` does."""
    parse_count(count, f"ConfigMap {namespace}/{name}")
    await ensure_namespace(kube, namespace)
    await kube.apply(
        CONFIG_MAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {SHARDS_FIELD: str(count)},
        },
        field_manager="virtrigaud",
    )


async def set_shard_override(
    kube: KubeClient, namespace: str, count: int, name: str = CONFIG_MAP
) -> ShardSetting:
    """`virtrigaud shards set`: override the installed count until it changes."""
    where = f"ConfigMap {namespace}/{name}"
    parse_count(count, where)
    try:
        cm = await kube.get(CONFIG_MAPS, name, namespace)
    except ApiError as e:
        if not e.not_found:
            raise
        await ensure_namespace(kube, namespace)
        cm = {}
    data = dict(cm.get("data") or {})
    base = data.get(SHARDS_FIELD)
    data |= {OVERRIDE_FIELD: str(count), OVERRIDE_OF_FIELD: "" if base is None else str(base)}
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if cm:
        # Applied only if nobody changed the ConfigMap since it was read.
        meta["resourceVersion"] = cm["metadata"]["resourceVersion"]
    await kube.apply(
        CONFIG_MAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {k: data[k] for k in (OVERRIDE_FIELD, OVERRIDE_OF_FIELD)},
        },
        field_manager=OVERRIDE_MANAGER,
    )
    return shard_setting(data, where)
