"""Arbitration of one claim of several resources (`spec.resources`): granted on all of them at once
or on none.

Such a claim is decided as a whole, not per resource: `decide_claim` is a pure function of the claim,
a view of each of its resources (its grants, the claims queued on it, its capacity, its lock-delay)
and `now`. It returns one step of actions, like `arbiter.decide`: the caller applies them in order and
asks again until nothing is left to do.

- While it waits it holds nothing, and it stands in each of its resources' queues exactly as
  `grants.admit` says: it is granted when, on every resource, it fits beside the grants and beside
  every request queued ahead of it there; later requests on a resource wait behind it only if they do
  not fit beside it.
- Granting it is a series of writes, one per resource in sorted order (`CreateLock` with `resource`),
  each arbitrated by the API server. The claim is told `Held` only once every grant is stored, so it is
  never seen Held with part of its set. A claim that holds some of its grants but is not Held (the
  writes are under way, a write met a change, or an operator stopped between two writes) either
  continues, when the rest still fits, or gives back what it holds (the rollback), and waits again.
- Every end ends the whole claim and removes all its grants: its release (the per-resource decision
  removes the grants of a claim that is gone), its lease's expiry, its pod's end, a revocation, a
  wait timeout, a deadlock; a grant of it broken by an administrator makes the claim Revoked
  (`LockBroken`) and its other grants are removed. An abnormal end of a Held claim (`lockdelay.ABNORMAL`)
  makes each of its resources rest for its own LockPolicy's lock-delay (`_lost`).
- It counts against the quotas of the LockPolicy of each of its resources, once per policy (quotas
  count claims, not grants): it is refused (`QuotaExceeded`) when its grant, or its first place in a
  queue, would take its holder or its namespace over a limit of any of them.
- A timed-out waiter with `onBusy: Requeue` goes back to the end of every one of its resources'
  queues, as a claim of one resource does (once it holds nothing: grants being written go on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from kubelock.domain import lockdelay, quotas, specadvice
from kubelock.domain.arbiter import (
    break_details,
    break_message,
    claim_names,
    cycle_through,
    deadlocked,
    effective_ttl,
    end_claim,
    pod_gone,
    queue_aging,
    queue_order,
    queued_status,
    record_revocation,
    requested_revocation,
    requeued,
    wait_over,
    waits_in_stopping_pod,
)
from kubelock.domain.grants import blocks, fits, within
from kubelock.domain.lockpolicy import DEFAULT, NO_USAGE, LockPolicy, Usage
from kubelock.domain.model import (
    MAX_GRANTS,
    Action,
    Claim,
    ClaimStatus,
    CreateLock,
    Decision,
    DeleteLock,
    FinishedClaim,
    HeldGrant,
    Lock,
    LockBreak,
    Notice,
    OnBusy,
    Policy,
    RenewLock,
    SetStatus,
)
from kubelock.domain.reasons import QUEUE_ADVICE, Phase, Reason
from kubelock.domain.refusal import refusal_note
from kubelock.domain.resource import not_nfc
from kubelock.domain.timefmt import human_seconds, to_rfc3339
from kubelock.domain.waitfor import Cycle, WaitForGraph


@dataclass(frozen=True, slots=True)
class ResourceView:
    """One resource of a claim of several, as the claim's decision sees it."""

    resource: str
    claims: tuple[Claim, ...] = ()  # the active claims queued on or holding the resource (this one too)
    grants: tuple[Lock, ...] = ()
    capacity: int = 1
    broken: LockBreak | None = None  # what the resource's last deleted lock said about who broke it
    finished: tuple[FinishedClaim, ...] = ()  # its terminal claims still in the API (for its lock-delay)
    lock_policy: LockPolicy = DEFAULT

    def grant_of(self, uid: str) -> Lock | None:
        return next((g for g in self.grants if g.claim_uid == uid), None)


def decide_claim(
    claim: Claim,
    views: Mapping[str, ResourceView],
    *,
    now: float,
    policy: Policy,
    graph: WaitForGraph,
    usage: Mapping[str, Usage] | None = None,
) -> Decision:
    """One step for the active claim of several resources `claim`; `views` has one entry per resource
    it names (`Claim.every_resource`). `usage`: by LockPolicy name, the claims held and waiting under
    each policy of its resources that sets quotas (`arbiter.decide`'s `usage`)."""
    resources = claim.every_resource
    held = {r: g for r in resources if (g := views[r].grant_of(claim.uid)) is not None}
    ending = _ending(claim, views, now, policy, bool(held))
    if ending is not None:
        return Decision((ending, *_give_back(held, ending.status.reason)))
    if claim.phase is Phase.HELD:
        return _held_step(claim, views, held, now, policy)
    giving_back = giving_back_now(claim)
    if held and giving_back:
        return Decision((_giving_back(claim, held, now), *_give_back(held, Reason.GIVING_BACK)))
    if claim.on_busy is OnBusy.REQUEUE and wait_over(claim, now, bool(held)):
        # Holding nothing, as a claim of one resource: one whose grants are being written goes on.
        return Decision((_requeued(claim, views, now),))
    if len(held) == len(resources):
        return Decision(_announce(claim, [held[r] for r in resources], now, policy))
    missing = [r for r in resources if r not in held]
    blocked = {r: why for r in missing if (why := _blocked(claim, views[r], now, policy)) is not None}
    if not blocked and not giving_back:
        if not held:  # its first grant: from here on it counts as held (a grant counts from its write)
            over = _over_quota(claim, views, usage or {}, granting=True)
            if over is not None:
                return Decision((end_claim(claim, Phase.REJECTED, Reason.QUOTA_EXCEEDED, over, now, warning=True),))
        resource = missing[0]  # the next in sorted order: every replica writes them in the same order
        return Decision((CreateLock(claim, now, effective_ttl(claim, policy), resource=resource),))
    if held:
        # The rest was taken meanwhile: it gives back what it holds and waits again, so that it never
        # holds part of its set while others wait for it. A claim never answered before waits for the
        # first time here, so the waiting quotas are checked as for any first wait.
        over = _over_quota(claim, views, usage or {}, granting=False) if claim.status is None else None
        if over is not None:
            ending = end_claim(claim, Phase.REJECTED, Reason.QUOTA_EXCEEDED, over, now, warning=True)
            return Decision((ending, *_give_back(held, Reason.QUOTA_EXCEEDED)))
        return Decision((_giving_back(claim, held, now), *_give_back(held, Reason.GIVING_BACK)))
    return _waiting(claim, views, blocked, now, graph, usage or {})


def _over_quota(
    claim: Claim, views: Mapping[str, ResourceView], usage: Mapping[str, Usage], *, granting: bool
) -> str | None:
    """Why the claim's grant (`granting`) or its first wait would go over a quota of one of its
    resources' LockPolicies (None: it would not). Each policy counts the claim once, however many of
    its resources it governs: quotas count claims, not grants."""
    for lock_policy in dict.fromkeys(views[r].lock_policy for r in claim.every_resource):
        admitted = {claim.uid} if granting else set()
        over = quotas.over([claim], admitted, lock_policy, usage.get(lock_policy.name, NO_USAGE))
        if over:
            return over[0][1]
    return None


def _requeued(claim: Claim, views: Mapping[str, ResourceView], now: float) -> SetStatus:
    """Back at the end of every one of its resources' queues: a sequence after every claim there."""
    last = max((c.sequence for r in claim.every_resource for c in views[r].claims), default=claim.sequence)
    return requeued(claim, f"{', '.join(claim.every_resource)} (all or nothing)", last + 1, now)


def giving_back_now(claim: Claim) -> bool:
    """The claim's status says it is giving back grants (`Reason.GIVING_BACK`)."""
    status = claim.status
    return status is not None and status.phase is Phase.PENDING and status.reason is Reason.GIVING_BACK


def _giving_back(claim: Claim, held: Mapping[str, Lock], now: float) -> SetStatus:
    """The status written (conditional on the claim's version) before its grants are given back.
    Written before every give-back, it orders the give-back with the claim's Held: a replica that
    tells the claim Held does so on the version of the claim it saw, after reading the grants; a
    give-back first changes that version (or, written unchanged, checks it), so the two never
    interleave: the claim is never told Held while one of its grants is being removed."""
    names = ", ".join(sorted(held))
    every = ", ".join(claim.every_resource)
    message = f"giving back {names}: the rest of {every} was taken meanwhile; then waiting again"
    status = queued_status(claim, Reason.GIVING_BACK, message, None, 1, now, [])
    return SetStatus(claim, replace(status, queue_position=None), None)


def _give_back(held: Mapping[str, Lock], reason: Reason) -> tuple[DeleteLock, ...]:
    return tuple(DeleteLock(held[r], reason) for r in sorted(held))


def _ending(
    claim: Claim, views: Mapping[str, ResourceView], now: float, policy: Policy, holds: bool
) -> SetStatus | None:
    """A status that ends the claim whatever its grants do: bad input, its pod gone, or a wait that
    ran out (while Held, the claim's grants end it instead: `_held_step`)."""
    fresh = claim.status is None
    if not holds and claim.phase is not Phase.HELD:
        # Refused rather than normalised: see `resource.not_nfc`.
        spelled = next((m for r in claim.every_resource if (m := not_nfc(r)) is not None), None)
        if spelled is not None:
            return end_claim(claim, Phase.REJECTED, Reason.INVALID_SPEC, spelled, now, warning=True)
    if fresh:
        invalid = _invalid(claim, views, policy)
        if invalid is not None:
            return end_claim(claim, Phase.REJECTED, Reason.INVALID_SPEC, invalid, now, warning=True)
    gone = pod_gone(claim, holding=claim.phase is Phase.HELD)
    if gone is not None:
        reason, message = gone
        if fresh or waits_in_stopping_pod(claim, claim.phase is Phase.HELD):
            return end_claim(claim, Phase.REJECTED, reason, message, now, warning=True)
        message = f"holder {claim.holder} lost its pod: {message}"
        return _lost(claim, views, Phase.REVOKED, Reason.HOLDER_POD_TERMINATED, message, now)
    if claim.phase is not Phase.HELD and claim.on_busy is OnBusy.FAIL and wait_over(claim, now, False):
        names = ", ".join(claim.every_resource)
        message = f"gave up after waiting {claim.wait_timeout_seconds}s for {names} (all or nothing)"
        message += refusal_note(claim)
        return end_claim(claim, Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT, message, now, warning=False)
    return None


def _invalid(claim: Claim, views: Mapping[str, ResourceView], policy: Policy) -> str | None:
    if len(set(claim.resources)) < len(claim.resources):
        twice = sorted({r for r in claim.resources if claim.resources.count(r) > 1})
        return f"resources name {', '.join(twice)} more than once (after normalisation)"
    if claim.ttl_seconds is not None and claim.ttl_seconds > policy.max_ttl_seconds:
        return specadvice.ttl_above_max(claim.ttl_seconds, policy.max_ttl_seconds)
    over = [r for r in claim.every_resource if not within(claim.need, views[r].capacity)]
    if over:
        return specadvice.permits_over_capacity(claim.permits, [(r, views[r].capacity) for r in over])
    return None


# ---- waiting ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Blocked:
    """Why the claim cannot be granted one resource now."""

    holders: tuple[str, ...]  # the holders of the grants that keep it out (empty: the queue ahead does)
    ahead: tuple[Claim, ...]  # the requests queued ahead of it on the resource that keep it out
    rest: lockdelay.Rest | None = None


def _blocked(claim: Claim, view: ResourceView, now: float, policy: Policy) -> _Blocked | None:
    """None when the claim fits on the resource now: beside its grants and beside every request queued
    ahead of it there (`grants.admit`), and the resource neither rests nor is full."""
    rest = lockdelay.rest([*view.finished], view.lock_policy, now)
    if rest is not None:
        return _Blocked((), (), rest)
    holding = {g.claim_uid for g in view.grants}
    queue = queue_aging(view.claims)
    order = queue_order(claim, now, policy, queue)
    ahead = [
        c for c in view.claims
        if c.active and c.uid != claim.uid and c.uid not in holding and queue_order(c, now, policy, queue) < order
    ]
    beside = [g.need for g in view.grants]
    if fits([*beside, *(c.need for c in ahead)], claim.need, view.capacity) and len(view.grants) < MAX_GRANTS:
        return None
    holders = tuple(dict.fromkeys(g.holder for g in view.grants if blocks(g.need, claim.need, view.capacity)))
    if holders or fits(beside, claim.need, view.capacity):
        return _Blocked(holders, tuple(c for c in ahead if blocks(c.need, claim.need, view.capacity)))
    return _Blocked(tuple(dict.fromkeys(g.holder for g in view.grants)), ())


def _waiting(
    claim: Claim,
    views: Mapping[str, ResourceView],
    blocked: Mapping[str, _Blocked],
    now: float,
    graph: WaitForGraph,
    usage: Mapping[str, Usage],
) -> Decision:
    """The answer to a claim that holds nothing and cannot be granted yet: a try-lock is turned away,
    a waiter queued (or ended when its wait closes a deadlock)."""
    names = sorted(blocked)
    if not names:
        # It gave back its grants and may be granted again: its status says it waits no longer for
        # the give-back (a claim is told Held only from a status that does not say it gives back).
        message = f"waiting for {', '.join(claim.every_resource)} (all or nothing): about to be granted"
        return Decision((SetStatus(claim, queued_status(claim, Reason.QUEUED, message, None, 1, now, [])),))
    first = blocked[names[0]]
    holder = first.holders[0] if first.holders else (first.ahead[0].holder if first.ahead else None)
    described = "; ".join(f"{r} {_why(blocked[r])}" for r in names)
    if not claim.wait:
        if claim.status is not None:
            return Decision()
        resting = all(blocked[r].rest is not None for r in names)
        reason = Reason.LOCK_DELAY if resting else Reason.HELD_BY_ANOTHER
        every = ", ".join(claim.every_resource)
        message = f"not all of {every} are free ({described}); {QUEUE_ADVICE}"
        return Decision((end_claim(claim, Phase.REJECTED, reason, message, now, warning=False, holder=holder),))
    over = _over_quota(claim, views, usage, granting=False) if claim.status is None else None
    if over is not None:  # never told Pending first: it would wait past the quota
        return Decision((end_claim(claim, Phase.REJECTED, Reason.QUOTA_EXCEEDED, over, now, warning=True),))
    wake: set[str] = set()
    # One pass over what the waits on all its resources reach answers for every resource when it does
    # not lead back (`WaitForGraph.reaches`); only then is each resource's cycle looked for.
    blockers = {h for r in names for h in graph.blockers(claim.holder, r, claim.sequence, claim.need)}
    may_close = graph.reaches(claim.holder, blockers)
    for resource in names:
        if claim.holder in blocked[resource].holders:
            cycle = Cycle.self_wait(claim.holder, resource, claim.sequence)
            own = [g for g in views[resource].grants if g.holder == claim.holder]
            return Decision((deadlocked(claim, cycle, Reason.SELF_DEADLOCK, now, holding=claim_names(own)),))
        found = cycle_through(graph, claim, resource) if may_close else None
        if found is not None:
            if found.victim == found.edges[0]:
                return Decision((deadlocked(claim, found, Reason.DEADLOCK, now),))
            wake.add(found.victim.resource)
    position = 1 + sum(1 for c in first.ahead if c.wait)
    waits_for = f"waiting for {', '.join(names)} (all or nothing)"
    message = f"{waits_for}: {described}; position {position} in the queue of {names[0]}"
    deadlines: list[float] = []
    pending = queued_status(claim, Reason.QUEUED, message, holder, position, now, deadlines)
    rests = [b.rest.until for b in blocked.values() if b.rest is not None]
    if rests and all(b.rest is not None for b in blocked.values()):
        pending = replace(pending, reason=Reason.LOCK_DELAY, available_at=max(rests))
    actions: tuple[Action, ...] = ()
    if claim.status != pending and not _same_wait(claim.status, pending, waits_for):
        notice = Notice(pending.reason, pending.message) if claim.status is None else None
        actions = (SetStatus(claim, pending, notice),)
    return Decision(actions, min([*deadlines, *rests], default=None), frozenset(wake))


def _same_wait(current: ClaimStatus | None, pending: ClaimStatus, waits_for: str) -> bool:
    """A waiter already told it waits for these same resources is not told again who holds them or
    its position: every handoff on any of its resources would cost a write of every claim of several
    resources queued there (a claim of one resource's position is written once the queue is still)."""
    return (
        current is not None
        and current.phase is Phase.PENDING
        and current.reason is pending.reason
        and current.message.startswith(waits_for + ":")
        and current.available_at == pending.available_at
    )


def _why(blocked: _Blocked) -> str:
    if blocked.rest is not None:
        return f"rests until {to_rfc3339(blocked.rest.until)}: {blocked.rest.cause}"
    if blocked.holders:
        others = len(blocked.holders) - 1
        more = f" and {others} other holder{'s' if others > 1 else ''}" if others else ""
        return f"held by {blocked.holders[0]}{more}"
    if blocked.ahead:
        return f"queued behind {blocked.ahead[0].holder}"
    return "full"


# ---- held ---------------------------------------------------------------------------------------


def held_status(claim: Claim, grants: Sequence[Lock], observed_renew: str | None) -> ClaimStatus:
    """`Held` on every resource: one grant per resource (sorted), each with its own token and lock."""
    listed = sorted(grants, key=lambda g: g.resource)
    tokens = ", ".join(f"{g.resource} (fencing token {g.fencing_token})" for g in listed)
    return ClaimStatus(
        phase=Phase.HELD,
        reason=Reason.GRANTED,
        message=f"{claim.holder} holds {tokens}",
        sequence=claim.sequence,
        holder=claim.holder,
        acquired_at=max(g.acquired_at for g in listed),
        renewed_at=min(g.renewed_at for g in listed),
        expires_at=min(g.expires_at for g in listed),
        observed_renew=observed_renew,
        grants=tuple(HeldGrant(g.resource, g.name, g.fencing_token) for g in listed),
    )


def _announce(claim: Claim, grants: Sequence[Lock], now: float, policy: Policy) -> tuple[Action, ...]:
    """Tell the claim it holds everything, once every grant is stored. A grant made so long ago that
    half its lease has gone (an operator stopped between the writes) is renewed first."""
    ttl = effective_ttl(claim, policy)
    old = [g for g in grants if now >= g.renewed_at + g.lease_seconds / 2]
    renewals = tuple(RenewLock(g, now, ttl) for g in old)
    fresh = [replace(g, renewed_at=now, lease_seconds=ttl) if g in old else g for g in grants]
    status = held_status(claim, fresh, claim.renew_request)
    return (*renewals, SetStatus(claim, status, Notice(Reason.GRANTED, status.message)))


def _held_step(
    claim: Claim, views: Mapping[str, ResourceView], held: Mapping[str, Lock], now: float, policy: Policy
) -> Decision:
    current = claim.status
    assert current is not None
    lost = [r for r in claim.every_resource if r not in held]
    if lost:
        return Decision(_broken(claim, views, lost[0], held, now))
    grants = [held[r] for r in claim.every_resource]
    names = ", ".join(claim.every_resource)
    # The later of the grants' expiry and the one the holder was told: a renewal writes both.
    expires_at = max(min(g.expires_at for g in grants), current.expires_at or 0.0)
    if now >= expires_at:
        longest = human_seconds(max(g.lease_seconds for g in grants))
        message = f"lease on {names} expired at {to_rfc3339(expires_at)}: not renewed for {longest}"
        ended = _lost(claim, views, Phase.EXPIRED, Reason.LEASE_EXPIRED, message, now)
        return Decision((ended, *_give_back(held, Reason.LEASE_EXPIRED)))
    if claim.renew_request is not None and claim.renew_request != current.observed_renew:
        ttl = effective_ttl(claim, policy)
        renewals = tuple(RenewLock(g, now, ttl) for g in grants)
        fresh = [replace(g, renewed_at=now, lease_seconds=ttl) for g in grants]
        renewed = held_status(claim, fresh, claim.renew_request)
        renewed = replace(renewed, message=renewed.message + "; renewed", revocation=current.revocation)
        notice = Notice(Reason.RENEWED, f"locks {names} renewed after being stale") if current.stale else None
        return Decision((*renewals, SetStatus(claim, renewed, notice)))
    revoking = _revocation(claim, views, current, held, names, now)
    if revoking is not None:
        return revoking
    deadlines = [expires_at]
    if current.revocation is not None:
        deadlines.append(current.revocation.deadline)
    lease = min(g.lease_seconds for g in grants)
    renewed_at = max(min(g.renewed_at for g in grants), current.renewed_at or 0.0)
    stale_at = renewed_at + policy.stale_after(lease)
    if not current.stale and stale_at < expires_at:
        if now >= stale_at:
            message = (
                f"locks {names} held by {claim.holder} have not been renewed for {human_seconds(now - renewed_at)}, "
                f"{policy.stale_after_percent}% of their {human_seconds(lease)} lease (holders renew every third "
                f"of it); they expire at {to_rfc3339(expires_at)} unless renewed"
            )
            return Decision((SetStatus(claim, replace(current, stale=True), Notice(Reason.STALE, message, True)),))
        deadlines.append(stale_at)
    return Decision((), min(deadlines))


def _broken(
    claim: Claim, views: Mapping[str, ResourceView], resource: str, held: Mapping[str, Lock], now: float
) -> tuple[Action, ...]:
    """A grant of a Held claim is gone (an administrator broke it, or its namespace is going): the claim
    has lost the set, and its other grants are given back."""
    broken = views[resource].broken
    message = break_message(resource, broken)
    if broken is not None and broken.namespace_deleted:
        ended = end_claim(claim, Phase.REVOKED, Reason.NAMESPACE_DELETED, message, now, warning=True)
    else:
        others = ", ".join(sorted(held))
        if others:
            message += f"; the claim's other grants ({others}) are released"
        details = break_details(broken)
        ended = _lost(claim, views, Phase.REVOKED, Reason.LOCK_BROKEN, message, now)
        ended = replace(ended, notice=Notice(Reason.LOCK_BROKEN, ended.status.message, True, details))
    return (ended, *_give_back(held, ended.status.reason))


def _revocation(
    claim: Claim, views: Mapping[str, ResourceView], current: ClaimStatus, held: Mapping[str, Lock], names: str,
    now: float,
) -> Decision | None:
    """A revocation request covers the whole claim: recorded when first seen; when its grace has run
    out every grant is broken."""
    revocation = current.revocation
    if revocation is None:
        revocation = requested_revocation(claim, now)
        if revocation is None:
            return None
        return Decision((record_revocation(claim, current, revocation, names),))
    if now < revocation.deadline:
        return None
    why = f": {revocation.reason}" if revocation.reason else ""
    message = (
        f"the locks on {names} were broken: {revocation.requested_by} asked {claim.holder} to give them back "
        f"within {human_seconds(revocation.grace_seconds)}{why}, and it did not"
    )
    details = (("actor", revocation.requested_by), ("breakReason", revocation.reason or "revocation grace expired"))
    ended = _lost(claim, views, Phase.REVOKED, Reason.REVOCATION_GRACE_EXPIRED, message, now)
    ended = replace(ended, notice=Notice(Reason.REVOCATION_GRACE_EXPIRED, ended.status.message, True, details))
    return Decision((ended, *_give_back(held, Reason.REVOCATION_GRACE_EXPIRED)))


def _lost(
    claim: Claim, views: Mapping[str, ResourceView], phase: Phase, reason: Reason, message: str, now: float
) -> SetStatus:
    """End the claim abnormally. Once it was told Held, its holder may still be working on any of its
    resources: each rests for the lock-delay of the LockPolicy governing it. The claim's status records
    one `availableAt`, the latest of those ends; each resource caps it by its own policy's delay when
    deciding (`lockdelay.rest`), so a resource with a shorter delay rests only as long as its own.
    A claim never told Held ends without a rest: its holder was never told it held anything."""
    ends = {r: lockdelay.available_at(views[r].lock_policy, now) for r in claim.every_resource}
    rests = {r: until for r, until in ends.items() if until is not None}
    if claim.phase is not Phase.HELD or not rests:
        return end_claim(claim, phase, reason, message, now, warning=True)
    described = ", ".join(f"{r} until {to_rfc3339(until)}" for r, until in rests.items())
    message += f"; before anyone else is granted them, {described} rest (lock-delay)"
    return end_claim(claim, phase, reason, message, now, warning=True, available_at=max(rests.values()))
