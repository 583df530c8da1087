"""Every token the shared per-Provider buckets grant, seen at the Redis server (MONITOR).

The bucket's Lua script ends each decision with ``HSET <key> tokens <after> ts <now µs>``
in server time. Replaying those writes with the bucket arithmetic (refill since the last
write, then compare) tells exactly how many tokens each decision took and when, from
every shard at once: the ground truth for "calls in any 1 s window vs the limit", without
depending on when calls end or how often anyone scrapes.
"""

from __future__ import annotations

import bisect
import threading
import uuid
from dataclasses import dataclass, field

import redis

STOP_PREFIX = "vrscale-monitor-stop-"


@dataclass
class Grant:
    t: float
    """Server time, seconds."""
    tokens: float


@dataclass
class BucketReplay:
    rate: float
    capacity: float
    tokens: float | None = None
    ts: float | None = None
    grants: list[Grant] = field(default_factory=list)
    writes: int = 0

    def write(self, tokens: float, ts_us: int) -> None:
        now = ts_us / 1e6
        self.writes += 1
        if self.tokens is None or self.ts is None:
            # The first write seen is the baseline: what the bucket held before is unknown
            # (the monitor may start mid-run), so it is not counted as a grant.
            self.tokens, self.ts = tokens, now
            return
        before = min(self.capacity, self.tokens + max(0.0, now - self.ts) * self.rate)
        taken = before - tokens
        # A grant takes a whole cost (>= 1 token). Smaller differences are rounding: the
        # script stores its µs clock through Lua's tostring (14 significant digits).
        if taken >= 0.5:
            self.grants.append(Grant(now, float(round(taken))))
        self.tokens, self.ts = tokens, now


class GrantMonitor:
    """Runs MONITOR in a thread and replays the buckets whose key contains a marker."""

    def __init__(self, url: str, buckets: dict[str, tuple[float, float]]) -> None:
        """buckets: key marker (e.g. 'default/vr-vsphere') -> (qps, burst)."""
        self.url = url
        self.replays = {m: BucketReplay(qps, burst) for m, (qps, burst) in buckets.items()}
        self._stop_token = STOP_PREFIX + uuid.uuid4().hex
        self._thread = threading.Thread(target=self._run, name="grant-monitor", daemon=True)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.echo(self._stop_token)
        except redis.RedisError as e:
            self.error = e
        finally:
            client.close()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            with client.monitor() as m:  # type: ignore[no-untyped-call]
                self._ready.set()
                for cmd in m.listen():
                    text = str(cmd.get("command", ""))
                    if self._stop_token in text:
                        return
                    if cmd.get("client_type") != "lua" or not text.startswith("HSET "):
                        continue
                    self._hset(text.split())
        except redis.RedisError as e:
            self.error = e
        finally:
            self._ready.set()
            client.close()

    def _hset(self, parts: list[str]) -> None:
        # HSET <key> tokens <x> ts <us>
        if len(parts) != 6 or parts[2] != "tokens" or parts[4] != "ts":
            return
        key = parts[1]
        for marker, replay in self.replays.items():
            if key.endswith(marker):
                try:
                    replay.write(float(parts[3]), int(float(parts[5])))
                except ValueError:
                    return
                return


def window_stats(
    grants: list[Grant], qps: float, burst: float, window: float = 1.0
) -> dict[str, float | int | None]:
    """The fullest window of `window` seconds (tokens), windows over qps*window + burst, and
    utilisation (tokens per second over the busy span / qps)."""
    if not grants:
        return {
            "tokens": 0,
            "max_tokens_in_window": 0,
            "allowed_per_window": qps * window + burst,
            "windows_over_limit": 0,
            "utilisation": None,
        }
    times = [g.t for g in grants]
    prefix = [0.0]
    for g in grants:
        prefix.append(prefix[-1] + g.tokens)
    allowed = qps * window + burst
    best = 0.0
    over = 0
    for i, start in enumerate(times):
        j = bisect.bisect_left(times, start + window, lo=i)
        got = prefix[j] - prefix[i]
        best = max(best, got)
        if got > allowed + 1e-6:
            over += 1
    span = times[-1] - times[0]
    total = prefix[-1]
    return {
        "tokens": round(total, 3),
        "grants": len(grants),
        "max_tokens_in_window": round(best, 3),
        "allowed_per_window": allowed,
        "windows_over_limit": over,
        "busy_span_s": round(span, 3),
        "utilisation": round(total / span / qps, 3) if span > 0 else None,
    }
