"""The Kubernetes client retries a 429 after its Retry-After, as client-go does (the API
server answers 429 while a resource's storage is (re)initializing), and gives up with
the server's error after its retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from virtrigaud.kube import client as kube_client
from virtrigaud.kube.client import ApiError, ClusterConfig, KubeClient

BUSY = {"kind": "Status", "status": "Failure", "reason": "TooManyRequests",
        "message": "storage is (re)initializing", "code": 429}  # fmt: skip


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[int]]]:
    answers: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        busy = int(request.query.get("busy", "0"))
        if len(answers) < busy:
            answers.append(429)
            return web.json_response(BUSY, status=429, headers={"Retry-After": "0"})
        answers.append(200)
        return web.json_response({"kind": "Namespace", "metadata": {"name": "default"}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/default", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", answers
    await runner.cleanup()


async def test_a_429_is_retried_until_the_server_answers(server: tuple[str, list[int]]) -> None:
    url, answers = server
    async with KubeClient(ClusterConfig(server=url)) as kube:
        got = await kube.request("GET", "/api/v1/namespaces/default", params={"busy": 3})
    assert got["metadata"]["name"] == "default"
    assert answers == [429, 429, 429, 200]


async def test_the_servers_error_comes_back_after_the_retries(
    server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answers = server
    monkeypatch.setattr(kube_client, "TOO_MANY_REQUESTS_RETRIES", 2)
    async with KubeClient(ClusterConfig(server=url)) as kube:
        with pytest.raises(ApiError) as err:
            await kube.request("GET", "/api/v1/namespaces/default", params={"busy": 99})
    assert err.value.status == 429 and "(re)initializing" in err.value.message
    assert answers == [429, 429, 429]
