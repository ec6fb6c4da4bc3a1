"""A release the API server refuses until its deadline says so: seen on the test-bed node, a holder
whose pod had been deleted while its kubelet was stopped tried to release with the pod's token,
which the API server no longer accepted (401 each time), and was told "no answer from the API server"."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubelock.kube import errors as kube_errors
from kubelock.sdk import client as sdk_client
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import Forbidden, LockError, Unreachable
from kubelock.sdk.model import ClaimInfo

CLAIM = ClaimInfo.from_body({"metadata": {"name": "c", "namespace": "agents", "uid": "u1"},
                             "spec": {"resource": "x://r", "holder": "pod:agents/p/1234abcd"}})


class Kube:
    def __init__(self, answer: BaseException | None) -> None:
        self.answer = answer
        self.deletes = 0

    async def delete(self, path: str, **_: Any) -> None:
        self.deletes += 1
        if self.answer is None:
            await asyncio.sleep(3600)  # a silent connection
        # A loaded API server answers slowly: the release's deadline (0.5 s) comes during the second
        # try (the first ends at 0.3 s, the wait before the next is 0.05-0.2 s).
        await asyncio.sleep(0.3)
        raise self.answer


def release(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> BaseException:
    monkeypatch.setattr(sdk_client, "DELETE_SECONDS", 0.5)
    client = AsyncLockClient.__new__(AsyncLockClient)
    client._seen = {}
    client.kube = kube  # type: ignore[assignment]
    with pytest.raises(LockError) as caught:
        asyncio.run(client.delete_claim(CLAIM))
    return caught.value


def test_a_release_refused_until_its_deadline_names_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = Kube(kube_errors.Unauthorized(401, "Unauthorized", "Unauthorized", {}))
    error = release(kube, monkeypatch)
    assert kube.deletes >= 2  # tried again: an authorizer may still be catching up
    assert isinstance(error, Forbidden), error
    assert "did not accept the credentials (401 Unauthorized" in str(error)


def test_a_release_never_answered_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    error = release(Kube(None), monkeypatch)
    assert isinstance(error, Unreachable), error
    assert "no answer from the API server within 0.5s" in str(error)
