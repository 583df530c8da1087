"""The session pool: one long-lived provider (one hypervisor session) per Provider per process.

Reconciles ask the pool for the provider of a Provider object on every pass. The first
ask builds it (concurrent first asks build exactly one), later asks reuse it, and an ask
with a changed config (endpoint, Secret, defaults, rate) replaces it and logs the old one
out (after a grace period, so calls running on it finish). Shutdown logs every session out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from virtrigaud.providers.base import Provider
from virtrigaud.providers.calls import TokenLimiter
from virtrigaud.providers.registry import ProviderConfig, build_provider, preload

log = logging.getLogger(__name__)

Builder = Callable[[ProviderConfig, TokenLimiter], Provider]


@dataclass
class _Entry:
    fingerprint: str
    provider: Provider


REPLACED_GRACE_SECONDS = 30.0
"""How long a replaced provider stays open so calls already running on it can finish."""


class ProviderPool:
    def __init__(
        self,
        limiter: TokenLimiter,
        *,
        builder: Builder = build_provider,
        replaced_grace: float = REPLACED_GRACE_SECONDS,
    ) -> None:
        self._limiter = limiter
        self._builder = builder
        self._replaced_grace = replaced_grace
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: dict[asyncio.Task[None], tuple[str, Provider]] = {}
        self._closed = False

    async def get(self, config: ProviderConfig) -> Provider:
        """The pooled provider for config.key, built or replaced as config requires."""
        provider = await self._pooled(config)
        await provider.ensure_ready()
        return provider

    async def _pooled(self, config: ProviderConfig) -> Provider:
        fingerprint = config.fingerprint()
        entry = self._entries.get(config.key)
        if entry is not None and entry.fingerprint == fingerprint:
            return entry.provider
        lock = self._locks.setdefault(config.key, asyncio.Lock())
        async with lock:
            if self._closed:
                raise RuntimeError("the provider pool is closed (the process is shutting down)")
            entry = self._entries.get(config.key)
            if entry is not None and entry.fingerprint == fingerprint:
                return entry.provider
            await asyncio.to_thread(preload, config.type, remote=config.remote is not None)
            provider = self._builder(config, self._limiter)
            self._entries[config.key] = _Entry(fingerprint, provider)
            if entry is not None:
                log.info("Provider %s changed: replacing its %s session", config.key, config.type)
                self._retire(config.key, entry.provider)
            return provider

    def _retire(self, key: str, provider: Provider) -> None:
        """Close a replaced provider once calls already running on it had time to end."""

        async def later() -> None:
            await asyncio.sleep(self._replaced_grace)
            await self._close(key, provider)

        task = asyncio.create_task(later(), name=f"retire-provider-{key}")
        self._retiring[task] = (key, provider)
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    def peek(self, key: str) -> Provider | None:
        """The pooled provider for key, if there is one (no building)."""
        entry = self._entries.get(key)
        return entry.provider if entry else None

    def keys(self) -> list[str]:
        return list(self._entries)

    async def remove(self, key: str) -> None:
        """Log out and forget the provider of a deleted Provider object."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                await self._close(key, entry.provider)
        self._locks.pop(key, None)

    async def close_all(self) -> None:
        """Log out of every session; later ``get`` calls fail."""
        self._closed = True
        entries, self._entries = self._entries, {}
        retiring, self._retiring = dict(self._retiring), {}
        for task in retiring:
            task.cancel()
        closing = [(key, e.provider) for key, e in entries.items()] + list(retiring.values())
        await asyncio.gather(*(self._close(key, provider) for key, provider in closing))

    @staticmethod
    async def _close(key: str, provider: Provider) -> None:
        # A failed logout must not stop the others: the session expires on the server anyway.
        try:
            await provider.close()
        except Exception as e:
            log.warning("closing the %s session of Provider %s failed: %s", provider.type, key, e)
