"""The protected system a lock guards, simulated: it accepts a write only with a fencing token at least
as large as the largest it has accepted for that resource, so a holder that was paused past its lease
(and replaced) is refused however late its write arrives.

The store lives in the harness process and speaks one JSON object per line over TCP on 127.0.0.1, so
a frozen agent process cannot reach into it and its delayed writes arrive as they would in reality.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from chaos.history import Write


class FencedStore:
    """The fencing rule and a log of every write, in the order the store decided them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._highest: dict[str, int] = {}
        self.log: list[Write] = []

    def write(self, agent: str, resource: str, token: int, phase: str = "") -> bool:
        top = self._highest.get(resource)
        accepted = top is None or token >= top
        if accepted:
            self._highest[resource] = token
        self.log.append(
            Write(
                seq=len(self.log),
                agent=agent,
                resource=resource,
                token=token,
                time=self._clock(),
                accepted=accepted,
                phase=phase,
            )
        )
        return accepted


class StoreServer:
    """`FencedStore` behind a line-based TCP protocol: `{"agent","resource","token","phase"}` → `{"ok"}`."""

    def __init__(self, store: FencedStore) -> None:
        self.store = store
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> StoreServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    ok = self.store.write(
                        str(request["agent"]), str(request["resource"]), int(request["token"]),
                        str(request.get("phase", "")),
                    )
                    answer: dict[str, object] = {"ok": ok}
                except (ValueError, KeyError, TypeError) as error:
                    answer = {"ok": False, "error": str(error)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class StoreClient:
    """One agent's connection to the store (reconnects after a failure)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def write(self, agent: str, resource: str, token: int, phase: str) -> bool:
        for attempt in range(3):
            try:
                if self._stream is None:
                    self._stream = await asyncio.open_connection("127.0.0.1", self._port)
                reader, writer = self._stream
                payload = {"agent": agent, "resource": resource, "token": token, "phase": phase}
                writer.write(json.dumps(payload).encode() + b"\n")
                await writer.drain()
                answer = json.loads(await reader.readline())
                return bool(answer.get("ok"))
            except (ConnectionError, OSError, ValueError):
                await self.close()
                if attempt == 2:
                    raise
        return False

    async def close(self) -> None:
        if self._stream is not None:
            writer = self._stream[1]
            self._stream = None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
