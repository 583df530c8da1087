"""Per-Provider token buckets shared by every shard (Redis, or one Ray actor).

Ray is not imported here; `ActorBucket` imports it when it connects.
"""

from virtrigaud.ratelimit.actor_bucket import ActorBucket
from virtrigaud.ratelimit.bucket import Decision, LocalBuckets
from virtrigaud.ratelimit.redis_bucket import RedisBucket
from virtrigaud.ratelimit.shared import BackendUnavailable, Limiter, SharedBucket

__all__ = [
    "ActorBucket",
    "BackendUnavailable",
    "Decision",
    "Limiter",
    "LocalBuckets",
    "RedisBucket",
    "SharedBucket",
]
