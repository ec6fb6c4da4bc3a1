"""A claim whose deletion was asked for (deletionTimestamp) is released, though a finalizer keeps the
object and its status still says Held: its holder and its waiter read it as gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from kubelock.cli.output import claim, claims_table, explanation_text
from kubelock.sdk.admin import Explanation
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import Revoked
from kubelock.sdk.model import ClaimInfo
from kubelock.sdk.watching import follow_claim

Body = dict[str, Any]


def later() -> str:
    """An hour from now, taken when a body is built (not when the module is collected: a test run may
    reach this module's tests more than an hour after collecting it)."""
    return (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def held(version: str, *, deleting: bool = False) -> Body:
    meta: Body = {"name": "c", "namespace": "ns", "uid": "u1", "resourceVersion": version}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T12:00:00Z"
        meta["finalizers"] = ["example.com/audit"]
    return {"metadata": meta, "spec": {"resource": "x://r", "holder": "user:a/w1"},
            "status": {"phase": "Held", "holder": "user:a/w1", "fencingToken": 7, "expiresAt": later()}}


def test_a_held_claim_being_deleted_is_not_held() -> None:
    assert ClaimInfo.from_body(held("5")).held
    info = ClaimInfo.from_body(held("6", deleting=True))
    assert info.deleting and not info.held


async def test_its_holder_is_told_the_claim_was_released() -> None:
    client = AsyncLockClient.__new__(AsyncLockClient)
    error = await client.error_for(ClaimInfo.from_body(held("6", deleting=True)))
    assert isinstance(error, Revoked) and error.reason == "Released"
    assert "released when its deletion was asked for" in error.message


class Watch:
    """A KubeClient whose one watch delivers the given events, then ends."""

    def __init__(self, events: list[Body]) -> None:
        self.events = events

    async def watch(self, path: str, **params: Any) -> AsyncIterator[Body]:
        if not self.events:
            raise AssertionError("the watch was resumed: following the claim did not end")
        for event in self.events:
            yield event
        self.events = []


async def states(kube: Watch, limit: int = 5) -> list[Body | None]:
    out: list[Body | None] = []
    async for body in follow_claim(kube, "ns", "c", "4"):  # type: ignore[arg-type]
        out.append(body)
        if body is None or len(out) >= limit:
            break
    return out


async def test_following_a_claim_ends_when_its_deletion_is_asked_for() -> None:
    kube = Watch([{"type": "MODIFIED", "object": held("5")}, {"type": "MODIFIED", "object": held("6", deleting=True)}])
    assert [None if s is None else s["metadata"]["resourceVersion"] for s in await states(kube)] == ["5", None]


def test_the_commands_show_it_as_deleting_not_held() -> None:
    info = ClaimInfo.from_body(held("6", deleting=True))
    assert claim(info)["deleting"] is True
    row = claims_table([info]).splitlines()[1].split()
    assert row[2] == "Deleting" and row[4] == "-"  # no lease left to count down
    assert claims_table([ClaimInfo.from_body(held("5"))]).splitlines()[1].split()[2] == "Held"


def test_why_says_it_was_released() -> None:
    text = explanation_text(Explanation(claim=ClaimInfo.from_body(held("6", deleting=True)), lock=None, ahead=()))
    assert "deleting:  its deletion was asked for: released then" in text
    assert "token:" not in text
