"""One operator replica's connection to a shared API server (the recording fake, or a real
`KubeClient`) whose requests a test can hold at chosen points, to make replicas interleave in an
order of its choosing rather than one the scheduler happens to produce.

`hold(verb, prefix)` returns a `Gate`: the next request of that verb whose path starts with the prefix
stops before it reaches the API server, `reached` is set, and it goes on once the test calls
`open()`. A gate holds one request; later ones pass.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]


@dataclass
class Gate:
    verb: str
    prefix: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.opened.set()


class GatedClient:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._gates: list[Gate] = []

    def hold(self, verb: str, prefix: str) -> Gate:
        gate = Gate(verb, prefix)
        self._gates.append(gate)
        return gate

    async def _pass(self, verb: str, path: str) -> None:
        for gate in self._gates:
            if gate.verb == verb and path.startswith(gate.prefix) and not gate.reached.is_set():
                gate.reached.set()
                await gate.opened.wait()
                return

    async def get(self, path: str, **params: Any) -> Body:
        await self._pass("get", path)
        return await self.client.get(path, **params)  # type: ignore[no-any-return]

    async def create(self, path: str, body: Body, **params: Any) -> Body:
        await self._pass("create", path)
        return await self.client.create(path, body, **params)  # type: ignore[no-any-return]

    async def patch(self, path: str, patch: Body, **params: Any) -> Body:
        await self._pass("patch", path)
        return await self.client.patch(path, patch, **params)  # type: ignore[no-any-return]

    async def replace(self, path: str, body: Body, **params: Any) -> Body:
        await self._pass("update", path)
        return await self.client.replace(path, body, **params)  # type: ignore[no-any-return]

    async def delete(self, path: str, **params: Any) -> Body:
        await self._pass("delete", path)
        return await self.client.delete(path, **params)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)  # everything else (list, watch, ...) goes straight through
