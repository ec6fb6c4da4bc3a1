"""Arbitration of one resource: who holds it, who waits, who is turned away, and when to look again.

`decide` is a pure function of the claims for one resource, its set of grants (see `grants` for
modes, permits, the queue's order and fencing), the wait-for graph of the namespace, the policy and
`now`. It returns one step of actions; the caller applies them in order and calls it again until
nothing is left to do. Applying the same decision twice is harmless: every
action is a state to reach, not a delta.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from kubelock.domain import lockdelay, quotas, specadvice
from kubelock.domain.aging import QueueAging
from kubelock.domain.grants import Request, admit, blocks, effective_priority, within
from kubelock.domain.lockpolicy import DEFAULT, NO_USAGE, LockPolicy, Usage
from kubelock.domain.model import (
    MAX_GRANTS,
    Action,
    Claim,
    ClaimStatus,
    CreateLock,
    Decision,
    DeleteClaim,
    DeleteLock,
    FinishedClaim,
    Lock,
    LockBreak,
    Notice,
    OnBusy,
    PodLiveness,
    Policy,
    RenewLock,
    Revocation,
    SetStatus,
)
from kubelock.domain.queueposition import worth_writing
from kubelock.domain.reasons import QUEUE_ADVICE, REST_ADVICE, Phase, Reason
from kubelock.domain.refusal import RETRY_CLAUSE, refusal_note, told_refused
from kubelock.domain.resource import not_nfc
from kubelock.domain.timefmt import human_seconds, to_rfc3339
from kubelock.domain.waitfor import ARRIVAL, Cycle, Order, Place, WaitForGraph, describe

# How soon a waiter found in a cycle whose victim is another claim is looked at again: long enough for
# the victim's resource, woken at once, to be decided first.
CYCLE_RECHECK_SECONDS = 1.0
# A waiter still without any answer this long after its creation is told Pending in the step that
# grants it, or that ends the grant before its own, instead of only Held once its grant is stored:
# under load each of those writes takes a second or more, and a claim's first answer is due within
# seconds. Measured on `created_at`, which the API server truncates to the second, so the true age is
# 1-2 s at least: an unloaded operator decides a claim within milliseconds and never spends the write.
FIRST_ANSWER_DUE_SECONDS = 2.0


def effective_ttl(claim: Claim, policy: Policy) -> int:
    ttl = claim.ttl_seconds if claim.ttl_seconds is not None else policy.default_ttl_seconds
    return min(ttl, policy.max_ttl_seconds)


def waiting_since(claim: Claim, now: float) -> float:
    """When a claim's wait started, for its `waitTimeoutSeconds`: the moment the operator first saw it
    (kept in its Pending status). A claim not answered yet is seen now. A Pending status written
    without this moment falls back to the creation time rounded up: the API server truncates
    `creationTimestamp` to the second, so the timestamp itself would end waits up to a second early.
    Never earlier than the claim's creation, so a wait is never cut short."""
    status = claim.status
    if status is None:
        return now
    if status.waiting_since is not None:
        return status.waiting_since
    return claim.created_at + 1.0


def aging_since(claim: Claim) -> float:
    """When a claim would begin to age by itself: the second of its creation (`creationTimestamp`,
    which the API server truncates to the second), or, once requeued, the second of its last requeue.
    In a queue it ages from this or from the latest of these of the waits that arrived before it,
    whichever is later (`queue_aging`).

    Not `waitingSince`: that is when the operator first answered the claim, and answers do not come
    in arrival order (after a restart a later claim may be answered first), so a later claim could
    gain its point of aging first and overtake an earlier one of the same priority. Whole seconds of
    arrival nearly follow the queue's order (a claim's sequence is its creation revision, and a
    requeued claim's new sequence is after every claim already there), but not quite: the API server
    stamps the second before the create commits, so two creates a few milliseconds apart across a
    second's boundary can commit in the other order, and the later claim carries the earlier second
    (docs/reliability.md, "a FIFO judgement": a0-009, revision 23134, stamped 05:27:26, and a0-001,
    revision 23140, stamped 05:27:25). The queue's clamp (`aging.QueueAging`) evens that out: among
    claims of one priority an earlier one has always aged at least as much, and with every priority
    equal the queue is first come, first served."""
    status = claim.status
    if status is not None and status.requeues and status.waiting_since is not None:
        return float(math.floor(status.waiting_since))
    return float(math.floor(claim.created_at))


def queue_aging(claims: Iterable[Claim]) -> QueueAging:
    """The aging starts of one resource's queue, from its claims (any of them; terminal ones and
    holders are left out): built from the claims that wait (`Claim.waiting`), exactly the waits the
    wait-for graph keeps of the resource (`queue_place`), so the two rank the queue alike."""
    return QueueAging((c.sequence, aging_since(c)) for c in claims if c.waiting)


def queue_priority(claim: Claim, now: float, policy: Policy, queue: QueueAging) -> int:
    """A claim's effective priority in the queue now: its priority aged by the time since it arrived
    (`aging_since`), held back to the arrivals of the waits ahead of it (`queue`: the resource's
    `queue_aging`). Every claim in the queue ages, a try-lock not yet decided too, so that claims of
    one priority always rank by arrival."""
    waited = now - queue.start(claim.sequence, aging_since(claim))
    return effective_priority(claim.priority, waited, policy.priority_aging_seconds)


def queue_place(claim: Claim) -> Place:
    """A waiting claim's place in its resource's queue, as the wait-for graph keeps it: ranked at any
    `now` exactly as `queue_order` ranks it (the graph clamps the queue's starts as `queue_aging` does)."""
    return Place(claim.sequence, claim.priority, aging_since(claim))


def queue_order(claim: Claim, now: float, policy: Policy, queue: QueueAging) -> tuple[int, int, str]:
    """The queue's order (`grants.Request.order`): effective priority, then arrival. `queue`: the
    resource's `queue_aging`."""
    return (-queue_priority(claim, now, policy, queue), claim.sequence, claim.uid)


def decide(
    resource: str,
    claims: Iterable[Claim],
    grants: Iterable[Lock],
    *,
    now: float,
    policy: Policy,
    graph: WaitForGraph,
    capacity: int = 1,
    broken: LockBreak | None = None,
    finished: Iterable[FinishedClaim] = (),
    lock_policy: LockPolicy = DEFAULT,
    usage: Usage = NO_USAGE,
) -> Decision:
    """`grants`: the resource's grants (the caller must have confirmed with the API server that a
    grant is gone when a claim believes it holds it). `capacity`: the permits the resource has.
    `broken`: what the last deleted grant of this resource said about who deleted it and why.
    `finished`: the terminal claims of the resource still in the API (terminal claims among `claims`
    count too); a grant that ended abnormally left its lock-delay on its claim's record.
    `lock_policy`: the LockPolicy governing the resource (its lock-delay and quotas);
    `usage`: the claims held and waiting under that policy in the namespace, for its quotas."""
    claims = list(claims)
    ended = [finished_record(c, s) for c in claims if not c.active and (s := c.status) is not None]
    records = [*finished, *ended]
    context = _Context(
        policy=policy,
        graph=graph,
        capacity=capacity,
        broken=broken,
        lock_policy=lock_policy,
        usage=usage,
        rest=lockdelay.rest(records, lock_policy, now),
        queue=queue_aging(claims),
    )
    decision = _decide_active(resource, claims, list(grants), now=now, context=context)
    # A claim of several resources leaves its record under each of them (for their lock-delay) but is
    # removed by the decision of its first resource only.
    own = [r for r in records if r.resource == resource]
    return _with_cleanup(decision, own, now, policy)


def finished_record(claim: Claim, status: ClaimStatus) -> FinishedClaim:
    """What is kept of a terminal claim (`status` is its status); a claim finished before `finishedAt`
    was recorded counts from its creation."""
    return FinishedClaim(
        name=claim.name,
        uid=claim.uid,
        holder=claim.holder,
        resource=claim.resource,
        phase=status.phase,
        reason=status.reason,
        finished_at=status.finished_at if status.finished_at is not None else claim.created_at,
        available_at=status.available_at,
    )


@dataclass(frozen=True, slots=True)
class _Context:
    """What one decision of a resource is taken on, besides its claims and grants."""

    policy: Policy
    graph: WaitForGraph
    capacity: int
    broken: LockBreak | None
    lock_policy: LockPolicy
    usage: Usage
    rest: lockdelay.Rest | None  # the resource rests after a grant ended abnormally
    queue: QueueAging  # the aging starts of the resource's queue (`queue_aging`)

    def rest_after_loss(self, now: float) -> float | None:
        """When a grant ending abnormally now lets its resource be granted again (None: no delay)."""
        return lockdelay.available_at(self.lock_policy, now)


def _decide_active(
    resource: str, claims: Sequence[Claim], grants: Sequence[Lock], *, now: float, context: _Context
) -> Decision:
    active = sorted((c for c in claims if c.active), key=lambda c: queue_order(c, now, context.policy, context.queue))
    by_uid = {c.uid: c for c in active}
    grant_of = {g.claim_uid: g for g in grants}
    # A claim of several resources is decided as a whole (`multiclaim`): here it only stands in the
    # queue and its grant counts; its grant goes here only once the claim is gone.
    singles = [c for c in active if not c.multi]
    requeued = _requeues(resource, active, grant_of, now)
    if requeued:
        return Decision(tuple(requeued))

    ending = [s for c in singles if (s := _ending(c, resource, now, context, c.uid in grant_of))]
    ended = {s.claim.uid: s.status.reason for s in ending}
    ends = [DeleteLock(g, ended[g.claim_uid]) for g in grants if g.claim_uid in ended]
    # The holder released (claim deleted) or already ended: its grant goes.
    ends += [DeleteLock(g, Reason.RELEASED) for g in grants if g.claim_uid not in by_uid]
    if ends:
        # New claims are answered in the same step, as the grants left will have it (a try-lock the
        # next step would grant, or a waiter it would, is not answered yet): behind releases, an
        # expiry, a wait timeout or a dead holder, under load seconds of writes, they would go
        # unanswered. (A release's hand-over of the next grant keeps them beside it: the reconciler.)
        gone = {*ended, *(g.claim_uid for g in grants if g.claim_uid not in by_uid)}
        return Decision((*ending, *_first_answers_without(resource, gone, active, grants, now, context), *ends))
    # Claims that end go first, in the same step as what the others call for: waiters timing out one
    # after another must not hold back a grant, an expiry or a first answer for as long as they come.
    rest = [c for c in active if c.uid not in ended]
    step = _step(resource, rest, grants, now, context, first_answers_only=bool(ending))
    return Decision((*ending, *step.actions)) if ending else step


def _step(
    resource: str,
    active: Sequence[Claim],
    grants: Sequence[Lock],
    now: float,
    context: _Context,
    *,
    first_answers_only: bool,
) -> Decision:
    """One step for a resource whose every grant belongs to one of the `active` claims: revoke claims
    that believe they hold a grant that is gone, then the first grant that needs a step, then claims
    over a quota, then new grants, then everyone else's answers."""
    policy, graph, capacity = context.policy, context.graph, context.capacity
    aging = policy.priority_aging_seconds  # the graph ranks queues as the grant does
    holding = {g.claim_uid for g in grants}
    believers = [c for c in active if c.phase is Phase.HELD and c.uid not in holding and not c.multi]
    if believers:
        return _revoked(resource, believers, now, context)
    by_uid = {c.uid: c for c in active}
    queue = [c for c in active if c.uid not in holding]
    requests = [
        Request(c.uid, c.sequence, ((resource, c.need),), queue_priority(c, now, policy, context.queue)) for c in queue
    ]
    room = max(0, MAX_GRANTS - len(grants))
    admitted: set[str] = set()
    if context.rest is None:  # while the resource rests after a lost grant, nobody is granted it
        admitted = {r.id for r in admit(requests, {resource: [g.need for g in grants]}, lambda _: capacity)[:room]}
        admitted -= {c.uid for c in queue if c.multi}  # granted on all its resources at once, elsewhere
    over = quotas.over([c for c in queue if not c.multi], admitted, context.lock_policy, context.usage)
    # The first answers below skip the claims about to be granted (a try-lock that fits is not turned
    # away) and those over a quota (a first Pending would let them wait past it; they end below).
    refused = {c.uid for c, _ in over}
    waiting = [c for c in active if c.uid not in admitted and c.uid not in refused]
    deadlines: list[float] = []
    ordered = sorted(
        (g for g in grants if not by_uid[g.claim_uid].multi), key=lambda g: (by_uid[g.claim_uid].sequence, g.claim_uid)
    )
    # Claims not told of their grant yet are told together: the grant is made (it is stored, with its
    # token), so its claim is told now, and Shared grants made in one step (or one after another) in
    # one step, not one per round. New claims get their first answer in the same step; everyone
    # else's position changes on the next.
    untold = [g for g in ordered if not _told(by_uid[g.claim_uid])]
    if untold:
        made = tuple(a for g in untold for a in _announce(by_uid[g.claim_uid], g, now, context.policy))
        return Decision((*made, *_first_answers(resource, waiting, grants, graph, capacity, now, aging)))
    for grant in ordered:
        step = _grant_step(resource, grant, by_uid[grant.claim_uid], now, context, deadlines)
        if step is not None:
            made, answer_others = step
            if answer_others:
                return Decision((*made, *_first_answers(resource, waiting, grants, graph, capacity, now, aging)))
            return Decision(_answered_as_without(resource, grant, made, active, grants, now, context))
    if over:
        refusals = (end_claim(c, Phase.REJECTED, Reason.QUOTA_EXCEEDED, m, now, warning=True) for c, m in over)
        return Decision(tuple(refusals))
    if admitted:
        # The claims not granted get their first answer in the same step, on the grants there are
        # (queued behind the claims granted now): not one write and a round later, behind the grant.
        creating = [CreateLock(c, now, effective_ttl(c, policy)) for c in queue if c.uid in admitted]
        after = (*grants, *(_granting(resource, a) for a in creating))
        due = due_answers(resource, [a.claim for a in creating], grants, now, context.lock_policy)
        return Decision((*creating, *due, *_first_answers(resource, waiting, after, graph, capacity, now, aging)))
    if context.rest is not None:
        told, waits = _resting_answers(resource, queue, grants, context.rest, now)
        if first_answers_only:
            return Decision(tuple(a for a in told if a.claim.status is None))
        return Decision(tuple(told), min([*deadlines, *waits, context.rest.until], default=None))
    preempted = _preemptions(queue, grants, by_uid, now, policy, capacity)
    if preempted:
        return Decision(tuple(preempted))
    if first_answers_only:
        return Decision(tuple(_first_answers(resource, active, grants, graph, capacity, now, aging)))
    actions, waits, wake = _answers(resource, active, grants, graph, capacity, now, aging)
    return Decision(tuple(actions), min([*deadlines, *waits], default=None), frozenset(wake))


def release_notice(claim: Claim, now: float) -> Notice | None:
    """What to tell when a claim is deleted: a release if it held the lock (whoever then deletes the
    lock, the operator or the garbage collector), nothing otherwise."""
    status = claim.status
    if status is None or status.phase is not Phase.HELD:
        return None
    held_for = human_seconds(max(0.0, now - (status.acquired_at or now)))
    if status.grants:
        tokens = ", ".join(f"{g.resource} (fencing token {g.fencing_token})" for g in status.grants)
        return Notice(Reason.RELEASED, f"{claim.holder} released {tokens} after holding them for {held_for}")
    message = (
        f"{claim.holder} released {claim.resource} (fencing token {status.fencing_token}) after holding it for "
        f"{held_for}"
    )
    return Notice(Reason.RELEASED, message)


def _with_cleanup(decision: Decision, finished: Sequence[FinishedClaim], now: float, policy: Policy) -> Decision:
    """Add the removal of terminal claims kept for `ttl_seconds_after_finished`, or the deadline of
    the next one (the caller sleeps on it in the one deadline heap)."""
    keep = policy.ttl_seconds_after_finished
    if keep <= 0:
        return decision
    removals: list[Action] = []
    later: list[float] = []
    for claim in finished:
        # Not before its lock-delay ends: the record is what the delay rests on.
        remove_at = max(claim.finished_at + keep, claim.available_at or 0.0)
        if now >= remove_at:
            removals.append(DeleteClaim(claim))
        else:
            later.append(remove_at)
    if not removals and not later:
        return decision
    deadlines = later if decision.next_deadline is None else [*later, decision.next_deadline]
    return replace(decision, actions=(*decision.actions, *removals), next_deadline=min(deadlines, default=None))


def _ending(claim: Claim, resource: str, now: float, context: _Context, holds: bool) -> SetStatus | None:
    """A status that ends the claim whatever the grants do: its pod is gone, its spec is out of
    bounds, or it waited too long."""
    policy, capacity = context.policy, context.capacity
    fresh = claim.status is None
    gone = pod_gone(claim, holding=holds)
    if gone is not None:
        reason, message = gone
        if fresh or waits_in_stopping_pod(claim, holds):
            return end_claim(claim, Phase.REJECTED, reason, message, now, warning=True)
        message = f"holder {claim.holder} lost its pod: {message}"
        # A claim told Held whose lock is already gone lost a grant too: its lock's deletion went out
        # together with this status, and the status write failed (a renewal raced it).
        if not holds and claim.phase is not Phase.HELD:
            return end_claim(claim, Phase.REVOKED, Reason.HOLDER_POD_TERMINATED, message, now, warning=True)
        return _lost(claim, resource, Phase.REVOKED, Reason.HOLDER_POD_TERMINATED, message, now, context)
    if not holds and claim.phase is not Phase.HELD and (spelled := not_nfc(resource)) is not None:
        # Refused rather than normalised: see `resource.not_nfc`. A claim Held since before this rule
        # keeps its lock until it ends.
        return end_claim(claim, Phase.REJECTED, Reason.INVALID_SPEC, spelled, now, warning=True)
    if fresh and claim.ttl_seconds is not None and claim.ttl_seconds > policy.max_ttl_seconds:
        message = specadvice.ttl_above_max(claim.ttl_seconds, policy.max_ttl_seconds)
        return end_claim(claim, Phase.REJECTED, Reason.INVALID_SPEC, message, now, warning=True)
    if not holds and not within(claim.need, capacity):
        # Never grantable: at the head of the queue it would hold back everyone behind it.
        message = specadvice.permits_over_capacity(claim.permits, [(resource, capacity)])
        return end_claim(claim, Phase.REJECTED, Reason.INVALID_SPEC, message, now, warning=True)
    if wait_over(claim, now, holds) and claim.on_busy is OnBusy.FAIL:
        timeout = claim.wait_timeout_seconds
        held_by = claim.status.holder if claim.status else None
        message = f"gave up after waiting {timeout}s for {resource}" + (f" (held by {held_by})" if held_by else "")
        message += refusal_note(claim)
        return end_claim(claim, Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT, message, now, warning=False, holder=held_by)
    return None


# After its n-th requeue a waiter's wait lasts at least 2^n seconds, up to this: with `onBusy: Requeue`
# and `waitTimeoutSeconds: 1` a claim made the operator write its status (and an Event) every second
# for as long as it waited, at no cost to its holder; 100 such claims of one agent slowed every other
# agent's decisions about 25-fold (docs/reliability.md, "A hostile agent, again").
REQUEUE_BACKOFF_CAP = 60


def wait_timeout(claim: Claim) -> int | None:
    """How long the claim's current wait lasts: `waitTimeoutSeconds`, and after its n-th requeue at
    least 2^n seconds (at most `REQUEUE_BACKOFF_CAP`)."""
    timeout = claim.wait_timeout_seconds
    requeues = claim.status.requeues if claim.status else 0
    if timeout is None or not requeues:
        return timeout
    return max(timeout, min(1 << min(requeues, 16), REQUEUE_BACKOFF_CAP))


def wait_over(claim: Claim, now: float, holds: bool) -> bool:
    timeout = wait_timeout(claim)
    return claim.waiting and not holds and timeout is not None and now >= waiting_since(claim, now) + timeout


def _requeues(resource: str, active: Sequence[Claim], grant_of: dict[str, Lock], now: float) -> list[SetStatus]:
    """Waiters with `onBusy: Requeue` whose wait timed out go to the end of the queue (a sequence
    after every claim of the resource, claims of several resources queued there included) with a fresh
    wait: their timeout and their aging start over. A claim of several resources is requeued by its
    own decision (`multiclaim`)."""
    over = [
        c for c in active
        if not c.multi and c.on_busy is OnBusy.REQUEUE and wait_over(c, now, c.uid in grant_of)
    ]
    last = max((c.sequence for c in active), default=0)
    return [requeued(claim, resource, last + n, now) for n, claim in enumerate(over, start=1)]


def requeued(claim: Claim, waited_for: str, sequence: int, now: float) -> SetStatus:
    """A timed-out waiter with `onBusy: Requeue` back in line at `sequence` (after every claim queued
    where it waits), its wait starting over now."""
    previous = claim.status
    count = (previous.requeues if previous else 0) + 1
    message = (
        f"waited {wait_timeout(claim)}s for {waited_for}; back at the end of the queue "
        f"(onBusy: Requeue, requeued {count} time{'s' if count > 1 else ''})"
    )
    status = ClaimStatus(
        phase=Phase.PENDING,
        reason=Reason.REQUEUED,
        message=message,
        sequence=sequence,
        holder=previous.holder if previous else None,
        observed_renew=previous.observed_renew if previous else None,
        waiting_since=now,
        requeues=count,
    )
    return SetStatus(claim, status, Notice(Reason.REQUEUED, message))


def end_claim(
    claim: Claim,
    phase: Phase,
    reason: Reason,
    message: str,
    now: float,
    *,
    warning: bool,
    holder: str | None = None,
    available_at: float | None = None,
) -> SetStatus:
    # A terminal claim holds nothing: no lock name, no token and no lease timestamps survive.
    previous = claim.status
    status = ClaimStatus(
        phase=phase,
        reason=reason,
        message=message,
        sequence=claim.sequence,
        holder=holder,
        observed_renew=previous.observed_renew if previous else None,
        finished_at=now,
        available_at=available_at,
    )
    return SetStatus(claim, status, Notice(reason, message, warning=warning))


def waits_in_stopping_pod(claim: Claim, holding: bool) -> bool:
    """A claim that waits (never granted, or queued again after a release) while its pod is being
    deleted: its process still runs and reads the answer, and it lost nothing, so it is refused like a
    new claim of that pod (`Rejected`, "pod … is terminating"), not told its pod was lost (`Revoked`)."""
    return not holding and claim.phase is not Phase.HELD and claim.pod is PodLiveness.STOPPING


def pod_gone(claim: Claim, *, holding: bool) -> tuple[Reason, str] | None:
    """Why `claim` can no longer hold through its pod (terminated, missing, unwatched, or stopping and
    not holding: `PodLiveness.effective`), as the reason a claim never answered is rejected with and
    the message; None while the pod may hold."""
    pod = claim.pod.effective(holding=holding)
    if pod not in (PodLiveness.TERMINATED, PodLiveness.MISSING, PodLiveness.UNWATCHED):
        return None
    if pod is PodLiveness.UNWATCHED:
        message = (
            f"pod {claim.pod_name} lacks the label kubelock.dev/lock-holder=true, so kubelock cannot see "
            "it terminate; add the label to the pod template"
        )
    elif pod is PodLiveness.MISSING:
        message = specadvice.pod_missing(claim.pod_name)
    elif claim.pod is PodLiveness.STOPPING:
        message = f"pod {claim.pod_name} is terminating"
    else:
        message = f"pod {claim.pod_name} terminated"
    return (Reason.HOLDER_POD_TERMINATED if pod is PodLiveness.TERMINATED else Reason.POD_NOT_FOUND), message


def lock_refused(claim: Claim, message: str, now: float, *, retry_seconds: float) -> SetStatus | None:
    """What `claim` is told when the API server refused the create of the lock that would have
    granted it (`message`: what it said); None when there is nothing to write (see
    `kubelock.domain.refusal`). A try-lock, of one resource or several, ends `Rejected`: it asked for
    an answer now (a claim of several resources may hold part of its set; ended, it holds nothing, and
    its resources' decisions remove those grants as any ended claim's). A waiter stays `Pending` with
    reason `LockRefused` and a position of 1 (it was being granted), told once per episode."""
    if not claim.active or claim.phase is Phase.HELD:
        return None  # answered already; a Held claim's grant is never created again
    if not claim.wait:
        return end_claim(claim, Phase.REJECTED, Reason.LOCK_REFUSED, message, now, warning=True)
    if told_refused(claim):
        return None
    waiting = f"{message}{RETRY_CLAUSE} {retry_seconds:.0f} s"
    status = queued_status(claim, Reason.LOCK_REFUSED, waiting, None, 1, now, [])
    return SetStatus(claim, status, Notice(Reason.LOCK_REFUSED, waiting, warning=True))


def _lost(
    claim: Claim, resource: str, phase: Phase, reason: Reason, message: str, now: float, context: _Context
) -> SetStatus:
    """End a grant abnormally (expired, broken, its pod gone). With a lock-delay, the claim's status
    records when the resource may be granted again: the delay rests on that record (see `lockdelay`)."""
    until = context.rest_after_loss(now)
    if until is not None:
        message += f"; {resource} rests until {to_rfc3339(until)} before anyone else is granted it (lock-delay)"
    return end_claim(claim, phase, reason, message, now, warning=True, available_at=until)


def break_message(resource: str, broken: LockBreak | None) -> str:
    if broken is not None and broken.namespace_deleted:
        return f"the lock on {resource} ended because its namespace is being deleted"
    who = broken.actor if broken and broken.actor else "an administrator"
    why = f": {broken.reason}" if broken and broken.reason else ""
    return f"the lock on {resource} was broken by {who}{why}"


def break_details(broken: LockBreak | None) -> tuple[tuple[str, str], ...]:
    if broken is None or broken.namespace_deleted:
        return ()
    return tuple((k, v) for k, v in (("actor", broken.actor), ("breakReason", broken.reason)) if v)


def _revoked(resource: str, believers: Sequence[Claim], now: float, context: _Context) -> Decision:
    """Claims that believe they hold a grant that is gone: it was broken (or went with its namespace,
    after which nobody is granted anything there: no lock-delay)."""
    broken = context.broken
    message = break_message(resource, broken)
    if broken is not None and broken.namespace_deleted:
        revoked = [end_claim(c, Phase.REVOKED, Reason.NAMESPACE_DELETED, message, now, warning=True) for c in believers]
    else:
        revoked = [_lost(c, resource, Phase.REVOKED, Reason.LOCK_BROKEN, message, now, context) for c in believers]
    details = break_details(broken)
    return Decision(tuple(replace(r, notice=Notice(r.status.reason, r.status.message, True, details)) for r in revoked))


def held_status(claim: Claim, lock: Lock, observed_renew: str | None) -> ClaimStatus:
    return ClaimStatus(
        phase=Phase.HELD,
        reason=Reason.GRANTED,
        message=f"{claim.holder} holds {lock.resource} (fencing token {lock.fencing_token})",
        sequence=claim.sequence,
        holder=claim.holder,
        lock_name=lock.name,
        fencing_token=lock.fencing_token,
        acquired_at=lock.acquired_at,
        renewed_at=lock.renewed_at,
        expires_at=lock.expires_at,
        observed_renew=observed_renew,
    )


def _announce(holder: Claim, lock: Lock, now: float, policy: Policy) -> tuple[Action, ...]:
    """Tell the holder of a grant it has not been told of. Normally that is the step right after the
    lock's create; a grant left untold for half its lease (its operator stopped in between) is renewed
    first, so that the holder is not handed a lease that is already running out."""
    if now < lock.renewed_at + lock.lease_seconds / 2:
        status = held_status(holder, lock, holder.renew_request)
        return (SetStatus(holder, status, Notice(Reason.GRANTED, status.message)),)
    ttl = effective_ttl(holder, policy)
    renewed = replace(lock, renewed_at=now, lease_seconds=ttl)
    status = held_status(holder, renewed, holder.renew_request)
    return RenewLock(lock, now, ttl), SetStatus(holder, status, Notice(Reason.GRANTED, status.message))


def _told(holder: Claim) -> bool:
    """The claim has been told of its grant (it is Held)."""
    return holder.status is not None and holder.status.phase is Phase.HELD


def _answered_as_without(
    resource: str, grant: Lock, made: tuple[Action, ...], active: Sequence[Claim], grants: Sequence[Lock],
    now: float, context: _Context,
) -> tuple[Action, ...]:
    """`made`, a step that ends `grant` (its lease expired), with the first answers of new claims
    as the resource will be without it, between the holder's status and the lock's deletion (that
    write would otherwise keep them waiting one more under load). Those the next step grants, or
    answers itself, are left to it. A step that keeps the grant answers nobody: they would name it."""
    gone = [a for a in made if isinstance(a, DeleteLock) and a.lock.claim_uid == grant.claim_uid]
    if not gone:
        return made
    answers = _first_answers_without(resource, {grant.claim_uid}, active, grants, now, context)
    return (*(a for a in made if a not in gone), *answers, *gone)


def _first_answers_without(
    resource: str, gone: Collection[str], active: Sequence[Claim], grants: Sequence[Lock], now: float,
    context: _Context,
) -> list[SetStatus]:
    """The first answers of new claims as the resource will be once the claims of `gone` (by uid) and
    their grants are gone: a step that ends grants answers the new claims beside them, not a round
    later. Only first answers: a grant, or anything else the next step calls for, is left to it."""
    left = [g for g in grants if g.claim_uid not in gone]
    rest = [c for c in active if c.uid not in gone]
    return first_answers(_step(resource, rest, left, now, context, first_answers_only=True).actions)


def _grant_step(
    resource: str, lock: Lock, holder: Claim, now: float, context: _Context, deadlines: list[float]
) -> tuple[tuple[Action, ...], bool] | None:
    """What one grant whose claim has been told of it calls for: its lease expired, renewed or found
    stale; None when it is quiet (its next deadlines are added to `deadlines`). With the actions:
    whether claims without an answer get theirs in the same step (not while the grant ends: the
    answers would name it)."""
    policy = context.policy
    current = holder.status
    assert current is not None  # told (`_told`): untold grants are announced before this is asked
    # The later of the lock's expiry and the one the holder was told: a renewal writes both, and a
    # replica whose view of locks lags its view of claims must not cut the renewed lease short.
    expires_at = max(lock.expires_at, current.expires_at or lock.expires_at)
    if now >= expires_at:
        message = (
            f"lease on {resource} expired at {to_rfc3339(expires_at)}: not renewed for "
            f"{human_seconds(lock.lease_seconds)}"
        )
        expired = _lost(holder, resource, Phase.EXPIRED, Reason.LEASE_EXPIRED, message, now, context)
        return (expired, DeleteLock(lock, Reason.LEASE_EXPIRED)), False

    if holder.renew_request is not None and holder.renew_request != current.observed_renew:
        ttl = effective_ttl(holder, policy)
        renewed = replace(
            current,
            renewed_at=now,
            expires_at=now + ttl,
            stale=False,
            observed_renew=holder.renew_request,
            message=f"{holder.holder} holds {resource} (fencing token {lock.fencing_token}); renewed",
        )
        notice = Notice(Reason.RENEWED, f"lock {resource} renewed after being stale") if current.stale else None
        return (RenewLock(lock, now, ttl), SetStatus(holder, renewed, notice)), True

    revoking = _revocation_step(resource, lock, holder, current, now, context, deadlines)
    if revoking is not None:
        return revoking

    deadlines.append(expires_at)
    renewed_at = max(lock.renewed_at, current.renewed_at or lock.renewed_at)  # the later view, as for expiry
    stale_at = renewed_at + policy.stale_after(lock.lease_seconds)
    if not current.stale and stale_at < expires_at:
        if now >= stale_at:
            message = stale_message(resource, holder.holder, lock, policy, expires_at)
            notice = Notice(Reason.STALE, message, warning=True)
            return (SetStatus(holder, replace(current, stale=True), notice),), True
        deadlines.append(stale_at)
    return None


def _revocation_step(
    resource: str,
    lock: Lock,
    holder: Claim,
    current: ClaimStatus,
    now: float,
    context: _Context,
    deadlines: list[float],
) -> tuple[tuple[Action, ...], bool] | None:
    """A revocation request: recorded on the holder's status when first seen; when its grace has
    run out, the lock is broken (Revoked, RevocationGraceExpired, with who asked and why)."""
    revocation = current.revocation
    if revocation is None:
        revocation = requested_revocation(holder, now)
        if revocation is None:
            return None
        return (record_revocation(holder, current, revocation, resource),), True
    if now < revocation.deadline:
        deadlines.append(revocation.deadline)
        return None
    why = f": {revocation.reason}" if revocation.reason else ""
    message = (
        f"the lock on {resource} was broken: {revocation.requested_by} asked {holder.holder} to give it back "
        f"within {human_seconds(revocation.grace_seconds)}{why}, and it did not"
    )
    # A forced break is an abnormal end: the resource rests for the policy's lock-delay, if any.
    ended = _lost(holder, resource, Phase.REVOKED, Reason.REVOCATION_GRACE_EXPIRED, message, now, context)
    details = (("actor", revocation.requested_by), ("breakReason", revocation.reason or "revocation grace expired"))
    ended = replace(ended, notice=Notice(Reason.REVOCATION_GRACE_EXPIRED, message, True, details))
    return (ended, DeleteLock(lock, Reason.REVOCATION_GRACE_EXPIRED)), False


def requested_revocation(claim: Claim, now: float) -> Revocation | None:
    """The revocation a claim's request asks for, as recorded when first seen at `now` (None: none asked)."""
    request = claim.revoke_request
    if request is None:
        return None
    return Revocation(now, request.requested_by, request.grace_seconds, now + request.grace_seconds, request.reason)


def record_revocation(holder: Claim, current: ClaimStatus, revocation: Revocation, resource: str) -> SetStatus:
    why = f": {revocation.reason}" if revocation.reason else ""
    message = (
        f"{revocation.requested_by} asks {holder.holder} to give back {resource} by "
        f"{to_rfc3339(revocation.deadline)} (grace {human_seconds(revocation.grace_seconds)}){why}"
    )
    details = (("actor", revocation.requested_by), ("revokeReason", revocation.reason))
    notice = Notice(Reason.REVOCATION_REQUESTED, message, True, details)
    return SetStatus(holder, replace(current, revocation=revocation), notice)


def _preemptions(
    queue: Sequence[Claim],
    grants: Sequence[Lock],
    by_uid: dict[str, Claim],
    now: float,
    policy: Policy,
    capacity: int,
) -> list[SetStatus]:
    """With preemption on, a waiter whose own priority (not aged: aging orders waiters, it does not
    preempt) exceeds a blocking holder's by `preemption_priority_delta` asks that holder, by a
    revocation request from the operator, to give the lock back. Claims of several resources take
    part both ways: one waiting asks the holder of each of its resources that blocks it (each from
    that resource's decision); one Held is asked to give back its whole set (its own decision then
    keeps the deadline, `multiclaim`)."""
    delta = policy.preemption_priority_delta
    if delta is None:
        return []
    waiters = [c for c in queue if c.waiting]
    out: list[SetStatus] = []
    for grant in grants:
        holder = by_uid[grant.claim_uid]
        current = holder.status
        if current is None or current.phase is not Phase.HELD or current.revocation is not None:
            continue
        urgent = [w for w in waiters if w.priority - holder.priority >= delta and blocks(grant.need, w.need, capacity)]
        if not urgent:
            continue
        first = urgent[0]
        reason = (
            f"preempted by {first.holder} (priority {first.priority}, {holder.holder} has {holder.priority}; "
            f"preemptionPriorityDelta {delta})"
        )
        grace = policy.preemption_grace_seconds
        revocation = Revocation(now, "kubelock-operator", grace, now + grace, reason)
        out.append(record_revocation(holder, current, revocation, ", ".join(holder.every_resource)))
    return out


def _first_answers(
    resource: str,
    active: Sequence[Claim],
    grants: Sequence[Lock],
    graph: WaitForGraph,
    capacity: int,
    now: float,
    aging_seconds: float,
) -> list[Action]:
    """The answers to claims that have none yet, given who holds the resource."""
    actions, _, _ = _answers(resource, active, grants, graph, capacity, now, aging_seconds)
    return [a for a in actions if isinstance(a, SetStatus) and a.claim.status is None]


def due_answers(
    resource: str, granted: Sequence[Claim], grants: Sequence[Lock], now: float, lock_policy: LockPolicy = DEFAULT
) -> list[SetStatus]:
    """First answers for the waiters among `granted` (claims a step grants, in queue order) whose
    answer is overdue (`FIRST_ANSWER_DUE_SECONDS`): Pending at the head of the queue, as the resource is
    held by `grants` now. The step's grant, or the release before it, takes a write or two more (the
    create or hand-over, then `Held`); this answer goes beside them. A try-lock is never told Pending,
    and under a policy with quotas a grant is not also counted as a wait (one refusal too many)."""
    if lock_policy.quotas.any:
        return []
    ordered = sorted(grants, key=lambda g: (g.acquired_at, g.fencing_token, g.uid))
    holder = ordered[0].holder if ordered else None
    out: list[SetStatus] = []
    for claim in granted:
        if not claim.wait or claim.multi or claim.status is not None or not _overdue(claim, now):
            continue
        position = len(out) + 1
        held = f", held by {_held_by(ordered)}" if ordered else ""
        message = f"waiting for {resource}{held}; position {position} in the queue, granted next"
        out.append(SetStatus(claim, queued_status(claim, Reason.QUEUED, message, holder, position, now, []), None))
    return out


def _overdue(claim: Claim, now: float) -> bool:
    """The claim's first answer is due (a creation time of 0: not known, as in a body without one)."""
    return claim.created_at > 0 and now - claim.created_at >= FIRST_ANSWER_DUE_SECONDS


def _granting(resource: str, grant: CreateLock) -> Lock:
    """The grant `grant` makes, as the claims answered beside it see it (its token is not known yet:
    answers name holders, not tokens)."""
    claim = grant.claim
    return Lock(
        name="", uid="", resource=resource, holder=claim.holder, claim_name=claim.name, claim_uid=claim.uid,
        fencing_token=0, acquired_at=grant.acquired_at, renewed_at=grant.acquired_at,
        lease_seconds=grant.lease_seconds, mode=claim.mode, permits=claim.permits,
    )


def first_answers(actions: Iterable[Action]) -> list[SetStatus]:
    """The first answers among `actions`: statuses of claims that have none yet. Each rests on its
    claim's own version only, so none needs to wait for the other writes of its decision."""
    return [
        a for a in actions if isinstance(a, SetStatus) and a.claim.status is None and a.status.phase is not Phase.HELD
    ]


def _held_by(grants: Sequence[Lock]) -> str:
    """Who holds a resource, for messages: the holder of its one grant, or the first and a count."""
    first = grants[0].holder
    others = len({g.holder for g in grants} - {first})
    return first if not others else f"{first} and {others} other holder{'s' if others > 1 else ''}"


def _answers(
    resource: str,
    active: Sequence[Claim],
    grants: Sequence[Lock],
    graph: WaitForGraph,
    capacity: int,
    now: float,
    aging_seconds: float,
) -> tuple[list[Action], list[float], set[str]]:
    """What every claim that holds nothing is told while `grants` hold the resource and none more can
    be made: try-locks rejected, waiters queued (or ended as deadlock victims); with the waiters'
    timeouts and the resources to wake. The wait-for graph ranks queues as the grant does (`aging_seconds`)."""
    actions: list[Action] = []
    deadlines: list[float] = []
    wake: set[str] = set()
    position = 0
    holding = {g.claim_uid for g in grants}
    ordered = sorted(grants, key=lambda g: (g.acquired_at, g.fencing_token, g.uid))
    for claim in active:
        if claim.uid in holding or claim.multi:
            continue
        # Named: the grants that keep this claim out, or all of them when the queue ahead does.
        blocking = [g for g in ordered if blocks(g.need, claim.need, capacity)] or ordered
        if not blocking:
            # Nothing holds the resource: a claim of several resources queued ahead, still waiting for
            # another of them, keeps this one out (FIFO), while holding nothing.
            found = cycle_through(graph, claim, resource) if claim.wait else None
            if found is not None and found.victim == found.edges[0]:
                actions.append(deadlocked(claim, found, Reason.DEADLOCK, now))
                continue
            if found is not None:
                wake.add(found.victim.resource)
            actions.extend(_behind_reservation(resource, claim, active, position, now, deadlines))
            position += 1 if claim.wait else 0
            continue
        first = blocking[0]
        if not claim.wait:
            if claim.status is None:
                message = (
                    f"{resource} is held by {_held_by(blocking)} since {to_rfc3339(first.acquired_at)}; "
                    + QUEUE_ADVICE
                )
                actions.append(
                    end_claim(
                        claim, Phase.REJECTED, Reason.HELD_BY_ANOTHER, message, now, warning=False, holder=first.holder
                    )
                )
            continue
        own = [g for g in ordered if g.holder == claim.holder and blocks(g.need, claim.need, capacity)]
        if own:
            cycle = Cycle.self_wait(claim.holder, resource, claim.sequence)
            actions.append(deadlocked(claim, cycle, Reason.SELF_DEADLOCK, now, holding=claim_names(own)))
            continue
        found = cycle_through(graph, claim, resource, Order(now, aging_seconds))
        if found is not None:
            victim = found.victim
            if victim == found.edges[0]:
                actions.append(deadlocked(claim, found, Reason.DEADLOCK, now))
                continue
            # The victim, an older wait's newer neighbour in this cycle, ends when its own resource
            # is decided. This waiter may close other cycles whose victims nobody has met yet: it is
            # looked at again once that victim had its turn, until no cycle through it is left.
            wake.add(victim.resource)
            deadlines.append(now + CYCLE_RECHECK_SECONDS)
        position += 1
        message = f"waiting for {resource}, held by {_held_by(blocking)}; position {position} in the queue"
        pending = queued_status(claim, Reason.QUEUED, message, first.holder, position, now, deadlines)
        if worth_writing(claim.status, pending):
            notice = Notice(Reason.QUEUED, pending.message) if claim.status is None else None
            actions.append(SetStatus(claim, pending, notice))
    return actions, deadlines, wake


def _behind_reservation(
    resource: str, claim: Claim, active: Sequence[Claim], position: int, now: float, deadlines: list[float]
) -> list[Action]:
    """The answer to a claim kept out of a free resource by a claim of several resources queued ahead
    of it (it holds nothing; it is granted everything it asks for at once, and this claim next)."""
    ahead = next((c for c in active if c.multi and c.uid != claim.uid), None)
    holder = ahead.holder if ahead is not None else None
    who = f"the claim of {holder} queued ahead for several resources" if holder else "claims queued ahead"
    if not claim.wait:
        if claim.status is not None:
            return []
        message = f"{resource} is reserved for {who}; {QUEUE_ADVICE}"
        return [end_claim(claim, Phase.REJECTED, Reason.HELD_BY_ANOTHER, message, now, warning=False, holder=holder)]
    message = f"waiting for {resource}, reserved for {who}; position {position + 1} in the queue"
    pending = queued_status(claim, Reason.QUEUED, message, holder, position + 1, now, deadlines)
    if claim.status == pending:
        return []
    return [SetStatus(claim, pending, Notice(Reason.QUEUED, pending.message) if claim.status is None else None)]


def queued_status(
    claim: Claim, reason: Reason, message: str, holder: str | None, position: int, now: float, deadlines: list[float]
) -> ClaimStatus:
    """A waiter's Pending status at `position`; its wait timeout joins `deadlines`. What it carries over
    from its current status (when it began waiting, how often it was requeued) is the same whatever
    keeps it waiting."""
    since = waiting_since(claim, now)
    timeout = wait_timeout(claim)
    if timeout is not None:
        deadlines.append(since + timeout)
    return ClaimStatus(
        phase=Phase.PENDING,
        reason=reason,
        message=message,
        sequence=claim.sequence,
        holder=holder,
        queue_position=position,
        waiting_since=since,
        requeues=claim.status.requeues if claim.status else 0,
    )


def _resting_answers(
    resource: str, queue: Sequence[Claim], grants: Sequence[Lock], rest: lockdelay.Rest, now: float
) -> tuple[list[SetStatus], list[float]]:
    """What the claims that hold nothing are told while the resource rests after a grant ended
    abnormally: try-locks are turned away until then, waiters keep their place and learn until when
    and why (`availableAt`); with the waiters' timeouts."""
    actions: list[SetStatus] = []
    deadlines: list[float] = []
    until = to_rfc3339(rest.until)
    holder = grants[0].holder if grants else None
    position = 0
    for claim in queue:
        if claim.multi:
            continue
        if not claim.wait:
            if claim.status is None:
                message = f"{resource} rests until {until}: {rest.cause}; {REST_ADVICE}"
                actions.append(end_claim(claim, Phase.REJECTED, Reason.LOCK_DELAY, message, now, warning=False))
            continue
        position += 1
        message = f"waiting for {resource}, which rests until {until}: {rest.cause}; position {position} in the queue"
        pending = replace(
            queued_status(claim, Reason.LOCK_DELAY, message, holder, position, now, deadlines), available_at=rest.until
        )
        if worth_writing(claim.status, pending):
            told = claim.status is not None and claim.status.reason is Reason.LOCK_DELAY
            actions.append(SetStatus(claim, pending, None if told else Notice(Reason.LOCK_DELAY, pending.message)))
    return actions, deadlines


def stale_message(resource: str, holder: str, lock: Lock, policy: Policy, expires_at: float) -> str:
    """Stale means "not renewed on schedule": holders renew every third of the lease, so a lease
    that went `stale_after_percent` of its length without a renewal has missed its schedule.
    `expires_at`: the expiry in force (the later of the lock's and the one its holder was told)."""
    return (
        f"lock {resource} held by {holder} has not been renewed for "
        f"{human_seconds(policy.stale_after(lock.lease_seconds))}, {policy.stale_after_percent}% of its "
        f"{human_seconds(lock.lease_seconds)} lease (holders renew every third of it); it expires at "
        f"{to_rfc3339(expires_at)} unless renewed"
    )


def cycle_through(graph: WaitForGraph, claim: Claim, resource: str, order: Order = ARRIVAL) -> Cycle | None:
    """The cycle the claim's wait for `resource` closes in the wait-for graph, but not its wait on its
    own holder alone. The callers judge a wait on one's own hold (SelfDeadlock) from the resource's
    grants before they search; one that only the graph shows is the claim's own grant under way:
    another replica's lock write (a grant, a handover) that reached the graph before the claim's
    `Held` did. Taken for a cycle, it ended the claim `Deadlocked` as it was being granted (seen on
    a node with two replicas under churn)."""
    found = graph.find_cycle(claim.holder, resource, claim.sequence, claim.need, order)
    return None if found is not None and len(found.edges) == 1 else found


def deadlocked(claim: Claim, cycle: Cycle, reason: Reason, now: float, *, holding: Sequence[str] = ()) -> SetStatus:
    """The claim ends Deadlocked with the cycle in its status (of a long one, its two ends: `Cycle.shown`).
    `holding`: of a wait on its own holder (SelfDeadlock), the claims of that holder that hold the
    resource, named in the message: a holder that writes claims with `generateName` has several, and
    the cycle (holder → resource → holder) does not tell it which one to use or release."""
    path, length = cycle.shown, len(cycle.edges)
    message = f"deadlock: {describe(path, length)}"
    if holding:
        resource = path[1] if len(path) > 1 else claim.resource
        claims = "claim " + holding[0] if len(holding) == 1 else "claims " + ", ".join(holding)
        message += (f"; {resource} is held by this holder's own {claims}: use that lock, or release it "
                    "before waiting for it again")
    update = end_claim(claim, Phase.DEADLOCKED, reason, message, now, warning=True)
    return replace(update, status=replace(update.status, cycle=path, cycle_length=length))


def claim_names(grants: Sequence[Lock], shown: int = 3) -> tuple[str, ...]:
    """The claims of `grants`, each once, at most `shown` of them (a shared resource may have many
    grants of one holder; the message stays short)."""
    names = tuple(dict.fromkeys(g.claim_name for g in grants if g.claim_name))
    return names if len(names) <= shown else (*names[:shown], f"and {len(names) - shown} more")
