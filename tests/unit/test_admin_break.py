"""`kubelock unlock` against a lock that changes under it (the recording fake API): a lock object may
carry one holder after another (the operator hands it over in one update), so a break goes on only
while the lock still holds the grant it chose, and its deletion rests on the version it annotated."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kubelock.api.constants import BREAK_ACTOR_ANNOTATION
from kubelock.kube import paths
from kubelock.sdk.admin import AsyncAdmin
from kubelock.sdk.model import LockInfo
from tests.support.fakeapi import FakeApi

LOCK = paths.locks("a", "deploy-db")
Body = dict[str, Any]


def _lock(api: FakeApi) -> LockInfo:
    body = api.put(LOCK, {
        "metadata": {"name": "deploy-db", "namespace": "a"},
        "spec": {
            "resource": "deploy://db", "holder": "agent-a", "claimRef": {"name": "a", "uid": "u-a"},
            "leaseDurationSeconds": 60, "acquireTime": "2026-11-26T10:00:00Z", "renewTime": "2026-11-26T10:00:00Z",
            "fencingToken": 0,
        },
    })
    return LockInfo.from_body(body)


def _admin(api: FakeApi) -> AsyncAdmin:
    admin = AsyncAdmin.__new__(AsyncAdmin)
    admin.kube = api  # type: ignore[assignment]
    return admin


def _before_first_delete(api: FakeApi, change: Callable[[Body], None]) -> None:
    """Between the break's record and its deletion, the operator writes the lock once."""
    done: list[bool] = []

    async def reaction(path: str, body: Body | None, default: Callable[[], Body]) -> Body:
        if not done:
            done.append(True)
            stored = api.objects[LOCK]
            change(stored["spec"])
            stored["metadata"]["resourceVersion"] = str(next(api._versions))
        return default()

    api.react("delete", reaction)


def _run(step: Awaitable[LockInfo | None]) -> LockInfo | None:
    return asyncio.run(step)  # type: ignore[arg-type]


def test_a_lock_handed_to_the_next_holder_meanwhile_is_not_broken() -> None:
    api = FakeApi()
    lock = _lock(api)

    def handed_over(spec: Body) -> None:
        spec.update(holder="agent-b", claimRef={"name": "b", "uid": "u-b"}, fencingToken=0)

    _before_first_delete(api, handed_over)
    assert _run(_admin(api)._break(lock, "admin", "stuck")) is None
    assert api.objects[LOCK]["spec"]["claimRef"]["uid"] == "u-b"  # the next holder keeps it
    assert [v for v, _ in api.requests] == ["patch", "delete", "get"]


def test_a_lock_renewed_meanwhile_is_broken_on_its_new_version() -> None:
    api = FakeApi()
    lock = _lock(api)

    def renewed(spec: Body) -> None:
        spec.update(renewTime="2026-11-26T10:00:20Z")

    _before_first_delete(api, renewed)
    broken = _run(_admin(api)._break(lock, "admin", "stuck"))
    assert broken is not None and broken.annotations[BREAK_ACTOR_ANNOTATION] == "admin"
    assert LOCK not in api.objects
    assert [v for v, _ in api.requests] == ["patch", "delete", "get", "patch", "delete"]
