"""What a claim is told when the API server refuses the create of its lock (`LockRefused`): a
try-lock of one resource or several ends Rejected, a waiter is told Pending `LockRefused` once per
refusal episode, and a wait that runs out while refused says why it was never granted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubelock.domain.arbiter import decide, lock_refused
from kubelock.domain.model import Claim, CreateLock, SetStatus
from kubelock.domain.multiclaim import ResourceView, decide_claim
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.waitfor import WaitForGraph
from tests.support.arbitration import POLICY, RES, T0, claim, with_phase

REFUSED = "the API server refused to create lock x, so nothing is granted: exceeded quota: locks"


def multi(name: str, seq: int, resources: list[str], **spec: object) -> Claim:
    return claim(name, seq, resource=resources[0], resources=tuple(resources), **spec)


def free(c: Claim) -> dict[str, ResourceView]:
    """Every resource of `c`, free, with `c` its only claim."""
    return {r: ResourceView(resource=r, claims=(c,), grants=(), capacity=1) for r in c.every_resource}


def told(c: Claim) -> Claim:
    """`c` as the status write of its refusal left it."""
    action = lock_refused(c, REFUSED, T0, retry_seconds=10)
    assert action is not None
    return replace(c, status=action.status)


@pytest.mark.parametrize(
    ("case", "subject", "phase", "reason"),
    [
        ("try-lock", claim("t", 1), Phase.REJECTED, Reason.LOCK_REFUSED),
        ("try-lock of several", multi("m", 1, ["r://a", "r://b"]), Phase.REJECTED, Reason.LOCK_REFUSED),
        ("waiter never answered", claim("w", 1, wait=True), Phase.PENDING, Reason.LOCK_REFUSED),
        ("waiter told Queued", with_phase(claim("w", 1, wait=True), Phase.PENDING, Reason.QUEUED, position=2),
         Phase.PENDING, Reason.LOCK_REFUSED),
        ("waiter of several", multi("m", 1, ["r://a", "r://b"], wait=True), Phase.PENDING, Reason.LOCK_REFUSED),
    ],
)
def test_a_refused_claim_is_told_why(case: str, subject: Claim, phase: Phase, reason: Reason) -> None:
    action = lock_refused(subject, REFUSED, T0, retry_seconds=10)
    assert isinstance(action, SetStatus), case
    assert (action.status.phase, action.status.reason) == (phase, reason), case
    assert action.status.message.startswith(REFUSED), case
    assert action.notice is not None and action.notice.warning, case  # one Warning Event with the write
    if phase is Phase.PENDING:
        assert action.status.queue_position == 1 and action.status.holder is None
        assert action.status.message.endswith("trying again every 10 s")
    else:
        assert action.status.finished_at == T0


@pytest.mark.parametrize(
    ("case", "subject"),
    [
        ("waiter told already (the same episode)", told(claim("w", 1, wait=True))),
        ("ended meanwhile", with_phase(claim("t", 1), Phase.REJECTED, Reason.HELD_BY_ANOTHER)),
        ("held", with_phase(claim("h", 1), Phase.HELD, Reason.GRANTED)),
    ],
)
def test_nothing_is_written_when_the_claim_knows_already(case: str, subject: Claim) -> None:
    assert lock_refused(subject, REFUSED, T0, retry_seconds=10) is None, case


def test_a_refused_waiter_is_still_granted_and_its_timeout_says_why() -> None:
    waiter = told(claim("w", 1, wait=True, wait_timeout_seconds=30))
    # While the refusal stands the decision is still to grant it (the create is what is refused).
    first = decide(RES, [waiter], (), now=T0 + 10, policy=POLICY, graph=WaitForGraph())
    assert [type(a) for a in first.actions] == [CreateLock]
    ended = decide(RES, [waiter], (), now=T0 + 31, policy=POLICY, graph=WaitForGraph())
    [end] = [a for a in ended.actions if isinstance(a, SetStatus)]
    assert (end.status.phase, end.status.reason) == (Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT)
    assert end.status.message == (f"gave up after waiting 30s for {RES}; not granted because {REFUSED}")
    # A waiter never refused ends as before.
    plain = decide(RES, [claim("p", 1, wait=True, wait_timeout_seconds=30, status=waiter.status and replace(
        waiter.status, reason=Reason.QUEUED, message="waiting"))], (), now=T0 + 31, policy=POLICY, graph=WaitForGraph())
    [end] = [a for a in plain.actions if isinstance(a, SetStatus)]
    assert end.status.message == f"gave up after waiting 30s for {RES}"


def test_a_refused_waiter_of_several_resources_says_why_at_its_timeout() -> None:
    waiter = told(multi("m", 1, ["r://a", "r://b"], wait=True, wait_timeout_seconds=30))
    decision = decide_claim(waiter, free(waiter), now=T0 + 31, policy=POLICY, graph=WaitForGraph())
    [end] = [a for a in decision.actions if isinstance(a, SetStatus)]
    assert end.status.phase is Phase.TIMED_OUT
    assert end.status.message.endswith(f"(all or nothing); not granted because {REFUSED}")
