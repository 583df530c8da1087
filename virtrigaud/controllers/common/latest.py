"""The newest copy of each object this process wrote. The leader's watch may hand over a
copy older than our own last status write; a status built from it would undo that write
(write_status retries a conflict on top of the fresh object, by design). A controller
builds each pass from whichever copy is newer."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def _rv(obj: JSON) -> int | None:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


class LatestWrites:
    def __init__(self) -> None:
        self._stored: dict[str, JSON] = {}

    def remember(self, key: str, stored: JSON) -> None:
        self._stored[key] = stored

    def forget(self, key: str) -> None:
        self._stored.pop(key, None)

    def freshest(self, key: str, obj: JSON) -> JSON:
        """obj, or our own later write of the same object (with obj's usage field, which
        only deliveries carry)."""
        mine = self._stored.get(key)
        if mine is None or mine["metadata"].get("uid") != obj["metadata"].get("uid"):
            return obj
        theirs_rv, mine_rv = _rv(obj), _rv(mine)
        if theirs_rv is None or mine_rv is None or mine_rv <= theirs_rv:
            return obj
        extra = {k: v for k, v in obj.items() if k not in ("metadata", "spec", "status")}
        return {**mine, **{k: v for k, v in extra.items() if k not in mine}}
