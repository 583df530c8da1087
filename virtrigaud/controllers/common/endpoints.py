"""Which pooled providers' endpoints have answered in this process.

Before the first create call for an object, a controller that has not yet heard from the
Provider's endpoint (a new process, a changed Provider or Secret, or a call on it failed
since) makes a read first (looking the object's VM up by owner). When that read fails,
no create call was sent, so nothing can have been created for the object: the controller
records so and may let its finalizer go at once. Once the endpoint answered, later creates
go straight ahead, with no lookup, until a call on it fails again.
"""

from __future__ import annotations

import weakref

from virtrigaud.providers.base import Provider


class EndpointChecks:
    def __init__(self) -> None:
        # Pooled providers are replaced (not changed) when their Provider or Secret changes,
        # so a new session is always checked again; retired ones drop out on their own.
        self._answered: weakref.WeakSet[Provider] = weakref.WeakSet()

    def answered(self, provider: Provider) -> bool:
        return provider in self._answered

    def confirm(self, provider: Provider) -> None:
        """A call on provider's endpoint succeeded."""
        self._answered.add(provider)

    def suspect(self, provider: Provider) -> None:
        """A call on provider's endpoint failed: read before the next first create."""
        self._answered.discard(provider)
