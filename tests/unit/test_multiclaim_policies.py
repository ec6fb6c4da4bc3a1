"""Claims of several resources under LockPolicy quotas, `onBusy: Requeue` and preemption: the rules of
a claim of one resource, counted under the policy of each of its resources. Time is explicit; the
reconciler's counting is checked through the recording fake API."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from kubelock.domain.arbiter import decide
from kubelock.domain.clock import ManualClock
from kubelock.domain.lockpolicy import DEFAULT, LockPolicy, Quotas, Usage
from kubelock.domain.model import Claim, Decision, Lock, OnBusy, Policy, SetStatus
from kubelock.domain.multiclaim import decide_claim
from kubelock.domain.quotas import Count, InFlight, Reservation
from kubelock.domain.reasons import Phase, Reason
from kubelock.kube import paths
from kubelock.operator.cache import Cache, multi_key
from kubelock.operator.events import EventRecorder
from kubelock.operator.policies import PolicyIndex, usage
from kubelock.operator.reconciler import Reconciler
from tests.support.arbitration import POLICY, T0, claim, holding, lock_for, with_phase
from tests.support.fakeapi import FakeApi
from tests.unit.test_multiclaim import A, B, C, _timeline, brief, grant, graph_of, multi, told, views
from tests.unit.test_reconciler_policies import slow

FIRST = LockPolicy("first", "r://a")  # no quotas
SECOND = LockPolicy("second", "r://b", quotas=Quotas(max_held_per_holder=1, max_waiting_per_namespace=1))
POLICIES = {A: FIRST, B: SECOND, C: DEFAULT}


def decide_under_policies(
    c: Claim, others: list[Claim], grants: list[Lock], *, now: float = T0, used: dict[str, Usage] | None = None,
    policy: Policy = POLICY,
) -> Decision:
    everyone = [c, *others]
    seen = {r: replace(v, lock_policy=POLICIES[r]) for r, v in views(everyone, grants).items()}
    return decide_claim(c, seen, now=now, policy=policy, graph=graph_of(everyone, grants), usage=used)


def only(decision: Decision) -> SetStatus:
    [action] = decision.actions
    assert isinstance(action, SetStatus)
    return action


M = multi("m", 5, [B, A], holder="agent-a", wait=True)
XA = claim("xa", 1, "agent-x", resource=A)
XA_LOCK = lock_for(XA, token=900)
XA_HELD = holding(XA, XA_LOCK)


# ---- quotas ---------------------------------------------------------------------------------------


def test_over_the_held_quota_of_any_of_its_policies_it_is_rejected_naming_that_policy() -> None:
    assert brief(decide_under_policies(M, [], [])) == [("create", "m", A)]  # within every quota
    refused = only(decide_under_policies(M, [], [], used={"second": Usage(held={"agent-a": 1})}))
    assert (refused.status.phase, refused.status.reason) == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    assert refused.status.message == (
        "quota exceeded: agent-a already has 1 claim held under LockPolicy second, which allows at most 1 per "
        "holder (maxHeldPerHolder)"
    )
    assert refused.notice is not None and refused.notice.warning


def test_a_new_waiter_over_a_waiting_quota_is_rejected_and_never_told_pending() -> None:
    full = {"second": Usage(waiting={"agent-w": 1})}
    refused = only(decide_under_policies(M, [XA_HELD], [XA_LOCK], used=full))
    assert refused.status.reason is Reason.QUOTA_EXCEEDED
    assert "1 claim already waiting under LockPolicy second in this namespace" in refused.status.message
    assert "(maxWaitingPerNamespace)" in refused.status.message
    # A try-lock does not wait, so counts as nothing; a waiter already queued is not counted again.
    try_lock = only(decide_under_policies(replace(M, wait=False), [XA_HELD], [XA_LOCK], used=full))
    assert try_lock.status.reason is Reason.HELD_BY_ANOTHER
    queued = with_phase(M, Phase.PENDING, Reason.QUEUED, since=T0)
    again = decide_under_policies(queued, [XA_HELD], [XA_LOCK], used=full)
    assert [a.status.reason for a in again.actions if isinstance(a, SetStatus)] == [Reason.QUEUED]


def test_a_claim_giving_back_before_its_first_answer_is_checked_as_a_first_wait() -> None:
    """Granted A, it finds B taken meanwhile: it gives A back and waits, for the first time, so the
    waiting quotas apply as to any new waiter (over them it ends Rejected and still gives A back)."""
    xb = claim("xb", 2, "agent-x", resource=B)
    xb_held = holding(xb, lock_for(xb, token=950))
    grants = [grant(M, A, 1000), lock_for(xb, token=950)]
    within = decide_under_policies(M, [xb_held], grants)
    assert [a.status.reason for a in within.actions if isinstance(a, SetStatus)] == [Reason.GIVING_BACK]
    assert ("delete", "m", A, Reason.GIVING_BACK) in brief(within)
    full = {"second": Usage(waiting={"agent-w": 1})}
    refused = decide_under_policies(M, [xb_held], grants, used=full)
    [ending] = [a for a in refused.actions if isinstance(a, SetStatus)]
    assert (ending.status.phase, ending.status.reason) == (Phase.REJECTED, Reason.QUOTA_EXCEEDED)
    assert "(maxWaitingPerNamespace)" in ending.status.message
    assert ("delete", "m", A, Reason.QUOTA_EXCEEDED) in brief(refused), "what it holds is given back either way"
    # One already answered (it waited before) is not counted again.
    queued = with_phase(M, Phase.PENDING, Reason.QUEUED, since=T0)
    again = decide_under_policies(queued, [xb_held], [grant(queued, A, 1000), lock_for(xb, token=950)], used=full)
    assert [a.status.reason for a in again.actions if isinstance(a, SetStatus)] == [Reason.GIVING_BACK]

def test_a_claim_whose_grants_are_being_written_is_not_counted_twice() -> None:
    # Its grant on A is written, so the usage already counts it held: it goes on to B.
    used = {"second": Usage(held={"agent-a": 1})}
    assert brief(decide_under_policies(M, [], [grant(M, A, 1000)], used=used)) == [("create", "m", B)]


@pytest.mark.parametrize("seed", range(40))
def test_random_timelines_under_a_held_quota_never_exceed_it(seed: int) -> None:
    """Random timelines of claims of one and of several resources by three holders, under a policy
    with held quotas: after every write no holder (nor the namespace) holds more claims than allowed,
    and the queue rule still holds when settled (`test_multiclaim._check`)."""
    limits = Quotas(max_held_per_holder=1 + seed % 2, max_held_per_namespace=3)
    _timeline(seed, holders=3, lock_policy=LockPolicy("quota", "", quotas=limits))


def test_a_claim_of_several_counts_once_under_each_policy_of_its_resources() -> None:
    index = PolicyIndex()
    for name, prefix in (("deploys", "deploy://"), ("repos", "github://")):
        index.upsert({"metadata": {"name": name, "namespace": "a"},
                      "spec": {"resourcePrefix": prefix, "maxHeldPerHolder": 5}})
    cache = Cache()
    held = {"phase": "Held", "reason": "Granted", "message": "", "sequence": 1}
    cache.upsert_claim({
        "metadata": {"name": "m", "uid": "um", "namespace": "a", "resourceVersion": "10"},
        "spec": {"resources": ["deploy://api", "deploy://web", "github://acme/app"], "holder": "agent-a"},
        "status": held,
    })
    for resource in ("deploy://x", "github://x"):
        counted = usage(cache, index, "a", index.policy_for("a", resource), None)
        assert dict(counted.held) == {"agent-a": 1}, resource


def test_in_flight_keeps_a_reservation_per_policy_of_one_claim() -> None:
    ledger = InFlight()
    taken = ledger.reserve([Reservation("ns", p, "agent-a", "um", Count.HELD) for p in ("deploys", "repos")])
    assert [r.policy for r in ledger.of("ns", "deploys")] == ["deploys"]
    assert [r.policy for r in ledger.of("ns", "repos")] == ["repos"]
    ledger.release(taken)
    assert len(ledger) == 0


def _multi_body(name: str, resources: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"u-{name}", "namespace": "a"},
            "spec": {"resources": resources, "holder": "agent-a"}}


def test_claims_of_several_decided_at_once_keep_the_held_quota() -> None:
    """Four claims of several resources of one holder decided at once, their writes slow: the first
    grant being written counts as held, under each policy of the claim's resources, so exactly two
    are granted and two rejected, and no reservation outlives its write."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api, cache, index = FakeApi(), Cache(), PolicyIndex()
        index.upsert({"metadata": {"name": "repos", "namespace": "a"},
                      "spec": {"resourcePrefix": "github://", "maxHeldPerHolder": 2}})
        slow(api, "create")
        names = [f"m{i}" for i in range(4)]
        for name in names:
            body = _multi_body(name, [f"deploy://{name}", f"github://acme/{name}"])
            cache.upsert_claim(api.put(paths.claims("a", name), body))
        events = EventRecorder(api, clock, "test")  # type: ignore[arg-type]
        reconciler = Reconciler(api, cache, Policy(), clock, events, policies=index)  # type: ignore[arg-type]
        await asyncio.gather(*(reconciler.reconcile(multi_key("a", f"u-{n}")) for n in names))
        statuses = [api.objects[paths.claims("a", n)]["status"] for n in names]
        assert sorted(s["phase"] for s in statuses) == ["Held", "Held", "Rejected", "Rejected"]
        assert {s["reason"] for s in statuses if s["phase"] == "Rejected"} == {"QuotaExceeded"}
        assert len(reconciler.in_flight) == 0
        await reconciler.stop()

    asyncio.run(scenario())


# ---- onBusy: Requeue ------------------------------------------------------------------------------


def test_a_timed_out_claim_of_several_with_on_busy_requeue_goes_to_the_end_of_every_queue() -> None:
    patient = with_phase(replace(M, on_busy=OnBusy.REQUEUE, wait_timeout_seconds=5), Phase.PENDING, Reason.QUEUED,
                         since=T0)
    later = with_phase(claim("wb", 9, "agent-w", resource=B, wait=True), Phase.PENDING, Reason.QUEUED, since=T0)
    waiting = decide_under_policies(patient, [XA_HELD, later], [XA_LOCK], now=T0 + 4)
    assert only(waiting).status.reason is Reason.QUEUED and waiting.next_deadline == T0 + 5
    requeued = only(decide_under_policies(patient, [XA_HELD, later], [XA_LOCK], now=T0 + 5))
    status = requeued.status
    assert (status.phase, status.reason, status.requeues) == (Phase.PENDING, Reason.REQUEUED, 1)
    assert status.sequence == 10 and status.waiting_since == T0 + 5  # after every claim of its resources
    assert f"for {A}, {B} (all or nothing); back at the end of the queue (onBusy: Requeue" in status.message
    assert requeued.notice is not None and requeued.notice.reason is Reason.REQUEUED
    # Fail (the default) still ends it.
    failed = only(decide_under_policies(replace(patient, on_busy=OnBusy.FAIL), [XA_HELD], [XA_LOCK], now=T0 + 5))
    assert (failed.status.phase, failed.status.reason) == (Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT)


def test_a_requeued_claim_of_one_resource_goes_behind_the_claims_of_several_queued_there() -> None:
    patient = with_phase(claim("p", 1, "agent-p", resource=A, wait=True, wait_timeout_seconds=5,
                               on_busy=OnBusy.REQUEUE), Phase.PENDING, Reason.QUEUED, since=T0)
    queued = with_phase(M, Phase.PENDING, Reason.QUEUED, since=T0)  # sequence 5
    everyone = [XA_HELD, patient, queued]
    decision = decide(A, everyone, [XA_LOCK], now=T0 + 5, policy=POLICY, graph=graph_of(everyone, [XA_LOCK]))
    assert only(decision).status.sequence == 6


def test_a_claim_whose_grants_are_being_written_is_not_requeued() -> None:
    patient = with_phase(replace(M, on_busy=OnBusy.REQUEUE, wait_timeout_seconds=5), Phase.PENDING, Reason.QUEUED,
                         since=T0)
    assert brief(decide_under_policies(patient, [], [grant(patient, A, 1000)], now=T0 + 6)) == [("create", "m", B)]


# ---- preemption -----------------------------------------------------------------------------------

PREEMPTING = replace(POLICY, preemption_priority_delta=10, preemption_grace_seconds=30)


def test_a_waiting_claim_of_several_preempts_the_holder_of_each_resource_it_waits_for() -> None:
    urgent = with_phase(replace(M, priority=20), Phase.PENDING, Reason.QUEUED, since=T0)
    everyone = [XA_HELD, urgent]
    decision = decide(A, everyone, [XA_LOCK], now=T0, policy=PREEMPTING, graph=graph_of(everyone, [XA_LOCK]))
    asked = only(decision)
    assert asked.claim.name == "xa" and asked.status.revocation is not None
    assert asked.status.revocation.requested_by == "kubelock-operator"
    assert asked.status.revocation.deadline == T0 + 30
    assert "preempted by agent-a (priority 20" in asked.status.revocation.reason
    # Below the delta nobody is asked.
    mild = replace(urgent, priority=9)
    assert decide(A, [XA_HELD, mild], [XA_LOCK], now=T0, policy=PREEMPTING,
                  graph=graph_of([XA_HELD, mild], [XA_LOCK])).actions == ()


def test_a_held_claim_of_several_is_asked_to_give_back_its_whole_set_and_broken_at_the_deadline() -> None:
    grants = [grant(M, A, 1000), grant(M, B, 1001)]
    held = told(M, grants)
    urgent = with_phase(claim("w", 9, "agent-w", resource=A, wait=True, priority=20), Phase.PENDING, Reason.QUEUED,
                        since=T0)
    everyone = [held, urgent]
    asked = only(decide(A, everyone, grants[:1], now=T0, policy=PREEMPTING, graph=graph_of(everyone, grants)))
    assert asked.claim.name == "m" and asked.status.revocation is not None
    assert f"give back {A}, {B} by" in asked.notice.message  # type: ignore[union-attr]
    revoked = replace(held, status=asked.status)
    assert decide_under_policies(revoked, [], grants, now=T0 + 29, policy=PREEMPTING).actions == ()
    ended = decide_under_policies(revoked, [], grants, now=T0 + 30, policy=PREEMPTING)
    assert brief(ended) == [
        ("status", "m", Phase.REVOKED, Reason.REVOCATION_GRACE_EXPIRED),
        ("delete", "m", A, Reason.REVOCATION_GRACE_EXPIRED),
        ("delete", "m", B, Reason.REVOCATION_GRACE_EXPIRED),
    ]

