"""The client's bound on requests under way at once (`KubeClient(in_flight=N)`): the rest wait their
turn in the order they came, and a watch, which holds its connection for minutes, takes no turn.

The server is a real HTTP server on the loopback interface that counts the requests it is answering
at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials

PATH = "/apis/kubelock.dev/v1alpha1/namespaces/default/lockclaims"


class Server:
    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.order: list[str] = []
        self.watching = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            self.watching.set()
            await asyncio.sleep(3600)  # a watch with nothing to tell: it holds its connection
            return response
        self.order.append(request.path)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.now -= 1
        return web.Response(text=json.dumps({"kind": "LockClaim", "metadata": {"name": "x"}}),
                            content_type="application/json")


async def _serve(server: Server) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("in_flight", [4, None])
async def test_at_most_the_bound_are_under_way_and_they_go_in_the_order_they_came(in_flight: int | None) -> None:
    server = Server()
    async for url in _serve(server):
        async with KubeClient(Credentials(server=url), in_flight=in_flight) as client:
            paths = [f"{PATH}/c{i}" for i in range(20)]
            await asyncio.gather(*(client.get(p) for p in paths))
    if in_flight is None:
        assert server.most > 4  # only the connections (200) bound them
        return
    assert server.most == in_flight
    # First come, first sent: the requests under way together may reach the server in any order
    # among themselves, but none overtakes one that waited for its turn before it.
    assert all(abs(server.order.index(p) - i) < in_flight for i, p in enumerate(paths))


async def test_a_watch_takes_no_turn() -> None:
    server = Server()
    async for url in _serve(server):
        async with KubeClient(Credentials(server=url), in_flight=1) as client:

            async def watch() -> None:
                async for _ in client.watch(PATH):
                    pass

            watching = asyncio.ensure_future(watch())
            await asyncio.wait_for(server.watching.wait(), 30)
            try:
                await asyncio.wait_for(asyncio.gather(*(client.get(f"{PATH}/c{i}") for i in range(3))), 30)
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
    assert server.most == 1
