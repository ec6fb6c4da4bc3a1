"""An HTTPS proxy in front of the real API server that can answer kubelock's paths as a restarting API
server does until its CRD informer has synced: with its own "404 page not found".

A kube-apiserver that restarts serves built-in paths at once, but a custom resource's path only once
it has registered the CRD: in between, every request for a claim answers a 404 that names no object.
The window is a few seconds at most and comes when it likes; this proxy opens it when a test says so,
for as long as it says, with the exact answer the real API server gives for a path it does not serve
(read from it by `unserved_answer`). Opening it aborts the connections in flight (watches included),
as the restart would.

TLS is terminated here with the API server's own serving certificate (it names 127.0.0.1), so a
client verifies the proxy with its kubeconfig's CA as it would the API server. Requests are forwarded
with their own headers (a bearer token authenticates through it; a client certificate would not).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

KUBELOCK_PATHS = "/apis/kubelock.dev/"
# Hop-by-hop or recomputed headers: never forwarded either way. Accept-Encoding is dropped so that the
# answer comes uncompressed, as it is passed on.
_SKIPPED = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                      "accept-encoding", "upgrade", "proxy-connection", "te", "trailer"})


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    unserved: bool  # answered by the proxy with the unserved 404
    at: float  # time.monotonic()


def unserved_answer(server: str, ca: Path, cert: Path, key: Path) -> Answer:
    """What the API server answers for a path under kubelock's API group that it does not serve."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))

    async def ask() -> Answer:
        async with aiohttp.ClientSession() as session, session.get(
            f"{server}/apis/kubelock.dev/v1alpha1/namespaces/default/notservedhere/x", ssl=context
        ) as response:
            return Answer(response.status, response.headers.get("Content-Type", ""), await response.read())

    return asyncio.run(ask())


class UnservingProxy:
    def __init__(self, upstream: str, *, ca: Path, serving_cert: Path, serving_key: Path, answer: Answer) -> None:
        self._upstream = upstream
        self._answer = answer
        self._client_tls = ssl.create_default_context(cafile=str(ca))
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_tls.load_cert_chain(str(serving_cert), str(serving_key))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="unserving-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._live: set[asyncio.BaseTransport] = set()  # the connections of requests in flight
        self._unserved_until = 0.0
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> UnservingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def unserve(self, seconds: float) -> None:
        """From now on, for `seconds`, answer kubelock's paths with the unserved 404; connections in
        flight are aborted, as a restart ends them."""
        with self._lock:
            self._unserved_until = time.monotonic() + seconds
        self._loop.call_soon_threadsafe(self._abort_live)

    def close_in(self, seconds: float) -> None:
        """End the window `seconds` from now (it may have been opened for longer)."""
        with self._lock:
            self._unserved_until = time.monotonic() + seconds

    def unserving(self) -> bool:
        with self._lock:
            return time.monotonic() < self._unserved_until

    def requests(self, method: str, path_part: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and path_part in s.path]

    # ---- in the proxy's thread ----------------------------------------------------------------

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._server_tls)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _stop(self) -> None:
        self._abort_live()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _abort_live(self) -> None:
        for transport in list(self._live):
            transport.abort()  # type: ignore[attr-defined]
        self._live.clear()

    def _record(self, request: web.Request, status: int, unserved: bool) -> None:
        with self._lock:
            self.seen.append(Seen(request.method, request.path, status, unserved, time.monotonic()))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(KUBELOCK_PATHS) and self.unserving():
            self._record(request, self._answer.status, True)
            return web.Response(status=self._answer.status, body=self._answer.body,
                                headers={"Content-Type": self._answer.content_type})
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIPPED}
        body = await request.read()
        transport = request.transport
        if transport is not None:
            self._live.add(transport)
        try:
            async with self._session.request(
                request.method, URL(self._upstream + request.path_qs, encoded=True), headers=headers,
                data=body or None, ssl=self._client_tls, timeout=aiohttp.ClientTimeout(total=None),
            ) as upstream:
                self._record(request, upstream.status, False)
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in _SKIPPED})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        finally:
            if transport is not None:
                self._live.discard(transport)
