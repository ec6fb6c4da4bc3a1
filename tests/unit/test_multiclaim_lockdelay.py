"""Lock-delay after a claim of several resources ends abnormally: each of its resources rests for the
lock-delay of the LockPolicy governing it, on the claim's one record. Time is explicit."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubelock.domain import lockdelay
from kubelock.domain.arbiter import decide, finished_record
from kubelock.domain.lockpolicy import DEFAULT, LockPolicy
from kubelock.domain.model import Claim, Decision, Lock, LockBreak, PodLiveness, RevokeRequest, SetStatus
from kubelock.domain.multiclaim import decide_claim
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.timefmt import to_rfc3339
from kubelock.domain.waitfor import WaitForGraph
from tests.support.arbitration import POLICY, T0, claim, with_phase
from tests.unit.test_multiclaim import A, B, C, grant, graph_of, multi, told, views

LONG = LockPolicy("rest-10", "r://a", lock_delay_seconds=10)
SHORT = LockPolicy("rest-4", "r://b", lock_delay_seconds=4)
POLICIES = {A: LONG, B: SHORT, C: DEFAULT}  # C: no lock-delay

M = multi("m", 5, [C, B, A], wait=True)
GRANTS = [grant(M, A, 1000), grant(M, B, 1001), grant(M, C, 1002)]
HELD = told(M, GRANTS)
EXPIRY = HELD.status.expires_at  # type: ignore[union-attr]


def decide_with_policies(
    c: Claim, grants: list[Lock], now: float, policies: dict[str, LockPolicy] = POLICIES, **kw: object
) -> Decision:
    seen = {r: replace(v, lock_policy=policies.get(r, DEFAULT)) for r, v in views([c], grants, **kw).items()}  # type: ignore[arg-type]
    return decide_claim(c, seen, now=now, policy=POLICY, graph=graph_of([c], grants))


def ended(decision: Decision) -> SetStatus:
    first = decision.actions[0]
    assert isinstance(first, SetStatus) and first.status.phase.terminal
    return first


ENDS = [
    pytest.param(HELD, GRANTS, EXPIRY, {}, Reason.LEASE_EXPIRED, id="lease-expired"),
    pytest.param(HELD, GRANTS[1:], T0 + 5, {"broken": {A: LockBreak("admin@example.com", "stuck")}},
                 Reason.LOCK_BROKEN, id="lock-broken"),
    pytest.param(replace(HELD, pod_name="p", pod=PodLiveness.TERMINATED), GRANTS, T0 + 5, {},
                 Reason.HOLDER_POD_TERMINATED, id="pod-terminated"),
]


@pytest.mark.parametrize(("subject", "grants", "now", "kw", "reason"), ENDS)
def test_an_abnormal_end_of_a_held_claim_records_the_latest_rest_of_its_resources(
    subject: Claim, grants: list[Lock], now: float, kw: dict[str, object], reason: Reason
) -> None:
    status = ended(decide_with_policies(subject, grants, now, **kw)).status
    assert status.reason is reason and status.finished_at == now
    assert status.available_at == now + 10  # the longest delay of its resources' policies
    assert f"{A} until {to_rfc3339(now + 10)}" in status.message
    assert f"{B} until {to_rfc3339(now + 4)}" in status.message and C not in status.message.split("; before")[-1]


def test_a_revocation_whose_grace_ran_out_leaves_the_rest_too() -> None:
    revoking = replace(HELD, revoke_request=RevokeRequest("admin@example.com", 5, "maintenance"))
    first = decide_with_policies(revoking, GRANTS, T0 + 1)
    recorded = revoking
    for action in first.actions:
        assert isinstance(action, SetStatus)
        recorded = replace(revoking, status=action.status)
    status = ended(decide_with_policies(recorded, GRANTS, T0 + 7)).status
    assert (status.reason, status.available_at) == (Reason.REVOCATION_GRACE_EXPIRED, T0 + 7 + 10)


def test_each_resource_rests_only_as_long_as_its_own_policy_says() -> None:
    status = ended(decide_with_policies(HELD, GRANTS, EXPIRY)).status
    record = finished_record(replace(HELD, status=status), status)
    for resource, until in ((A, EXPIRY + 10), (B, EXPIRY + 4)):
        rest = lockdelay.rest([record], POLICIES[resource], EXPIRY + 1)
        assert rest is not None and rest.until == until and "the lease of m expired" in rest.cause
    assert lockdelay.rest([record], DEFAULT, EXPIRY + 1) is None
    assert lockdelay.rest([record], SHORT, EXPIRY + 4) is None


def test_without_any_delay_the_end_records_none() -> None:
    status = ended(decide_with_policies(HELD, GRANTS, EXPIRY, policies={})).status
    assert status.available_at is None and "lock-delay" not in status.message


def test_a_claim_never_told_held_ends_without_a_rest() -> None:
    """Its holder was never told it holds anything, so it cannot be working on any of them."""
    pending = with_phase(replace(M, pod_name="p", pod=PodLiveness.TERMINATED), Phase.PENDING, Reason.QUEUED, since=T0)
    status = ended(decide_with_policies(pending, GRANTS[:1], T0 + 5)).status
    assert status.reason is Reason.HOLDER_POD_TERMINATED and status.available_at is None


def test_the_next_claim_of_one_of_its_resources_waits_until_that_resources_rest_ends() -> None:
    status = ended(decide_with_policies(HELD, GRANTS, EXPIRY)).status
    record = finished_record(replace(HELD, status=status), status)
    waiter = claim("w", 9, resource=B, wait=True)

    def on_b(now: float, waiter: Claim) -> Decision:
        return decide(B, [waiter], [], now=now, policy=POLICY, graph=WaitForGraph(), finished=[record],
                      lock_policy=SHORT)

    waiting = on_b(EXPIRY + 1, waiter)
    [told_to_wait] = waiting.actions
    assert isinstance(told_to_wait, SetStatus)
    assert (told_to_wait.status.reason, told_to_wait.status.available_at) == (Reason.LOCK_DELAY, EXPIRY + 4)
    assert waiting.next_deadline == EXPIRY + 4
    told = replace(waiter, status=told_to_wait.status)
    assert [type(a).__name__ for a in on_b(EXPIRY + 4, told).actions] == ["CreateLock"]


def test_only_its_first_resource_removes_the_record() -> None:
    """The record is remembered under each resource, and removed once, by its first resource."""
    status = ended(decide_with_policies(HELD, GRANTS, EXPIRY)).status
    record = finished_record(replace(HELD, status=status), status)
    later = EXPIRY + POLICY.ttl_seconds_after_finished
    removals = {
        r: [type(a).__name__ for a in decide(r, [], [], now=later, policy=POLICY, graph=WaitForGraph(),
                                             finished=[record]).actions]
        for r in (A, B, C)
    }
    assert record.resource == M.resource == C
    assert removals == {A: [], B: [], C: ["DeleteClaim"]}

