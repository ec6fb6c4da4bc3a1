"""A waiter whose first answer is overdue is told Pending in the step that grants it, or that ends
the grant before its own, instead of only Held once the grant is stored.

Under load each write takes a second or more: behind a holder whose pod died, the next waiter's
first phase was the end of four writes in sequence (the holder's Revoked status, the lock's
deletion, the new lock, Held), 5-10 s after its creation (docs/reliability.md, "A claim granted next
waits for its first answer"). A claim decided soon after its creation (an unloaded operator: within
milliseconds) is granted without the extra write.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from kubelock.domain.arbiter import FIRST_ANSWER_DUE_SECONDS, decide, due_answers
from kubelock.domain.clock import ManualClock
from kubelock.domain.lockpolicy import LockPolicy, Quotas
from kubelock.domain.model import PodLiveness, Policy
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.resource import lock_name
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import paths
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.arbitration import POLICY, RES, T0, claim, graph_for, holding, lock_for, run, statuses, summary
from tests.support.fakeapi import FakeApi

NOW = T0 + 31
OLD = NOW - FIRST_ANSWER_DUE_SECONDS  # created this long before the decision: overdue
NEW = NOW - 1  # created within the second before: its grant is on time, no extra write


def test_an_overdue_waiter_granted_on_a_free_resource_is_told_pending_beside_the_create() -> None:
    decision = run([claim("w", 6, wait=True, created=OLD)], None, NOW)
    assert summary(decision) == [("create", "w", 1800), ("status", "w", Phase.PENDING, Reason.QUEUED)]
    told = statuses(decision)["w"]
    assert (told.queue_position, told.holder, told.sequence, told.waiting_since) == (1, None, 6, NOW)
    assert "granted next" in told.message


def test_a_waiter_decided_soon_after_its_creation_is_only_granted() -> None:
    assert summary(run([claim("w", 6, wait=True, created=NEW)], None, NOW)) == [("create", "w", 1800)]


def test_the_next_waiter_behind_an_expiry_is_told_pending_beside_the_expired_status() -> None:
    """An expiry is two writes (Expired, the lock's deletion) before the next grant's two."""
    holder = claim("a", 5)
    lock = lock_for(holder, lease=30)
    decision = run([holding(holder, lock), claim("d", 6, wait=True, created=OLD), claim("c", 7)], lock, NOW)
    assert summary(decision) == [
        ("status", "a", Phase.EXPIRED, Reason.LEASE_EXPIRED),
        ("status", "d", Phase.PENDING, Reason.QUEUED),
        ("status", "c", Phase.REJECTED, Reason.HELD_BY_ANOTHER),
        ("delete", "a", Reason.LEASE_EXPIRED),
    ]
    assert statuses(decision)["d"].queue_position == 1


def test_the_next_waiter_behind_a_dead_holder_is_told_pending_beside_the_revocation() -> None:
    holder = claim("a", 5, pod_name="p", pod=PodLiveness.TERMINATED)
    lock = lock_for(holder)
    decision = run([holding(holder, lock), claim("d", 6, wait=True, created=OLD)], lock, NOW)
    assert summary(decision) == [
        ("status", "a", Phase.REVOKED, Reason.HOLDER_POD_TERMINATED),
        ("status", "d", Phase.PENDING, Reason.QUEUED),
        ("delete", "a", Reason.HOLDER_POD_TERMINATED),
    ]


def test_the_next_waiter_behind_a_release_is_told_pending_beside_it() -> None:
    """A release (the holder's claim deleted) that hands the lock over is one write; the reconciler
    sends the answer beside it (`_with_next_grants` keeps the release step's first answers)."""
    gone = lock_for(claim("a", 5))
    decision = run([claim("d", 6, wait=True, created=OLD), claim("e", 8, wait=True, created=NEW)], gone, NOW)
    assert summary(decision) == [
        ("status", "d", Phase.PENDING, Reason.QUEUED),
        ("status", "e", Phase.PENDING, Reason.QUEUED),
        ("delete", "a", Reason.RELEASED),
    ]
    assert (statuses(decision)["d"].queue_position, statuses(decision)["e"].holder) == (1, "d")


def test_a_try_lock_is_never_told_pending() -> None:
    assert summary(run([claim("t", 6, created=OLD)], None, NOW)) == [("create", "t", 1800)]


def test_a_claim_answered_before_gets_no_second_first_answer() -> None:
    queued = claim("w", 6, wait=True, created=OLD)
    told = statuses(run([queued], None, NOW))["w"]
    assert summary(run([replace(queued, status=told)], None, NOW + 1)) == [("create", "w", 1800)]


def test_under_a_policy_with_quotas_a_grant_is_not_also_counted_as_a_wait() -> None:
    quota = LockPolicy("deploys", "deploy://", quotas=Quotas(max_waiting_per_holder=1))
    waiter = claim("w", 6, wait=True, created=OLD)
    decision = decide(RES, [waiter], [], now=NOW, policy=POLICY, graph=graph_for([waiter], []), lock_policy=quota)
    assert summary(decision) == [("create", "w", 1800)]
    assert due_answers(RES, [waiter], [], NOW, quota) == []


def test_a_claim_without_a_known_creation_is_not_overdue() -> None:
    assert due_answers(RES, [claim("w", 6, wait=True, created=0.0)], [], NOW) == []



def _hand_over_writes(waiter_age: float) -> list[tuple[str, str, str | None]]:
    """The writes of one reconcile that sees the holder's claim deleted and a waiter created
    `waiter_age` seconds ago not yet answered (both arrived while the key was busy), with the phase
    each status write of the waiter sets."""
    clock = ManualClock(T0)
    api, cache = FakeApi(), Cache()
    reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]

    def body(name: str, created: float) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "uid": f"u-{name}", "namespace": "a", "creationTimestamp": to_rfc3339(created)},
            "spec": {"resource": RES, "holder": f"agent-{name}", "wait": True},
        }

    phases: list[str] = []  # the phase of each status write of the waiter, in order
    replace_status = api.replace

    async def recording(path: str, sent: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/w/status"):
            phases.append(sent["status"]["phase"])
        return await replace_status(path, sent)

    api.replace = recording  # type: ignore[method-assign]

    async def go() -> list[tuple[str, str, str | None]]:
        cache.upsert_claim(api.put(paths.claims("a", "h"), body("h", clock.now())))
        await reconciler.reconcile(("a", RES))  # h granted and told
        clock.advance(waiter_age)
        cache.upsert_claim(api.put(paths.claims("a", "w"), body("w", T0)))
        cache.delete_claim(api.objects.pop(paths.claims("a", "h")))
        api.requests.clear()
        await reconciler.reconcile(("a", RES))
        await reconciler.stop()
        told = iter(phases)
        return [(verb, path, next(told) if path.endswith("/w/status") else None) for verb, path in api.writes]

    return asyncio.run(go())


def test_the_reconciler_sends_an_overdue_answer_beside_the_hand_over_then_tells_held() -> None:
    """Against the recording fake API: the overdue waiter is told Pending beside the one write that
    hands it the lock, then Held; a waiter decided on time only Held after the hand-over."""
    lock = paths.locks("a", lock_name(RES))
    status = paths.claims("a", "w", status=True)
    overdue = _hand_over_writes(FIRST_ANSWER_DUE_SECONDS)
    assert sorted(overdue[:2]) == sorted([("patch", lock, None), ("update", status, "Pending")])
    assert overdue[2:] == [("update", status, "Held")]
    assert _hand_over_writes(0.5) == [("patch", lock, None), ("update", status, "Held")]
