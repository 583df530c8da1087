"""A stand-in for the provider a server serves, for tests where nothing may reach it."""

from __future__ import annotations

from typing import Any


class Uncalled:
    """Stands for the served provider: health and TLS answer without it."""

    type = "libvirt"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the provider was called: {name}")

    async def close(self) -> None:
        pass
