"""A 404 that names no object ("404 page not found": a restarting API server serves a custom
resource's path only once its CRD informer has synced) says nothing of a claim or a lock: the SDK
takes it for passing trouble, retried, then `Unreachable`; only a 404 naming the object is "gone".
Pure parts, with a fake API client; the real API server's window is tested in
tests/integration/test_unserved_window.py."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubelock.kube import errors as kube_errors
from kubelock.kube.client import retry_delay
from kubelock.sdk import watching
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import NotFound, Unreachable
from kubelock.sdk.model import ClaimInfo


def unserved() -> kube_errors.Unserved:
    # What kube-apiserver answers for a path no handler serves (text/plain, no Status).
    error = kube_errors.from_response(404, None, "404 page not found")
    assert isinstance(error, kube_errors.Unserved) and not isinstance(error, kube_errors.NotFound)
    return error


def named_gone() -> kube_errors.NotFound:
    body = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
            "message": 'lockclaims.kubelock.dev "c" not found',
            "details": {"name": "c", "group": "kubelock.dev", "kind": "lockclaims"}}
    error = kube_errors.from_response(404, body)
    assert isinstance(error, kube_errors.NotFound)
    return error


def held_claim() -> ClaimInfo:
    expires = (datetime.now(UTC) + timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ClaimInfo.from_body({
        "metadata": {"name": "c", "namespace": "agents", "uid": "u1", "resourceVersion": "7"},
        "spec": {"resource": "x://r", "holder": "user:alice/shared"},
        "status": {"phase": "Held", "reason": "Granted", "message": "held", "holder": "user:alice/shared",
                   "fencingToken": 41, "lockName": "l", "expiresAt": expires, "renewedAt": expires},
    })


class Kube:
    """Answers each request with the next of `answers` (an error is raised, a body returned)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[str] = []

    async def _next(self, verb: str) -> Any:
        self.requests.append(verb)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def patch(self, path: str, body: Any, **_: Any) -> Any:
        return await self._next("patch")

    async def delete(self, path: str, **_: Any) -> Any:
        return await self._next("delete")

    async def get(self, path: str) -> Any:
        return await self._next("get")

    async def watch(self, path: str, **_: Any) -> Any:
        await self._next("watch")
        yield {}  # never reached: every watch in these tests fails


def client_with(kube: Kube) -> AsyncLockClient:
    client = AsyncLockClient.__new__(AsyncLockClient)
    client._seen = {}
    client._renewals = itertools.count()
    client.kube = kube  # type: ignore[assignment]
    return client


def test_an_unserved_404_is_transient_and_one_naming_the_object_is_gone() -> None:
    assert kube_errors.transient(unserved()) and not kube_errors.gone(unserved())
    assert kube_errors.gone(named_gone()) and not kube_errors.transient(named_gone())
    assert retry_delay(unserved(), 0, 4) is not None, "the SDK's client retries it as any passing trouble"
    assert retry_delay(named_gone(), 0, 4) is None


def test_a_renewal_meeting_an_unserved_path_is_trouble_not_a_deleted_claim() -> None:
    client = client_with(Kube(unserved()))
    with pytest.raises(Unreachable) as trouble:
        asyncio.run(client.renew_claim(held_claim(), "m", conditional=False))
    assert not isinstance(trouble.value, NotFound)
    assert "not served yet" in trouble.value.message


def test_a_renewal_meeting_a_404_naming_the_claim_says_it_no_longer_exists() -> None:
    client = client_with(Kube(named_gone()))
    with pytest.raises(NotFound, match="no longer exists"):
        asyncio.run(client.renew_claim(held_claim(), "m", conditional=False))


def test_a_release_meeting_an_unserved_path_tries_again_until_the_delete_is_served() -> None:
    kube = Kube(unserved(), unserved(), {})
    client = client_with(kube)
    asyncio.run(client.delete_claim(held_claim()))
    assert kube.requests == ["delete", "delete", "delete"], "not taken for a claim already gone"


def test_a_release_meeting_a_404_naming_the_claim_is_done() -> None:
    kube = Kube(named_gone())
    asyncio.run(client_with(kube).delete_claim(held_claim()))
    assert kube.requests == ["delete"]


def test_a_followed_claim_read_on_an_unserved_path_is_read_again_not_reported_deleted() -> None:
    """After a 410 the claim is read; an unserved answer there is retried: the claim is yielded as
    it is, never None (deleted)."""
    gone_version = kube_errors.from_response(410, {"reason": "Expired", "message": "too old"})
    body = {"metadata": {"name": "c", "namespace": "agents", "uid": "u1", "resourceVersion": "9"}}
    kube = Kube(gone_version, unserved(), gone_version, body)

    async def first() -> Any:
        async def no_wait(_: int) -> None:
            return None

        watching_backoff, watching.backoff = watching.backoff, no_wait  # type: ignore[assignment]
        try:
            stream = watching.follow_claim(kube, "agents", "c", "7")  # type: ignore[arg-type]
            try:
                return await anext(stream)
            finally:
                await stream.aclose()
        finally:
            watching.backoff = watching_backoff  # type: ignore[assignment]

    assert asyncio.run(first()) == body
    assert kube.requests == ["watch", "get", "watch", "get"]


def test_a_followed_claim_read_with_a_404_naming_it_is_deleted() -> None:
    gone_version = kube_errors.from_response(410, {"reason": "Expired", "message": "too old"})
    kube = Kube(gone_version, named_gone())

    async def first() -> Any:
        stream = watching.follow_claim(kube, "agents", "c", "7")  # type: ignore[arg-type]
        try:
            return await anext(stream)
        finally:
            await stream.aclose()

    assert asyncio.run(first()) is None


def test_a_404_naming_no_object_is_unserved_whatever_its_body_and_never_a_not_found() -> None:
    """The type decides, so that no `except NotFound` can take a restarting API server for a deletion:
    a plain-text "404 page not found" and a Status whose details name nothing are both `Unserved`."""
    status = {"kind": "Status", "reason": "NotFound", "code": 404, "details": {"kind": "lockclaims"}}
    for error in (unserved(), kube_errors.from_response(404, status), kube_errors.from_response(404, {})):
        assert isinstance(error, kube_errors.Unserved) and not isinstance(error, kube_errors.NotFound), error
        assert error.status == 404
    assert isinstance(named_gone(), kube_errors.NotFound) and not isinstance(named_gone(), kube_errors.Unserved)
