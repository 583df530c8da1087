"""The names one installation of the controller gives what it shares with others, so two
installations in one cluster (one namespace, even) or on one Redis never touch each
other's Lease, shard-count ConfigMap, rate-limit buckets, incarnation fences or audit
stream.

`virtrigaud run --instance NAME` names an installation (the Helm chart passes its
release's full name). Without a name the names are those of the single installation
VirtRigaud always had: Lease `virtrigaud-leader`, ConfigMap `virtrigaud-config`, Redis
keys under `virtrigaud:`. A named installation's Redis keys also carry its namespace,
since two releases of one name may live in two namespaces and share a Redis.

Shard actors are named per Ray cluster (`virtrigaud-shard-<i>` in Ray namespace
`virtrigaud`): two installations need two Ray clusters (each embedded or KubeRay
installation has its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_NAME = "virtrigaud"
DEFAULT_NAMESPACE = "virtrigaud-system"
DEFAULT_REDIS_PREFIX = "virtrigaud:"
MAX_NAME = 63 - len("-leader")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class RedisKeys:
    """Where one installation keeps its state in Redis."""

    prefix: str = DEFAULT_REDIS_PREFIX

    @property
    def ratelimit(self) -> str:
        """Prefix of the per-Provider token buckets."""
        return f"{self.prefix}ratelimit:"

    @property
    def fenced(self) -> str:
        """Prefix of the fenced shard incarnations (virtrigaud.fence)."""
        return f"{self.prefix}fenced:"

    @property
    def audit(self) -> str:
        """The reconcile audit stream (shards/audit.py)."""
        return f"{self.prefix}audit"


@dataclass(frozen=True)
class Instance:
    namespace: str = DEFAULT_NAMESPACE
    name: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and not (_NAME.match(self.name) and len(self.name) <= MAX_NAME):
            raise ValueError(
                f"--instance {self.name!r}: an instance name is a DNS label of at most "
                f"{MAX_NAME} characters (lowercase letters, digits and '-'), since the "
                f"Lease is called <instance>-leader"
            )

    @property
    def lease(self) -> str:
        return f"{self.name or DEFAULT_NAME}-leader"

    @property
    def config_map(self) -> str:
        return f"{self.name or DEFAULT_NAME}-config"

    @property
    def redis(self) -> RedisKeys:
        if self.name is None:
            return RedisKeys()
        return RedisKeys(f"{DEFAULT_REDIS_PREFIX}{self.namespace}/{self.name}:")
