"""The early path's pure part: what a small view of one resource may decide before the priming is
in (`domain.earlygrant`), fed to the real `arbiter.decide`, and every case it leaves to the normal path."""

from __future__ import annotations

from kubelock.domain.arbiter import decide
from kubelock.domain.earlygrant import grant_actions, refusal
from kubelock.domain.lockpolicy import DEFAULT, LockPolicy, Quotas
from kubelock.domain.model import Claim, CreateLock, Decision, DeleteClaim, FinishedClaim, SetStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.waitfor import WaitForGraph
from kubelock.kube.paths import field_selector
from tests.support.arbitration import POLICY, RES, T0, claim, holding, lock_for, with_phase

NEW = claim("new", 20)


def _decide(claims: list[Claim], grants=(), lock_policy: LockPolicy = DEFAULT) -> Decision:  # type: ignore[no-untyped-def]
    return decide(RES, claims, grants, now=T0, policy=POLICY, graph=WaitForGraph(), lock_policy=lock_policy)


# ---- the view -------------------------------------------------------------------------------


def test_a_new_claim_of_one_resource_with_nothing_else_around_may_be_decided() -> None:
    assert refusal(NEW, RES, [], DEFAULT) is None
    assert refusal(NEW, RES, [claim("elsewhere", 3, resource="deploy://other")], DEFAULT) is None


def test_a_claim_gone_answered_of_several_or_of_another_resource_is_left_alone() -> None:
    assert refusal(None, RES, [], DEFAULT) == "the claim is gone"
    assert refusal(with_phase(NEW, Phase.PENDING, Reason.QUEUED), RES, [], DEFAULT) == "answered already"
    multi = claim("multi", 20, resources=(RES, "deploy://b"))
    assert refusal(multi, RES, [], DEFAULT) == "a claim of several resources"
    assert refusal(NEW, "deploy://b", [], DEFAULT) == "a claim of another resource"


def test_an_active_claim_of_several_resources_naming_the_resource_is_a_refusal() -> None:
    naming = claim("multi", 3, resource="", resources=(RES, "deploy://b"))
    elsewhere = claim("multi2", 4, resource="", resources=("deploy://c", "deploy://b"))
    assert refusal(NEW, RES, [naming], DEFAULT) == "a claim of several resources names the resource"
    assert refusal(NEW, RES, [elsewhere], DEFAULT) is None


def test_quotas_and_lock_delay_need_more_than_the_small_view() -> None:
    quotas = LockPolicy(name="q", quotas=Quotas(max_held_per_holder=1))
    assert refusal(NEW, RES, [], quotas) == "LockPolicy q counts quotas"
    delay = LockPolicy(name="d", lock_delay_seconds=5)
    assert refusal(NEW, RES, [], delay) == "LockPolicy d sets a lock-delay"
    assert refusal(NEW, RES, [], LockPolicy(name="cap", capacity=3)) is None


# ---- the decision ---------------------------------------------------------------------------


def test_a_free_resource_is_granted_then_the_claim_told_held() -> None:
    first = grant_actions(NEW.uid, _decide([NEW]))
    assert first is not None and [type(a) for a in first] == [CreateLock]
    lock = lock_for(NEW, token=77)
    second = grant_actions(NEW.uid, _decide([NEW], [lock]))
    assert second is not None and [type(a) for a in second] == [SetStatus]
    assert isinstance(second[0], SetStatus) and second[0].status.phase is Phase.HELD


def test_a_claim_behind_a_holder_or_an_older_waiter_is_not_granted() -> None:
    older = claim("older", 10)
    holder = holding(older, lock_for(older))
    assert grant_actions(NEW.uid, _decide([holder, NEW], [lock_for(older)])) is None  # its answer is Pending
    waiting = claim("waiting", 10)
    assert grant_actions(NEW.uid, _decide([waiting, NEW])) is None  # the older one is granted


def test_a_try_lock_on_a_held_resource_is_not_rejected_early() -> None:
    older = claim("older", 10)
    try_lock = claim("try", 20, wait=False)
    decision = _decide([holding(older, lock_for(older)), try_lock], [lock_for(older)])
    assert any(isinstance(a, SetStatus) and a.status.phase is Phase.REJECTED for a in decision.actions)
    assert grant_actions(try_lock.uid, decision) is None


def test_pending_answers_to_younger_claims_are_left_out_and_anything_else_refuses() -> None:
    younger = claim("younger", 30, wait=True)
    decision = _decide([NEW, younger])
    actions = grant_actions(NEW.uid, decision)
    assert actions is not None and all(isinstance(a, CreateLock) and a.claim.uid == NEW.uid for a in actions)
    # A lock deleted for another claim (an expired holder) comes with it: the normal path decides.
    expired = claim("expired", 10)
    lock = lock_for(expired, acquired=T0 - 4000, lease=60)
    decision = _decide([holding(expired, lock), NEW], [lock])
    assert any(not isinstance(a, SetStatus | CreateLock) for a in decision.actions)
    assert grant_actions(NEW.uid, decision) is None


def test_cleanup_of_finished_claims_is_left_to_the_normal_path() -> None:
    done = FinishedClaim("done", "uid-done", "done", RES, Phase.REJECTED, Reason.HELD_BY_ANOTHER, T0 - 10_000)
    create = CreateLock(claim=NEW, acquired_at=T0, lease_seconds=1800)
    decision = Decision(actions=(DeleteClaim(done), create))
    assert grant_actions(NEW.uid, decision) == (create,)
    assert grant_actions(NEW.uid, Decision(actions=(DeleteClaim(done),))) is None


def test_a_resource_uri_in_a_field_selector_escapes_what_the_api_server_parses() -> None:
    assert field_selector("spec.resource", "github://acme/app/issues/42") == "spec.resource=github://acme/app/issues/42"
    assert field_selector("spec.resource", "web://a?x=1,y\\z") == "spec.resource=web://a?x\\=1\\,y\\\\z"


def test_an_overdue_claim_is_granted_early_without_the_pending_answer_beside_its_grant() -> None:
    """A claim made while no operator ran is overdue by the time it is decided: the arbiter tells it
    Pending beside its grant (`arbiter.due_answers`); the early path still grants it, then Held."""
    overdue = claim("overdue", 20, wait=True, created=T0 - 30)
    decision = _decide([overdue])
    assert any(isinstance(a, SetStatus) and a.status.phase is Phase.PENDING for a in decision.actions)
    actions = grant_actions(overdue.uid, decision)
    assert actions is not None and [type(a) for a in actions] == [CreateLock]
