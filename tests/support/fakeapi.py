"""A recording stand-in for `KubeClient` in unit tests of the operator's write path.

It keeps objects by path, gives each write a new resourceVersion from one counter (as etcd does),
honours `metadata.resourceVersion` in merge patches, `metadata.resourceVersion` and `uid` in status
updates (PUT of `.../status`: the status is replaced, spec and metadata kept) and uid and
resourceVersion preconditions on deletes, and records
every request as (verb, path). `react(verb, fn)` replaces one verb's behaviour (return a body,
raise, e.g. a 409, or act around the default), the way client-go's fake clientset takes reactors.
It is for asserting which writes a step makes; what the real API server does is tested in
tests/integration.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from kubelock.kube.errors import Conflict, NotFound
from kubelock.kube.serverclock import ServerClock

Body = dict[str, Any]
# A reaction gets the request's path and body and the verb's default behaviour (call it to go ahead).
Reaction = Callable[[str, Body | None, Callable[[], Body]], Awaitable[Body]]
WRITES = frozenset({"create", "patch", "update", "delete"})


class FakeApi:
    def __init__(self, first_version: int = 100) -> None:
        self.objects: dict[str, Body] = {}
        self.requests: list[tuple[str, str]] = []
        self.server_clock = ServerClock()  # no answer dated: this machine's clock stands in
        self._versions = itertools.count(first_version)
        self._uids = itertools.count(1)
        self._reactions: dict[str, Reaction] = {}

    def react(self, verb: str, reaction: Reaction) -> None:
        self._reactions[verb] = reaction

    def put(self, path: str, body: Body) -> Body:
        """Store an object as if created at a new version (test set-up, not recorded)."""
        stored = copy.deepcopy(body)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[path] = stored
        return copy.deepcopy(stored)

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [(verb, path) for verb, path in self.requests if verb in WRITES]

    async def _call(self, verb: str, path: str, body: Body | None, default: Callable[[], Body]) -> Body:
        self.requests.append((verb, path))
        reaction = self._reactions.get(verb)
        if reaction is not None:
            return await reaction(path, body, default)
        return default()

    async def get(self, path: str) -> Body:
        return await self._call("get", path, None, lambda: copy.deepcopy(self._stored(path)))

    async def create(self, path: str, body: Body, **params: Any) -> Body:
        def default() -> Body:
            meta = body["metadata"]
            name = meta.get("name") or f"{meta['generateName']}{next(self._uids):05d}"
            target = f"{path}/{name}"
            if target in self.objects:
                raise Conflict(409, "AlreadyExists", f"{name} already exists")
            return self.put(target, {**body, "metadata": {**meta, "name": name}})

        return await self._call("create", path, body, default)

    async def patch(self, path: str, patch: Body, **params: Any) -> Body:
        def default() -> Body:
            target = path.removesuffix("/status")
            stored = self._stored(target)
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != stored["metadata"]["resourceVersion"]:
                raise Conflict(409, "Conflict", "the object has been modified")
            _merge(stored, patch)
            stored["metadata"]["resourceVersion"] = str(next(self._versions))
            return copy.deepcopy(stored)

        return await self._call("patch", path, patch, default)

    async def replace(self, path: str, body: Body) -> Body:
        def default() -> Body:
            if not path.endswith("/status"):
                raise NotImplementedError("the operator PUTs only status subresources")
            stored = self._stored(path.removesuffix("/status"))
            meta = body.get("metadata") or {}
            for key in ("uid", "resourceVersion"):
                if meta.get(key) is not None and meta[key] != stored["metadata"][key]:
                    raise Conflict(409, "Conflict", f"{key} precondition failed")
            stored["status"] = copy.deepcopy(body.get("status") or {})
            stored["metadata"]["resourceVersion"] = str(next(self._versions))
            return copy.deepcopy(stored)

        return await self._call("update", path, body, default)

    async def delete(self, path: str, *, uid: str | None = None, resource_version: str | None = None) -> Body:
        def default() -> Body:
            stored = self._stored(path)
            if uid is not None and stored["metadata"]["uid"] != uid:
                raise Conflict(409, "Conflict", "uid precondition failed")
            if resource_version is not None and stored["metadata"]["resourceVersion"] != resource_version:
                raise Conflict(409, "Conflict", "resourceVersion precondition failed")
            del self.objects[path]
            return stored

        return await self._call("delete", path, None, default)

    def _stored(self, path: str) -> Body:
        try:
            return self.objects[path]
        except KeyError:
            # As the API server answers: a Status naming the object (`details.name`).
            name = path.rsplit("/", 1)[-1]
            body = {"kind": "Status", "reason": "NotFound", "code": 404, "details": {"name": name}}
            raise NotFound(404, "NotFound", f"{path} not found", body) from None


def _merge(target: Body, patch: Body) -> None:
    """A JSON merge patch (RFC 7386)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class ClosedGate:
    """A freshness gate that lets no grant through (the view is never fresh enough)."""

    epoch = 0

    def may_grant(self, namespace: str, sequence: int) -> bool:
        return False

    def why_not(self, namespace: str, sequence: int) -> str:
        return "closed"

    def wrote(self, namespace: str, version: int) -> None:
        pass
