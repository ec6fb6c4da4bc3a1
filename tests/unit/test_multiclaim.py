"""Claims of several resources (`spec.resources`): all or nothing, decided as a whole beside the
per-resource decisions. Tables of situations on an explicit clock, then random timelines compared
with a brute-force model of the queue."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pytest

from kubelock.domain.arbiter import decide
from kubelock.domain.grants import Mode, Need, compatible, fits
from kubelock.domain.leasestart import lock_shows, told_at
from kubelock.domain.lockpolicy import DEFAULT, LockPolicy
from kubelock.domain.model import (
    Action,
    Claim,
    CreateLock,
    Decision,
    DeleteLock,
    Lock,
    LockBreak,
    PodLiveness,
    RenewLock,
    SetStatus,
)
from kubelock.domain.multiclaim import ResourceView, decide_claim, held_status
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.resource import lock_name
from kubelock.domain.waitfor import WaitForGraph
from tests.support.arbitration import POLICY, T0, Space, claim, holding, lock_for, summary, with_phase

A, B, C = "r://a", "r://b", "r://c"


def multi(name: str, seq: int, resources: Iterable[str], **spec: object) -> Claim:
    listed = tuple(resources)
    return claim(name, seq, resource=listed[0], resources=listed, **spec)


def grant(c: Claim, resource: str, token: int, **changes: object) -> Lock:
    return replace(lock_for(c, token=token, **changes), resource=resource, name=lock_name(resource))  # type: ignore[arg-type]


def told(c: Claim, grants: list[Lock], **changes: object) -> Claim:
    """`c` Held on every resource (told), with these grants."""
    return replace(c, status=replace(held_status(c, grants, c.renew_request), **changes))


def views(
    claims: Iterable[Claim], grants: Iterable[Lock], capacity: dict[str, int] | None = None,
    broken: dict[str, LockBreak] | None = None,
) -> dict[str, ResourceView]:
    claims, grants = list(claims), list(grants)
    resources = sorted({r for c in claims for r in c.every_resource} | {g.resource for g in grants})
    return {
        r: ResourceView(
            resource=r,
            claims=tuple(c for c in claims if r in c.every_resource and c.active),
            grants=tuple(g for g in grants if g.resource == r),
            capacity=(capacity or {}).get(r, 1),
            broken=(broken or {}).get(r),
        )
        for r in resources
    }


def graph_of(claims: Iterable[Claim], grants: Iterable[Lock]) -> WaitForGraph:
    """The wait-for graph as the cache keeps it: grants of claims of several resources count once Held."""
    claims = list(claims)
    by_uid = {c.uid: c for c in claims}
    graph = WaitForGraph()
    held: dict[str, list[tuple[str, Need]]] = {}
    for g in grants:
        owner = by_uid.get(g.claim_uid)
        if owner is not None and owner.multi and owner.phase is not Phase.HELD:
            continue
        held.setdefault(g.resource, []).append((g.holder, g.need))
    for resource, entries in held.items():
        graph.set_grants(resource, tuple(entries))
    for c in claims:
        if c.waiting:
            for r in c.every_resource:
                graph.add_wait(c.holder, r, c.sequence, c.need, reserves=c.multi)
    return graph


def decide_multi(c: Claim, claims: list[Claim], grants: list[Lock], now: float = T0, **kw: object) -> Decision:
    everyone = [c, *(o for o in claims if o.uid != c.uid)]
    return decide_claim(c, views(everyone, grants, **kw), now=now, policy=POLICY,  # type: ignore[arg-type]
                        graph=graph_of(everyone, grants))


def brief(decision: Decision) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for action in decision.actions:
        if isinstance(action, CreateLock):
            out.append(("create", action.claim.name, action.target))
        elif isinstance(action, DeleteLock):
            out.append(("delete", action.lock.claim_name, action.lock.resource, action.reason))
        elif isinstance(action, RenewLock):
            out.append(("renew", action.lock.claim_name, action.lock.resource))
        else:
            out.extend(summary(Decision((action,))))
    return out


M = multi("m", 5, [B, A], wait=True)


def _held_single(c: Claim, token: int) -> tuple[Claim, Lock]:
    g = lock_for(c, token=token)
    return holding(c, g), g


XA, XA_LOCK = _held_single(claim("xa", 1, resource=A), 900)
XC, XC_LOCK = _held_single(claim("xc", 1, resource=C), 901)


CASES = [
    pytest.param(M, [], [], [("create", "m", A)], id="free-first-grant-in-sorted-order"),
    pytest.param(M, [], [grant(M, A, 1000)], [("create", "m", B)], id="one-stored-next-one"),
    pytest.param(M, [], [grant(M, A, 1000), grant(M, B, 1001)], [("status", "m", Phase.HELD, Reason.GRANTED)],
                 id="all-stored-then-held"),
    pytest.param(M, [XA], [XA_LOCK], [("status", "m", Phase.PENDING, Reason.QUEUED)],
                 id="one-taken-waits-holding-nothing"),
    pytest.param(replace(M, wait=False), [XA], [XA_LOCK], [("status", "m", Phase.REJECTED, Reason.HELD_BY_ANOTHER)],
                 id="try-lock-refused-when-one-is-taken"),
    pytest.param(M, [claim("xb", 1, resource=B)], [grant(M, A, 1000), replace(lock_for(claim("xb", 1, resource=B)),
                 resource=B, name=lock_name(B))],
                 [("status", "m", Phase.PENDING, Reason.GIVING_BACK), ("delete", "m", A, Reason.GIVING_BACK)],
                 id="rest-taken-meanwhile-gives-back"),
    pytest.param(with_phase(M, Phase.PENDING, Reason.GIVING_BACK, since=T0), [], [grant(M, A, 1000)],
                 [("status", "m", Phase.PENDING, Reason.GIVING_BACK), ("delete", "m", A, Reason.GIVING_BACK)],
                 id="giving-back-goes-on-even-if-it-fits"),
    pytest.param(with_phase(M, Phase.PENDING, Reason.GIVING_BACK, since=T0), [], [],
                 [("status", "m", Phase.PENDING, Reason.QUEUED)], id="given-back-waits-again-before-any-grant"),
    pytest.param(with_phase(M, Phase.PENDING, Reason.GIVING_BACK, since=T0), [], [grant(M, A, 1000),
                 grant(M, B, 1001)], [("status", "m", Phase.PENDING, Reason.GIVING_BACK),
                 ("delete", "m", A, Reason.GIVING_BACK), ("delete", "m", B, Reason.GIVING_BACK)],
                 id="never-held-while-giving-back"),
    pytest.param(M, [with_phase(claim("q", 2, resource=A, wait=True), Phase.PENDING, Reason.QUEUED, since=T0)], [],
                 [("status", "m", Phase.PENDING, Reason.QUEUED)], id="fifo-behind-earlier-waiter-on-a-free-resource"),
    pytest.param(multi("dup", 5, [A, "R://a/"]), [], [], [("status", "dup", Phase.REJECTED, Reason.INVALID_SPEC)],
                 id="duplicates-after-normalisation-rejected"),
    pytest.param(multi("big", 5, [A, B], permits=2), [], [], [("status", "big", Phase.REJECTED, Reason.INVALID_SPEC)],
                 id="permits-over-capacity-rejected"),
    pytest.param(replace(M, pod_name="p", pod=PodLiveness.TERMINATED, status=with_phase(M, Phase.PENDING,
                 Reason.QUEUED, since=T0).status), [], [grant(M, A, 1000)],
                 [("status", "m", Phase.REVOKED, Reason.HOLDER_POD_TERMINATED),
                  ("delete", "m", A, Reason.HOLDER_POD_TERMINATED)], id="pod-gone-mid-grant-gives-everything-back"),
    pytest.param(with_phase(replace(M, wait_timeout_seconds=10), Phase.PENDING, Reason.QUEUED, since=T0 - 20), [XA],
                 [XA_LOCK], [("status", "m", Phase.TIMED_OUT, Reason.WAIT_TIMED_OUT)], id="wait-timeout"),
]


@pytest.mark.parametrize(("subject", "others", "grants", "expected"), CASES)
def test_decide_claim(
    subject: Claim, others: list[Claim], grants: list[Lock], expected: list[tuple[object, ...]]
) -> None:
    # "dup" names A twice only once normalised: the codec hands the domain normalised URIs.
    if subject.name == "dup":
        subject = replace(subject, resources=(A, A))
    assert brief(decide_multi(subject, others, grants)) == expected


def test_held_status_lists_every_grant_sorted_with_its_own_token_and_no_top_level_lock() -> None:
    grants = [grant(M, B, 1001), grant(M, A, 1000)]
    status = held_status(M, grants, None)
    assert [(g.resource, g.lock_name, g.fencing_token) for g in status.grants] == [
        (A, lock_name(A), 1000), (B, lock_name(B), 1001)]
    assert status.lock_name is None and status.fencing_token is None


HELD_GRANTS = [grant(M, A, 1000), grant(M, B, 1001)]
HELD_M = told(M, HELD_GRANTS)


def test_break_of_one_resource_ends_the_claim_and_releases_the_others() -> None:
    broken = {A: LockBreak("admin@example.com", "stuck")}
    decision = decide_multi(HELD_M, [], [HELD_GRANTS[1]], broken=broken)
    assert brief(decision) == [("status", "m", Phase.REVOKED, Reason.LOCK_BROKEN),
                               ("delete", "m", B, Reason.LOCK_BROKEN)]
    message = decision.actions[0].status.message  # type: ignore[union-attr]
    assert "broken by admin@example.com: stuck" in message and B in message


def test_expiry_ends_the_whole_claim() -> None:
    decision = decide_multi(HELD_M, [], HELD_GRANTS, now=T0 + 1800)
    assert brief(decision) == [("status", "m", Phase.EXPIRED, Reason.LEASE_EXPIRED),
                               ("delete", "m", A, Reason.LEASE_EXPIRED), ("delete", "m", B, Reason.LEASE_EXPIRED)]


def test_one_renewal_renews_every_grant() -> None:
    renewing = replace(HELD_M, renew_request="r1")
    decision = decide_multi(renewing, [], HELD_GRANTS, now=T0 + 600)
    assert brief(decision) == [("renew", "m", A), ("renew", "m", B), ("status", "m", Phase.HELD, Reason.GRANTED)]
    status = decision.actions[-1].status  # type: ignore[union-attr]
    assert status.observed_renew == "r1" and status.expires_at == T0 + 600 + 1800


def test_a_held_claim_of_several_keeps_its_grants_while_its_pod_stops() -> None:
    stopping = replace(HELD_M, pod_name="p", pod=PodLiveness.STOPPING)
    decision = decide_multi(stopping, [], HELD_GRANTS, now=T0 + 1)
    assert decision.actions == ()
    # Its end (the kubelet's report, or the pod removed) gives everything back.
    ended = decide_multi(replace(stopping, pod=PodLiveness.TERMINATED), [], HELD_GRANTS, now=T0 + 2)
    assert brief(ended) == [("status", "m", Phase.REVOKED, Reason.HOLDER_POD_TERMINATED),
                            ("delete", "m", A, Reason.HOLDER_POD_TERMINATED),
                            ("delete", "m", B, Reason.HOLDER_POD_TERMINATED)]


def test_a_claim_of_several_not_yet_held_gets_nothing_more_once_its_pod_stops() -> None:
    pending = replace(M, pod_name="p", pod=PodLiveness.STOPPING,
                      status=with_phase(M, Phase.PENDING, Reason.QUEUED, since=T0).status)
    decision = decide_multi(pending, [], [grant(M, A, 1000)])
    # Refused, not revoked: its process still runs and was never told it held anything.
    assert brief(decision) == [("status", "m", Phase.REJECTED, Reason.HOLDER_POD_TERMINATED),
                               ("delete", "m", A, Reason.HOLDER_POD_TERMINATED)]
    message = decision.actions[0].status.message  # type: ignore[union-attr]
    assert message == "pod p is terminating", message


def test_held_and_quiet_sleeps_until_its_stale_deadline() -> None:
    decision = decide_multi(HELD_M, [], HELD_GRANTS, now=T0 + 1)
    assert decision.actions == () and decision.next_deadline == T0 + 900


def test_a_waiting_claim_of_several_holds_nothing_so_closes_no_cycle_through_what_it_waits_for() -> None:
    # h1 holds A and waits (with a claim of several) for B and C; h2 holds C and waits for A: a real
    # deadlock at holder level (h1 holds A through another claim). The newest wait is the victim.
    ha, ha_lock = _held_single(claim("ha", 1, "h1", resource=A), 900)
    hc, hc_lock = _held_single(claim("hc", 2, "h2", resource=C), 901)
    w2 = with_phase(claim("w2", 3, "h2", resource=A, wait=True), Phase.PENDING, Reason.QUEUED, since=T0)
    m1 = multi("m1", 4, [B, C], holder="h1", wait=True)
    decision = decide_multi(m1, [ha, hc, w2], [ha_lock, hc_lock])
    assert brief(decision) == [("status", "m1", Phase.DEADLOCKED, Reason.DEADLOCK)]
    # Without h1's other claim there is no cycle: the claim of several waits holding nothing.
    decision = decide_multi(m1, [hc, w2], [hc_lock])
    assert brief(decision) == [("status", "m1", Phase.PENDING, Reason.QUEUED)]


# ---- the per-resource decision beside claims of several resources ---------------------------


def test_per_resource_decision_never_grants_a_claim_of_several_but_queues_behind_it() -> None:
    q = with_phase(M, Phase.PENDING, Reason.QUEUED, since=T0)
    single = claim("s", 6, resource=B, wait=True)
    decision = decide(B, [q, single], [], now=T0, policy=POLICY, graph=graph_of([q, single], []))
    assert summary(decision) == [("status", "s", Phase.PENDING, Reason.QUEUED)]
    assert "reserved for the claim of m" in decision.actions[0].status.message  # type: ignore[union-attr]


def test_per_resource_decision_lets_a_compatible_request_past_a_waiting_claim_of_several() -> None:
    shared_m = multi("m", 5, [A, B], wait=True, mode=Mode.SHARED)
    q = with_phase(shared_m, Phase.PENDING, Reason.QUEUED, since=T0)
    reader = claim("s", 6, resource=B, wait=True, mode=Mode.SHARED)
    decision = decide(B, [q, reader], [], now=T0, policy=POLICY, graph=graph_of([q, reader], []))
    assert summary(decision) == [("create", "s", 1800)]


def test_per_resource_decision_leaves_the_grants_of_a_claim_of_several_alone_and_removes_them_once_gone() -> None:
    decision = decide(A, [HELD_M], [HELD_GRANTS[0]], now=T0 + 1800, policy=POLICY, graph=WaitForGraph())
    assert decision.actions == ()
    decision = decide(A, [], [HELD_GRANTS[0]], now=T0, policy=POLICY, graph=WaitForGraph())
    assert summary(decision) == [("delete", "m", Reason.RELEASED)]


# ---- random timelines against a brute-force model --------------------------------------------


@dataclass
class MultiSpace(Space):
    """`Space` with claims of several resources: decided under keys of their own, as the operator
    does, with every write checked as it is applied."""

    told_held: list[tuple[str, frozenset[str]]] = field(default_factory=list)

    def graph(self) -> WaitForGraph:
        return graph_of(self.claims.values(), [g for gs in self.grants.values() for g in gs])

    def decide(self, key: str, now: float) -> Decision:
        if key in self.claims:
            c = self.claims[key]
            if not c.active:
                return Decision()
            everyone = list(self.claims.values())
            every = [g for gs in self.grants.values() for g in gs]
            seen = views(everyone, every, self.capacity)
            seen = {r: replace(v, lock_policy=self.lock_policy) for r, v in seen.items()}
            return decide_claim(c, seen, now=now, policy=self.policy, graph=self.graph(),
                                usage={self.lock_policy.name: self.usage()})
        claims = [c for c in self.claims.values() if key in c.every_resource]
        return decide(key, claims, self.grants.get(key, []), now=now, policy=self.policy, graph=self.graph(),
                      capacity=self.capacity.get(key, 1), lock_policy=self.lock_policy, usage=self.usage())

    def apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, CreateLock) and action.claim.multi:
                self._grant(action)
                continue
            if isinstance(action, SetStatus) and action.claim.multi and action.status.phase is Phase.HELD:
                have = {g.resource for gs in self.grants.values() for g in gs if g.claim_uid == action.claim.uid}
                assert have == set(action.claim.every_resource), f"told Held with part of its set: {have}"
            if isinstance(action, CreateLock):
                self._fifo(action)
            super().apply([action])
        self._within_quotas()

    def _within_quotas(self) -> None:
        """The LockPolicy's held quotas hold after every write: a claim holds from its first grant's
        write (a claim of several counts once, however many of its grants are written)."""
        quotas = self.lock_policy.quotas
        granted = {g.claim_uid for gs in self.grants.values() for g in gs}
        held: dict[str, int] = {}
        for c in self.claims.values():
            if c.active and (c.phase is Phase.HELD or c.uid in granted):
                held[c.holder] = held.get(c.holder, 0) + 1
        if quotas.max_held_per_holder is not None:
            assert max(held.values(), default=0) <= quotas.max_held_per_holder, held
        if quotas.max_held_per_namespace is not None:
            assert sum(held.values()) <= quotas.max_held_per_namespace, held

    def _fifo(self, action: CreateLock) -> None:
        """The model's queue rule: a grant fits beside the resource's grants and beside every claim
        queued ahead of it there (earlier, holding nothing there), granted or not."""
        c, resource = action.claim, action.target
        held = self.grants.get(resource, [])
        holding = {g.claim_uid for g in held}
        ahead = [o.need for o in self.claims.values() if o.active and resource in o.every_resource
                 and o.uid not in holding and o.sequence < c.sequence]
        assert fits([*(g.need for g in held), *ahead], c.need, self.capacity.get(resource, 1)), action

    def _grant(self, action: CreateLock) -> None:
        c, resource = action.claim, action.target
        self._fifo(action)
        held = self.grants.setdefault(resource, [])
        assert all(g.claim_uid != c.uid for g in held)
        token = self._write()
        held.append(replace(grant(c, resource, token, acquired=action.acquired_at), uid=f"lock-{resource}-{token}"))

    def settle_all(self, now: float, rng: random.Random) -> None:
        keys = sorted({r for c in self.claims.values() for r in c.every_resource} | set(self.grants))
        keys += [u for u, c in self.claims.items() if c.multi]
        rng.shuffle(keys)
        todo = list(keys)
        for _ in range(2000):
            if not todo:
                return
            key = todo.pop(0)
            decision = self.decide(key, now)
            if decision.actions:
                self.apply(decision.actions)
                # Whatever changed: every key may move (the operator schedules them from the events).
                rest = [k for k in keys if k not in todo]
                rng.shuffle(rest)
                todo.extend(rest)
            todo.extend(r for r in decision.also_reconcile if r not in todo)
        raise AssertionError("did not settle")


def _check(space: MultiSpace) -> None:
    """After settling: every resource's grants are compatible and within capacity; every claim of
    several holds all or none of its set (all exactly when Held); and nothing that the queue rule
    (`grants.admit`, brute force here) would grant is left waiting."""
    for resource, grants in space.grants.items():
        assert compatible([g.need for g in grants], space.capacity.get(resource, 1)), (resource, grants)
    for c in space.claims.values():
        mine = {g.resource for gs in space.grants.values() for g in gs if g.claim_uid == c.uid}
        if c.multi:
            assert mine in (set(), set(c.every_resource)), (c.name, mine)
            assert (mine == set(c.every_resource)) == (c.phase is Phase.HELD), (c.name, c.phase, mine)
        elif c.active:
            assert bool(mine) == (c.phase is Phase.HELD), (c.name, c.phase)
    waiting = sorted((c for c in space.claims.values() if c.phase is Phase.PENDING), key=lambda c: c.sequence)
    ahead: dict[str, list[Need]] = {r: [g.need for g in gs] for r, gs in space.grants.items()}
    for c in waiting:
        grantable = all(fits(ahead.get(r, []), c.need, space.capacity.get(r, 1)) for r in c.every_resource)
        assert not grantable, f"{c.name} could be granted: {c.every_resource} beside {ahead}"
        for r in c.every_resource:
            ahead.setdefault(r, []).append(c.need)


@pytest.mark.parametrize("seed", range(60))
def test_random_timelines_with_claims_of_several_resources_match_the_model(seed: int) -> None:
    _timeline(seed, holders=0)


@pytest.mark.parametrize("seed", range(40))
def test_random_timelines_with_shared_holders_leave_no_waiter_in_a_cycle(seed: int) -> None:
    """A few holders, each with several claims (some of several resources): after settling, no
    Pending claim closes a wait-for cycle, and every Deadlocked one reports a cycle through itself."""
    space, _ = _timeline(seed, holders=3)
    graph = space.graph()
    for c in space.claims.values():
        if c.phase is Phase.PENDING:
            for r in c.every_resource:
                assert graph.find_cycle(c.holder, r, c.sequence, c.need) is None, (c.name, r)
        elif c.phase is Phase.DEADLOCKED:
            cycle = c.status.cycle  # type: ignore[union-attr]
            assert cycle is not None and cycle[0] == cycle[-1] == c.holder


def _timeline(seed: int, *, holders: int, lock_policy: LockPolicy = DEFAULT) -> tuple[MultiSpace, float]:
    """A random timeline (`holders`: how many holders share the claims; 0: one holder per claim),
    under `lock_policy` (every resource)."""
    rng = random.Random(seed)
    resources = [f"r://{i}" for i in range(rng.randint(2, 5))]
    capacity = {r: rng.choice([1, 1, 2, 3]) for r in resources}
    space = MultiSpace(capacity=capacity, lock_policy=lock_policy)
    now = T0
    for seq in range(1, rng.randint(6, 24)):
        roll = rng.random()
        if roll < 0.45 or not space.claims:
            several = rng.random() < 0.5
            picked = rng.sample(resources, rng.randint(2, len(resources))) if several else [rng.choice(resources)]
            mode = Mode.SHARED if rng.random() < 0.3 else Mode.EXCLUSIVE
            permits = 1 if mode is Mode.SHARED else rng.choice([1, 1, 2])
            holder = f"h{rng.randrange(holders)}" if holders else f"h{seq}"
            spec: dict[str, object] = {"wait": rng.random() < 0.8, "mode": mode, "permits": permits,
                                       "holder": holder}
            if len(picked) > 1:
                space.add(multi(f"c{seq}", seq, picked, **spec))
            else:
                space.add(claim(f"c{seq}", seq, resource=picked[0], **spec))  # type: ignore[arg-type]
        elif roll < 0.75:
            held = [c for c in space.claims.values() if c.phase is Phase.HELD]
            if held:
                del space.claims[rng.choice(held).uid]  # released
        elif roll < 0.85:
            now += 1801  # every lease runs out
        else:
            victim = rng.choice(resources)
            if space.grants.get(victim):
                g = rng.choice(space.grants[victim])  # an administrator breaks one grant
                space.apply([DeleteLock(g, Reason.LOCK_BROKEN)])
        # Sometimes an operator stops halfway: a few steps only, then the state is checked as is.
        if rng.random() < 0.2:
            keys = sorted({r for c in space.claims.values() for r in c.every_resource} | set(space.claims))
            for key in rng.sample(keys, min(3, len(keys))):
                d = space.decide(key, now)
                space.apply(d.actions)
            continue
        space.settle_all(now, rng)
        _check(space)
    space.settle_all(now, rng)
    _check(space)
    return space, now


def test_a_wait_behind_a_reservation_can_close_a_real_deadlock() -> None:
    # h3 holds Y and waits for r, free but promised to m (h2, queued first for r and Y), which waits
    # for Y: h3 -r-> h2 -Y-> h3. Nobody holds r, yet neither can go on: the newest wait ends.
    hy, hy_lock = _held_single(claim("hy", 1, "h3", resource=B), 900)
    m = with_phase(multi("m", 2, [A, B], holder="h2", wait=True), Phase.PENDING, Reason.QUEUED, since=T0)
    s = claim("s", 3, "h3", resource=A, wait=True)
    everyone = [hy, m, s]
    decision = decide(A, [m, s], [], now=T0, policy=POLICY, graph=graph_of(everyone, [hy_lock]))
    assert summary(decision) == [("status", "s", Phase.DEADLOCKED, Reason.DEADLOCK)]
    assert decision.actions[0].status.cycle == ("h3", A, "h2", B, "h3")  # type: ignore[union-attr]
    # The same waits, the claim of several the newest: it is the victim, found from its own decision.
    s_old = with_phase(claim("s", 1, "h3", resource=A, wait=True), Phase.PENDING, Reason.QUEUED, since=T0)
    m_new = multi("m", 4, [A, B], holder="h2", wait=True)
    hy2, hy2_lock = _held_single(claim("hy", 2, "h3", resource=B), 900)
    sa, sa_lock = _held_single(claim("sa", 0, "h9", resource=A), 800)
    decision = decide_multi(m_new, [sa, s_old, hy2], [sa_lock, hy2_lock])
    assert brief(decision) == [("status", "m", Phase.PENDING, Reason.QUEUED)]  # no cycle: h9 holds A


def test_a_waiter_told_what_it_waits_for_is_not_rewritten_at_every_handoff() -> None:
    first = decide_multi(M, [XA], [XA_LOCK])
    told_status = first.actions[0].status  # type: ignore[union-attr]
    queued = replace(M, status=told_status)
    ya, ya_lock = _held_single(claim("ya", 2, "other", resource=A), 950)  # A changed hands
    again = decide_multi(queued, [ya], [ya_lock])
    assert again.actions == () and again.next_deadline is None
    xb = _held_single(claim("xb", 3, resource=B), 960)  # now it waits for B too: told again
    both = decide_multi(queued, [ya, xb[0]], [ya_lock, xb[1]])
    assert brief(both) == [("status", "m", Phase.PENDING, Reason.QUEUED)]
    assert both.actions[0].status.message.startswith(f"waiting for {A}, {B} (all or nothing)")  # type: ignore[union-attr]


def test_a_claim_of_several_waiting_on_its_own_holder_names_the_claim_too() -> None:
    # The holder's claim of A, made with generateName, keeps its own claim of A and B out.
    mine = claim("g-held", 1, holder="user:alice/w1", resource=A)
    lock = lock_for(mine, token=900)
    subject = multi("both", 5, [A, B], holder="user:alice/w1", wait=True)
    (action,) = decide_multi(subject, [holding(mine, lock)], [lock]).actions
    assert isinstance(action, SetStatus)
    assert (action.status.phase, action.status.reason) == (Phase.DEADLOCKED, Reason.SELF_DEADLOCK)
    assert f"{A} is held by this holder's own claim g-held" in action.status.message, action.status.message


def test_a_claim_of_several_told_in_time_is_told_no_later_end_than_any_of_its_locks_shows() -> None:
    grants = [grant(M, A, 1000, acquired=T0), grant(M, B, 1001, acquired=T0 + 5)]
    (telling,) = [a for a in decide_multi(M, [], grants, now=T0 + 6).actions if isinstance(a, SetStatus)]
    assert telling.status.phase is Phase.HELD
    assert min(lock_shows(g) for g in grants) == T0 + 1800 + 30
    for sent in (T0 + 6, T0 + 20, T0 + 30):  # within the allowance (30 s) of the earliest grant
        written = told_at(telling.status, sent)
        assert written.expires_at is not None and written.expires_at <= min(lock_shows(g) for g in grants)
