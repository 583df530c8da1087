"""Which keys read which dependency objects in their last pass, so a changed dependency
(the leader's ``touch``) brings back exactly the keys that depend on it.

A controller records, after each pass of a key, the objects that pass read (for example
through ``resolve.recording_reads``); a new pass replaces what the last one recorded, so an
object a key no longer reads no longer brings it back. Everything lives in memory: a key
new to this process has recorded nothing, and its first pass records what it reads.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


class DependencyIndex:
    def __init__(self) -> None:
        self._reads: dict[str, frozenset[str]] = {}
        self._readers: dict[str, set[str]] = {}

    def record(self, key: str, reads: Iterable[str]) -> None:
        """What key's last pass read (``Kind/namespace/name`` each)."""
        new = frozenset(reads)
        old = self._reads.get(key, frozenset())
        if new == old:
            return
        for dep in old - new:
            self._unlink(dep, key)
        for dep in new - old:
            self._readers.setdefault(dep, set()).add(key)
        if new:
            self._reads[key] = new
        else:
            self._reads.pop(key, None)

    def forget(self, key: str) -> None:
        self.record(key, ())

    def reads(self, key: str) -> frozenset[str]:
        return self._reads.get(key, frozenset())

    def readers(self, changed: Collection[str]) -> set[str]:
        """The keys whose last pass read one of ``changed``."""
        found: set[str] = set()
        for dep in changed:
            found |= self._readers.get(dep, set())
        return found

    def _unlink(self, dep: str, key: str) -> None:
        readers = self._readers.get(dep)
        if readers is None:
            return
        readers.discard(key)
        if not readers:
            del self._readers[dep]
