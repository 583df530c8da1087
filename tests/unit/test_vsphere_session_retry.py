"""A vCenter call whose connection drops without an answer: a read is asked again (twice
at most), a write is not (it may have landed) and its error reaches the caller as it is."""

from __future__ import annotations

import http.client
from typing import Any

import pytest

from virtrigaud.providers.base import RetryableError
from virtrigaud.providers.vsphere.session import DROPPED_RETRIES, VSphereSession


def dropping_session() -> tuple[VSphereSession, list[str]]:
    session = VSphereSession(
        endpoint="https://vc.example:443/sdk",
        username="u",
        password="p",
        insecure=True,
        gate=None,  # type: ignore[arg-type]  # never reached: _call_once is replaced
    )
    calls: list[str] = []

    async def dropped(method: str, fn: Any, cost: int, *, mutating: bool) -> Any:
        calls.append(method)
        try:
            raise http.client.RemoteDisconnected("Remote end closed connection")
        except http.client.RemoteDisconnected as e:
            raise RetryableError("vCenter dropped the connection (RemoteDisconnected)") from e

    session._call_once = dropped  # type: ignore[method-assign]
    return session, calls


async def test_a_write_whose_connection_drops_fails_once_with_the_providers_error() -> None:
    session, calls = dropping_session()
    with pytest.raises(RetryableError, match="dropped the connection"):
        await session.call("ImportVApp", lambda c: None)
    assert calls == ["ImportVApp"]


async def test_a_read_whose_connection_drops_is_asked_again() -> None:
    session, calls = dropping_session()
    with pytest.raises(RetryableError, match="dropped the connection"):
        await session.call("RetrieveContents", lambda c: None, idempotent=True)
    assert calls == ["RetrieveContents"] * (DROPPED_RETRIES + 1)
