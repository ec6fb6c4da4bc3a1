"""`status.observedGeneration` of LockPolicies (kubelock.operator.policystatus): written once the
index has a generation, conditional on the body it was taken from, one write at a time per policy."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from kubelock.kube import errors as kube_errors
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import Conflict, Forbidden
from kubelock.operator.policystatus import PolicyStatus, unobserved

Body = dict[str, Any]


def policy(generation: int, version: str, observed: int | None = None, name: str = "p") -> Body:
    body: Body = {"metadata": {"namespace": "ns", "name": name, "generation": generation, "resourceVersion": version},
                  "spec": {"resourcePrefix": "deploy://"}}
    if observed is not None:
        body["status"] = {"observedGeneration": observed}
    return body


class Recorder:
    """The API server as the writer sees it: records each patch, answers as told."""

    def __init__(self, answers: list[BaseException | None] | None = None) -> None:
        self.patches: list[tuple[str, Body]] = []
        self.answers = list(answers or [])
        self.gate = asyncio.Event()
        self.gate.set()
        self.patched = asyncio.Event()  # set at each patch

    async def patch(self, path: str, patch: Body, **params: Any) -> Body:
        await self.gate.wait()
        self.patches.append((path, patch))
        self.patched.set()
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        return {}


async def patches(api: Recorder, count: int) -> None:
    """Until `count` patches were sent; the retries' backoff starts at 0.1 s: 30 s is generous on a
    busy machine (a write never retried fails the test with TimeoutError)."""
    async with asyncio.timeout(30):
        while len(api.patches) < count:
            api.patched.clear()
            await api.patched.wait()


async def settle(writer: PolicyStatus) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await writer.stop()


@pytest.mark.parametrize(
    ("body", "expected"),
    [(policy(1, "5"), 1), (policy(2, "9", observed=1), 2), (policy(2, "9", observed=2), None),
     ({"metadata": {"name": "p"}}, None), ({"metadata": {"generation": True}}, None)],
)
def test_unobserved_is_the_generation_its_status_lacks(body: Body, expected: int | None) -> None:
    assert unobserved(body) == expected


async def test_the_generation_is_written_with_the_bodys_version_as_precondition() -> None:
    api = Recorder()
    writer = PolicyStatus(cast(KubeClient, api))
    writer.observed(policy(3, "41"))
    writer.observed(policy(3, "42", observed=3))  # recorded already: nothing to write
    await settle(writer)
    assert api.patches == [("/apis/kubelock.dev/v1alpha1/namespaces/ns/lockpolicies/p/status",
                            {"metadata": {"resourceVersion": "41"}, "status": {"observedGeneration": 3}})]


async def test_a_body_seen_while_a_write_is_in_flight_is_written_after_it() -> None:
    api = Recorder([Conflict(409, "Conflict", "changed")])  # the first write meets the change
    api.gate.clear()
    writer = PolicyStatus(cast(KubeClient, api))
    writer.observed(policy(1, "10"))
    await asyncio.sleep(0)
    writer.observed(policy(2, "11"))
    writer.observed(policy(3, "12"))  # only the latest waits
    api.gate.set()
    await settle(writer)
    assert [p["status"]["observedGeneration"] for _, p in api.patches] == [1, 3]


async def test_a_refused_write_is_said_once_and_nothing_else_stops(caplog: pytest.LogCaptureFixture) -> None:
    api = Recorder([Forbidden(403, "Forbidden", "no lockpolicies/status"), Forbidden(403, "Forbidden", "again")])
    writer = PolicyStatus(cast(KubeClient, api))
    writer.observed(policy(1, "1"))
    await settle(writer)
    writer.observed(policy(2, "2"))
    await settle(writer)
    assert len(api.patches) == 2
    refusals = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
    assert len(refusals) == 1, refusals  # said once per policy, not at each write
    assert "LockPolicy ns/p" in refusals[0] and "observedGeneration 1" in refusals[0]


@pytest.mark.parametrize(
    "trouble",
    [kube_errors.from_response(404, None, "404 page not found"),  # a restarting API server: path not served yet
     kube_errors.from_response(503, {"reason": "ServiceUnavailable", "message": "starting"}),
     kube_errors.Unreachable("connection refused")],
)
async def test_trouble_is_retried_until_the_write_is_answered(trouble: BaseException) -> None:
    """Dropped, the generation would stay unrecorded until the policy next changed, and its writer
    would wait for it in vain: the write is tried again, on the same body, until it is answered."""
    api = Recorder([trouble, trouble])
    writer = PolicyStatus(cast(KubeClient, api))
    writer.observed(policy(4, "7"))
    await patches(api, 3)
    await writer.stop()
    written = {"metadata": {"resourceVersion": "7"}, "status": {"observedGeneration": 4}}
    assert [p for _, p in api.patches] == [written] * 3


async def test_a_retried_write_gives_way_to_a_newer_body() -> None:
    api = Recorder([kube_errors.from_response(404, None, "404 page not found")])
    api.gate.clear()
    writer = PolicyStatus(cast(KubeClient, api))
    writer.observed(policy(1, "10"))
    await asyncio.sleep(0)
    writer.observed(policy(2, "11"))  # arrives while the first write is in flight, and fails
    api.gate.set()
    await patches(api, 2)
    await asyncio.sleep(0.3)  # room for a wrong third write
    await writer.stop()
    assert [p["status"]["observedGeneration"] for _, p in api.patches] == [1, 2]
