"""A renewal of a claim another live process of this instance made is refused before anything is
written (`HeldByAnotherProcess`), as its adoption and its release are: the renewal would answer
with the lock's fencing token as if this process held it, and keep alive a lease that stands for the
maker. A claim whose maker is this very process, or is gone, is renewed as before. The process
marks are real: this test's parent process is another live process here."""

from __future__ import annotations

import asyncio
import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubelock.api.constants import PROCESS_ANNOTATION
from kubelock.kube.serverclock import ServerClock
from kubelock.sdk import process
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import HeldByAnotherProcess
from kubelock.sdk.identity import Identity
from kubelock.sdk.model import ClaimInfo


def held_claim(mark: str) -> ClaimInfo:
    expires = (datetime.now(UTC) + timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ClaimInfo.from_body({
        "metadata": {"name": "c", "namespace": "agents", "uid": "u1", "resourceVersion": "7",
                     "annotations": {PROCESS_ANNOTATION: mark}},
        "spec": {"resource": "x://r", "holder": "user:alice/shared"},
        "status": {"phase": "Held", "reason": "Granted", "message": "held", "holder": "user:alice/shared",
                   "fencingToken": 41, "lockName": "l", "expiresAt": expires, "renewedAt": expires},
    })


class Written(Exception):
    """The renewal's write was sent (the fake ends the call there)."""


class Kube:
    def __init__(self) -> None:
        self.patches: list[str] = []
        self.server_clock = ServerClock()

    async def patch(self, path: str, body: Any, **_: Any) -> Any:
        self.patches.append(path)
        raise Written(path)


def client_with(claim: ClaimInfo, kube: Kube) -> AsyncLockClient:
    client = AsyncLockClient.__new__(AsyncLockClient)
    client._seen = {}
    client._renewals = itertools.count()
    client.kube = kube  # type: ignore[assignment]

    async def identity() -> Identity:
        return Identity(holder="user:alice/shared", namespace="agents")

    async def own_claim(*_: Any) -> ClaimInfo:
        return claim

    client.identity = identity  # type: ignore[method-assign]
    client._own_claim = own_claim  # type: ignore[method-assign, assignment]
    return client


def test_a_renewal_of_a_claim_another_live_process_made_is_refused_unwritten() -> None:
    parent = process.mark_of(os.getppid())
    own = process.current()
    if parent is None or own is None or parent.pid_namespace != own.pid_namespace:
        pytest.skip("needs /proc with this process's parent in its pid namespace")
    kube = Kube()
    client = client_with(held_claim(str(parent)), kube)
    with pytest.raises(HeldByAnotherProcess) as refused:
        asyncio.run(client.heartbeat("x://r"))
    assert refused.value.message.startswith(f"not renewed: another live process (pid {parent.pid}) of holder "
                                            "user:alice/shared holds this claim (agents/c on x://r)")
    assert f"once pid {parent.pid} has ended this instance may renew it" in refused.value.message
    assert kube.patches == []


def test_a_claim_of_this_very_process_is_renewed() -> None:
    own = process.current()
    if own is None:
        pytest.skip("needs /proc")
    kube = Kube()
    client = client_with(held_claim(str(own)), kube)
    with pytest.raises(Written):  # it went on to write the renewal
        asyncio.run(client.heartbeat("x://r"))
    assert kube.patches == ["/apis/kubelock.dev/v1alpha1/namespaces/agents/lockclaims/c"]
