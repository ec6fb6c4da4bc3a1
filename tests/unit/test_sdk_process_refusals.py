"""What a process is told when another live process of its instance made (or adopted) the claim, for
each thing it may not do to it, word for word; and adoption's one conditional write of the process
mark: written on an ended maker's claim, not written on a claim this process marked, and refused
("not adopted") when another live process wins the write. The process marks are real: this test's
parent process is another live process here."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubelock.api.constants import PROCESS_ANNOTATION
from kubelock.kube import errors as kube_errors
from kubelock.sdk import process
from kubelock.sdk.client import AsyncLockClient, Doing, _refuse_other_process
from kubelock.sdk.errors import HeldByAnotherProcess
from kubelock.sdk.identity import Identity
from kubelock.sdk.model import ClaimInfo
from kubelock.sdk.targets import Target

HOLDER = "user:alice/shared"
IDENT = Identity(holder=HOLDER, namespace="agents")


def claim(mark: str, version: str = "7", uid: str = "u1") -> ClaimInfo:
    return ClaimInfo.from_body(claim_body(mark, version, uid))


def claim_body(mark: str, version: str = "7", uid: str = "u1") -> dict[str, Any]:
    expires = (datetime.now(UTC) + timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "c", "namespace": "agents", "uid": uid, "resourceVersion": version,
                     "annotations": {PROCESS_ANNOTATION: mark}},
        "spec": {"resource": "x://r", "holder": HOLDER},
        "status": {"phase": "Held", "reason": "Granted", "message": "held", "holder": HOLDER,
                   "fencingToken": 41, "lockName": "l", "expiresAt": expires, "renewedAt": expires},
    }


def parent_mark() -> process.ProcessMark:
    parent = process.mark_of(os.getppid())
    own = process.current()
    if parent is None or own is None or parent.pid_namespace != own.pid_namespace:
        pytest.skip("needs /proc with this process's parent in its pid namespace")
    return parent


def ended_mark() -> str:
    """A mark of this boot and pid namespace whose process is gone (a start time no process has)."""
    own = process.current()
    assert own is not None
    return str(process.ProcessMark(own.boot_id, own.pid_namespace, own.pid, own.start_time + 1))


HEAD = "another live process (pid {pid}) of holder user:alice/shared holds this claim (agents/c on x://r); "


@pytest.mark.parametrize(("doing", "expected"), [
    ("acquire", HEAD + "give each process its own KUBELOCK_INSTANCE (or instance=)"),
    ("adopt", "not adopted: " + HEAD + "it adopted this claim at the same time and won; give each process its "
              "own KUBELOCK_INSTANCE (or instance=)"),
    ("release", "not released: " + HEAD + "only that process releases it (or its end does); to release it from "
                "here, end pid {pid}"),
    ("renew", "not renewed: " + HEAD + "only that process renews it (`kubelock run` and the SDK's lock() renew "
              "their own); once pid {pid} has ended this instance may renew it"),
])
def test_each_refusal_says_what_was_not_done_and_what_to_do(doing: Doing, expected: str) -> None:
    parent = parent_mark()
    with pytest.raises(HeldByAnotherProcess) as refused:
        _refuse_other_process(claim(str(parent)), doing=doing)
    assert refused.value.message == expected.format(pid=parent.pid)
    assert refused.value.reason == "HeldByAnotherProcess"


def test_no_refusal_for_an_ended_maker_or_this_process() -> None:
    own = process.current()
    if own is None:
        pytest.skip("needs /proc")
    for mark in (ended_mark(), str(own), "not a mark"):
        _refuse_other_process(claim(mark), doing="renew")


class Kube:
    """The claim's API as adoption uses it: a conditional merge patch, answered by `answer`."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.patches: list[dict[str, Any]] = []

    async def patch(self, path: str, body: dict[str, Any], **_: Any) -> Any:
        self.patches.append(body)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(body)


def adopting(kube: Kube, reread: ClaimInfo | None = None) -> AsyncLockClient:
    client = AsyncLockClient.__new__(AsyncLockClient)
    client.kube = kube  # type: ignore[assignment]

    async def own_claim(*_: Any) -> ClaimInfo | None:
        return reread

    client._own_claim = own_claim  # type: ignore[method-assign, assignment]
    return client


def test_adoption_rewrites_an_ended_makers_mark_in_one_write_on_the_version_read() -> None:
    own = process.current()
    if own is None:
        pytest.skip("needs /proc")
    found = claim(ended_mark(), version="7")

    def stored(patch: dict[str, Any]) -> Any:
        return claim_body(patch["metadata"]["annotations"][PROCESS_ANNOTATION], version="8")

    kube = Kube(stored)
    adopted = asyncio.run(adopting(kube)._adopt(IDENT, Target.of("x://r"), found))
    assert kube.patches == [{"metadata": {"resourceVersion": "7", "annotations": {PROCESS_ANNOTATION: str(own)}}}]
    assert adopted is not None
    assert (adopted.process, adopted.fencing_token, adopted.resource_version) == (str(own), 41, "8")


def test_a_claim_this_process_marked_is_taken_without_a_write() -> None:
    own = process.current()
    if own is None:
        pytest.skip("needs /proc")
    kube = Kube(kube_errors.Conflict(409, "Conflict", "unexpected"))
    found = claim(str(own))
    assert asyncio.run(adopting(kube)._adopt(IDENT, Target.of("x://r"), found)) is found
    assert kube.patches == []


def test_losing_the_adoption_write_to_a_live_process_is_refused_not_adopted() -> None:
    parent = parent_mark()
    kube = Kube(kube_errors.Conflict(409, "Conflict", "the object has been modified"))
    won = claim(str(parent), version="8")  # the winner's write, read again after the conflict
    with pytest.raises(HeldByAnotherProcess) as refused:
        asyncio.run(adopting(kube, won)._adopt(IDENT, Target.of("x://r"), claim(ended_mark())))
    assert refused.value.message.startswith(f"not adopted: another live process (pid {parent.pid})")
    assert len(kube.patches) == 1


def test_a_claim_replaced_while_adopting_starts_the_acquire_again() -> None:
    if process.current() is None:
        pytest.skip("needs /proc")
    kube = Kube(kube_errors.Conflict(409, "Conflict", "the object has been modified"))
    other = claim(ended_mark(), version="9", uid="u2")  # deleted and made again meanwhile
    assert asyncio.run(adopting(kube, other)._adopt(IDENT, Target.of("x://r"), claim(ended_mark()))) is None
