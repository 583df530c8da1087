"""core/v1 Events on objects, aggregated the way client-go's EventCorrelator does.

An Event repeated for the same (object, type, reason, message) within the aggregation window
is not created again: the existing Event's ``count`` and ``lastTimestamp`` are patched.
Recording is best effort (as in client-go): a failed write is logged, never raised, so an
Event can not fail a reconcile. Messages must never contain secret values.

``normal``/``warning`` do not wait for the API server either (client-go's recorder hands
Events to a broadcaster the same way): they queue the Event and a few writer tasks write
it, so a reconcile worker never spends an API round trip per Event. The queue is bounded;
when it is full the Event is dropped and counted (``virtrigaud_events_dropped_total``).
``flush`` waits until everything queued is written; ``aclose`` flushes and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter

from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import EVENTS

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

REPORTING_COMPONENT = "virtrigaud"
# client-go caps an Event message at 1 KiB; longer ones are truncated the same way.
MAX_MESSAGE_BYTES = 1024
QUEUE_SIZE = 4096
WRITERS = 4

EVENTS_DROPPED = Counter(
    "virtrigaud_events_dropped_total",
    "Events not written because the recorder's queue was full",
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truncate(message: str) -> str:
    raw = message.encode()
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    return raw[: MAX_MESSAGE_BYTES - 3].decode(errors="ignore") + "..."


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first_timestamp: str
    at: float  # monotonic time of the last write


@dataclass(frozen=True)
class RecordedEvent:
    """What ``EventRecorder.record`` wrote (for callers that log or test it)."""

    name: str
    count: int


class EventRecorder:
    """Writes Events for one process; share one per KubeClient."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        component: str = REPORTING_COMPONENT,
        instance: str = "",
        aggregation_window: float = 600.0,
        cache_size: int = 4096,
    ) -> None:
        self.kube = kube
        self.component = component
        self.instance = instance
        self.aggregation_window = aggregation_window
        self.cache_size = cache_size
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        # One queue per writer; an Event goes to the queue its aggregation key hashes to,
        # so repeats of one Event are written in order by one writer and aggregate.
        self._queues: list[asyncio.Queue[tuple[dict[str, Any], EventType, str, str]]] = []
        self._writers: list[asyncio.Task[None]] = []

    async def normal(self, obj: dict[str, Any], reason: str, message: str) -> None:
        """Queue a Normal Event on obj; returns at once."""
        self.emit(obj, "Normal", reason, message)

    async def warning(self, obj: dict[str, Any], reason: str, message: str) -> None:
        """Queue a Warning Event on obj; returns at once."""
        self.emit(obj, "Warning", reason, message)

    def emit(self, obj: dict[str, Any], type_: EventType, reason: str, message: str) -> None:
        """Queue an Event for the writer tasks (started on first use, in the running loop)."""
        if not self._queues:
            loop = asyncio.get_running_loop()
            self._queues = [asyncio.Queue(max(1, QUEUE_SIZE // WRITERS)) for _ in range(WRITERS)]
            self._writers = [
                loop.create_task(self._write_queued(q), name="events") for q in self._queues
            ]
        meta = obj.get("metadata", {})
        route = hash((meta.get("uid"), meta.get("name"), type_, reason)) % len(self._queues)
        try:
            self._queues[route].put_nowait((obj, type_, reason, message))
        except asyncio.QueueFull:
            EVENTS_DROPPED.inc()
            log.debug("event queue full; dropped Event %s", reason)

    async def flush(self) -> None:
        """Wait until every queued Event has been written (or has failed)."""
        for queue in self._queues:
            await queue.join()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most timeout seconds), then stop the writers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout)
        for task in self._writers:
            task.cancel()
        for task in self._writers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._writers = []
        self._queues = []

    async def _write_queued(
        self, queue: asyncio.Queue[tuple[dict[str, Any], EventType, str, str]]
    ) -> None:
        while True:
            obj, type_, reason, message = await queue.get()
            try:
                await self.record(obj, type_, reason, message)
            except Exception:  # best effort: a writer must outlive any one Event
                log.exception("writing Event %s failed", reason)
            finally:
                queue.task_done()

    async def record(
        self, obj: dict[str, Any], type_: EventType, reason: str, message: str
    ) -> RecordedEvent | None:
        """Record an Event on obj; returns what was written, or None when the write failed."""
        try:
            return await self._record(obj, type_, reason, _truncate(message))
        except ApiError as e:
            meta = obj.get("metadata", {})
            log.warning(
                "could not record Event %s on %s %s/%s: %s",
                reason,
                obj.get("kind", "object"),
                meta.get("namespace", ""),
                meta.get("name", ""),
                e,
            )
            return None

    async def _record(
        self, obj: dict[str, Any], type_: EventType, reason: str, message: str
    ) -> RecordedEvent:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (
            str(meta.get("uid", "")),
            str(obj.get("kind", "")),
            namespace,
            str(meta.get("name", "")),
            type_,
            reason,
            message,
        )
        seen = self._seen.get(key)
        now = time.monotonic()
        if seen is not None and now - seen.at < self.aggregation_window:
            patched = await self._bump(seen)
            if patched:
                self._seen.move_to_end(key)
                return RecordedEvent(seen.name, seen.count)
        created = await self._create(obj, namespace, type_, reason, message)
        self._seen[key] = _Seen(
            created["metadata"]["name"], namespace, 1, created.get("firstTimestamp", _now()), now
        )
        self._seen.move_to_end(key)
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)
        return RecordedEvent(created["metadata"]["name"], 1)

    async def _bump(self, seen: _Seen) -> bool:
        """Patch count/lastTimestamp of an Event we wrote; False when it is gone (TTL)."""
        patch = {"count": seen.count + 1, "lastTimestamp": _now()}
        try:
            await self.kube.patch(EVENTS, seen.name, seen.namespace, patch)
        except ApiError as e:
            if e.not_found:
                return False
            raise
        seen.count += 1
        seen.at = time.monotonic()
        return True

    async def _create(
        self,
        obj: dict[str, Any],
        namespace: str,
        type_: EventType,
        reason: str,
        message: str,
    ) -> dict[str, Any]:
        meta = obj.get("metadata", {})
        name = str(meta.get("name", "unknown"))
        stamp = _now()
        involved: dict[str, Any] = {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "namespace": namespace,
            "name": name,
        }
        if meta.get("uid"):
            involved["uid"] = meta["uid"]
        if meta.get("resourceVersion"):
            involved["resourceVersion"] = meta["resourceVersion"]
        event: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            # client-go names Events <object>.<unix nanoseconds in hex>: unique and sortable.
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance or self.component,
        }
        return await self.kube.create(EVENTS, event, namespace)
