"""A TCP proxy on 127.0.0.1 in front of the API server, so the harness can cut every connection
through it (watches included) at a moment of its choosing, as a load balancer or a network blip would.

TLS passes through untouched: the apiserver's certificate names 127.0.0.1, which is where the proxy
listens too, so clients verify it as usual.
"""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.port = 0
        self.cuts = 0

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cut(self) -> int:
        """Abort every open connection (both sides at once, no orderly close); returns how many."""
        links = list(self._links)
        self._links.clear()
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        self.cuts += len(links)
        return len(links)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            for side in link:
                side.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    # One direction ended: end the other too, so neither side waits on a half-closed link.
    writer.transport.abort()
