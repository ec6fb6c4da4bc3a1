"""The writes of grants, through the reconciler and the grant store, against the recording fake API:
an exclusive lock is one create and nothing more; Shared and semaphore grants are conditional
updates of the resource's one lock, each with its own increasing token; a conflict is Stale."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubelock.api.constants import BREAK_ACTOR_ANNOTATION, BREAK_REASON_ANNOTATION
from kubelock.api.fencing import grant_tokens, recorded
from kubelock.domain.clock import ManualClock
from kubelock.domain.model import CreateLock, Policy
from kubelock.domain.resource import lock_name
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import codec, paths
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.grants import GrantStore, Stale, Written
from kubelock.operator.reconciler import Gate, OpenGate, Reconciler
from tests.support.fakeapi import FakeApi

R = "deploy://api-prod"
LOCK = paths.locks("a", lock_name(R))


def claim(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"u-{name}", "namespace": "a"},
        "spec": {"resource": R, "holder": f"agent-{name}", "wait": True, **spec},
    }


class Bed:
    def __init__(self, capacity: int = 1, gate: Gate | None = None) -> None:
        self.clock = ManualClock(1_800_000_000.0)
        self.api = FakeApi()
        self.cache = Cache()
        self.reconciler = Reconciler(
            self.api, self.cache, Policy(), self.clock, EventRecorder(self.api, self.clock, "test"),  # type: ignore[arg-type]
            capacity=lambda namespace, resource: capacity, gate=gate,
        )

    def add(self, name: str, **spec: Any) -> None:
        self.cache.upsert_claim(self.api.put(paths.claims("a", name), claim(name, **spec)))

    def release(self, name: str) -> None:
        body = self.api.objects.pop(paths.claims("a", name))
        self.cache.delete_claim(body)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.api.objects[paths.claims("a", name)].get("status") or {})

    def run(self, step: Callable[[], Any]) -> None:
        async def go() -> None:
            step()
            await self.reconciler.reconcile(("a", R))
            await self.reconciler.stop()

        asyncio.run(go())


def test_an_exclusive_grant_is_one_create_of_todays_lock_and_its_release_one_delete() -> None:
    bed = Bed()
    bed.run(lambda: bed.add("c1"))
    assert bed.api.writes == [("create", paths.locks("a")), ("update", paths.claims("a", "c1", status=True))]
    stored = bed.api.objects[LOCK]
    assert not {"mode", "permits", "grants", "holders"} & set(stored["spec"])  # today's object
    token = int(stored["metadata"]["resourceVersion"])
    status = bed.status("c1")
    assert (status["phase"], status["fencingToken"]) == ("Held", token)
    assert status["grants"] == [
        {"resource": R, "lockName": lock_name(R), "fencingToken": token, "mode": "Exclusive", "permits": 1}
    ]
    bed.api.requests.clear()
    bed.run(lambda: bed.release("c1"))
    assert bed.api.writes == [("delete", LOCK)]


def test_shared_holders_are_one_lock_each_grant_with_its_own_increasing_token() -> None:
    bed = Bed()

    def two() -> None:
        bed.add("s1", mode="Shared")
        bed.add("s2", mode="Shared")

    bed.run(two)
    lock_writes = [w for w in bed.api.writes if w[1].startswith(paths.locks("a"))]
    assert lock_writes == [("create", paths.locks("a")), ("patch", LOCK)]  # a create, then one conditional add
    stored = bed.api.objects[LOCK]
    assert (stored["spec"]["mode"], stored["spec"]["holders"], len(stored["spec"]["grants"])) == ("Shared", 2, 1)
    first, second = bed.status("s1"), bed.status("s2")
    assert first["phase"] == second["phase"] == "Held"
    assert first["fencingToken"] < second["fencingToken"]
    # The add recorded the first grant's token (it had 0); the second reads as the lock's version.
    assert stored["spec"]["fencingToken"] == first["fencingToken"]
    assert stored["spec"]["grants"][0]["fencingToken"] == 0
    assert second["fencingToken"] == int(stored["metadata"]["resourceVersion"])
    assert grant_tokens(stored) == {"u-s1": first["fencingToken"], "u-s2": second["fencingToken"]}


def test_an_exclusive_claim_waits_for_shared_holders_and_later_shared_claims_wait_behind_it() -> None:
    bed = Bed()

    def queue() -> None:
        bed.add("s1", mode="Shared")
        bed.add("x", mode="Exclusive")
        bed.add("s2", mode="Shared")

    bed.run(queue)
    assert [bed.status(n)["phase"] for n in ("s1", "x", "s2")] == ["Held", "Pending", "Pending"]
    bed.run(lambda: bed.release("s1"))
    assert [bed.status(n)["phase"] for n in ("x", "s2")] == ["Held", "Pending"]


def test_the_first_grant_going_moves_the_next_up_with_its_token() -> None:
    bed = Bed()

    def three() -> None:
        for name in ("s1", "s2", "s3"):
            bed.add(name, mode="Shared")

    bed.run(three)
    tokens = {n: bed.status(n)["fencingToken"] for n in ("s1", "s2", "s3")}
    assert tokens["s1"] < tokens["s2"] < tokens["s3"]
    bed.api.requests.clear()
    bed.run(lambda: bed.release("s1"))
    assert [w for w in bed.api.writes if w[1] == LOCK] == [("patch", LOCK)]  # an update, not a delete
    stored = bed.api.objects[LOCK]
    assert stored["spec"]["claimRef"]["uid"] == "u-s2" and stored["spec"]["holders"] == 2
    assert grant_tokens(stored) == {"u-s2": tokens["s2"], "u-s3": tokens["s3"]}
    bed.run(lambda: (bed.release("s2"), bed.release("s3")))
    assert LOCK not in bed.api.objects


def test_a_semaphore_grants_permits_up_to_its_capacity() -> None:
    bed = Bed(capacity=3)

    def four() -> None:
        bed.add("p2", permits=2)
        bed.add("p1", permits=1)
        bed.add("q1", permits=1)

    bed.run(four)
    assert [bed.status(n)["phase"] for n in ("p2", "p1", "q1")] == ["Held", "Held", "Pending"]
    stored = bed.api.objects[LOCK]
    assert sum(g.permits for g in codec.lock_views(stored)) == 3
    bed.run(lambda: bed.release("p2"))
    assert bed.status("q1")["phase"] == "Held"


def test_an_add_on_a_lock_changed_since_is_stale_and_writes_nothing() -> None:
    async def scenario() -> None:
        bed = Bed()
        bed.add("s1", mode="Shared")
        await bed.reconciler.reconcile(("a", R))
        seen = bed.cache.locks[("a", R)]
        bed.api.objects[LOCK]["metadata"]["resourceVersion"] = "999"  # another replica's write
        bed.add("s2", mode="Shared")
        record = bed.cache.claims["u-s2"]
        store = GrantStore(bed.api)  # type: ignore[arg-type]
        before = dict(bed.api.objects[LOCK]["spec"])
        outcome = await store.add("a", CreateLock(record.claim, bed.clock.now(), 60), record, seen.grants, seen.version)
        assert isinstance(outcome, Stale)
        assert bed.api.objects[LOCK]["spec"] == before
        removed = await store.remove("a", seen.grants[0], seen.grants, seen.version)
        assert isinstance(removed, Stale) and LOCK in bed.api.objects  # nor a delete on a stale view
        assert isinstance(await store.remove("a", seen.grants[0], seen.grants, "999"), Written)
        await bed.reconciler.stop()

    asyncio.run(scenario())


def test_an_admins_break_of_one_shared_holder_removes_its_grant_and_revokes_only_its_claim() -> None:
    bed = Bed()

    def two() -> None:
        bed.add("s1", mode="Shared")
        bed.add("s2", mode="Shared")

    bed.run(two)
    token = bed.status("s2")["fencingToken"]

    def annotate() -> None:  # what kubelock unlock --holder writes: the break record, every token recorded
        stored = bed.api.objects[LOCK]
        stored["spec"].update(recorded(stored))
        stored["metadata"]["annotations"] = {
            "kubelock.dev/broken-by": "admin", "kubelock.dev/break-reason": "stuck",
            "kubelock.dev/break-claims": "u-s1",
        }
        stored["metadata"]["resourceVersion"] = str(next(bed.api._versions))
        bed.cache.upsert_lock(stored)

    bed.run(annotate)
    stored = bed.api.objects[LOCK]
    assert not stored["metadata"].get("annotations")  # the break is carried out, its record cleared
    assert grant_tokens(stored) == {"u-s2": token}
    revoked = bed.status("s1")
    assert (revoked["phase"], revoked["reason"]) == ("Revoked", "LockBroken")
    assert "broken by admin: stuck" in revoked["message"]
    assert bed.status("s2")["phase"] == "Held"


def test_an_add_that_meets_a_lock_changed_since_reads_it_and_adds_on_it() -> None:
    """Another replica wrote the lock (a renewal) after this one's view: the add fails on the stale
    version, the lock is read again, and the grant is added on the version now current."""
    bed = Bed()
    bed.run(lambda: bed.add("s1", mode="Shared"))

    def behind_its_back() -> None:
        stored = bed.api.objects[LOCK]
        stored["spec"]["fencingToken"] = bed.status("s1")["fencingToken"]  # a renewal records it
        stored["metadata"]["resourceVersion"] = str(next(bed.api._versions))
        bed.api.requests.clear()
        bed.add("s2", mode="Shared")

    bed.run(behind_its_back)
    assert bed.status("s2")["phase"] == "Held"
    lock_requests = [r for r in bed.api.requests if r[1] == LOCK]
    assert lock_requests == [("patch", LOCK), ("get", LOCK), ("patch", LOCK)]
    assert bed.api.objects[LOCK]["spec"]["holders"] == 2


def _semaphore_of_two_and_a_waiter(bed: Bed) -> dict[str, int]:
    """p1 and p2 hold the two permits, q1 waits; their tokens."""

    def three() -> None:
        for name in ("p1", "p2", "q1"):
            bed.add(name)

    bed.run(three)
    assert [bed.status(n)["phase"] for n in ("p1", "p2", "q1")] == ["Held", "Held", "Pending"]
    bed.api.requests.clear()
    return {n: bed.status(n)["fencingToken"] for n in ("p1", "p2")}


def test_a_permit_handed_over_is_one_update_of_the_lock() -> None:
    """The release of a permit and the next waiter's grant are one conditional write of the lock (not
    an update without the leaving grant, then one adding the next), the waiter's token that write's
    revision, above every earlier one; then its Held."""
    bed = Bed(capacity=2)
    tokens = _semaphore_of_two_and_a_waiter(bed)
    bed.run(lambda: bed.release("p1"))
    assert bed.api.writes[:2] == [("patch", LOCK), ("update", paths.claims("a", "q1", status=True))]
    stored = bed.api.objects[LOCK]
    granted = bed.status("q1")
    assert granted["phase"] == "Held" and granted["fencingToken"] == int(stored["metadata"]["resourceVersion"])
    assert granted["fencingToken"] > max(tokens.values())
    assert grant_tokens(stored) == {"u-p2": tokens["p2"], "u-q1": granted["fencingToken"]}
    assert stored["spec"]["claimRef"]["uid"] == "u-p2" and stored["spec"]["holders"] == 2


def test_a_permit_handed_over_stays_one_update_while_a_new_claim_is_answered_beside_it() -> None:
    """A claim that arrived as the permit is released is answered in the same step, sent while the
    hand-over is under way (not after it and the next round), and the hand-over stays one write."""
    bed = Bed(capacity=2)
    _semaphore_of_two_and_a_waiter(bed)
    seen: list[str] = []

    async def slow_patch(path: str, body: Any, default: Callable[[], Any]) -> Any:
        seen.append("lock write sent")
        await asyncio.sleep(0.1)
        seen.append("lock write done")
        return default()

    async def update(path: str, body: Any, default: Callable[[], Any]) -> Any:
        seen.append(f"status of {path.split('/')[-2]}")
        return default()

    bed.api.react("patch", slow_patch)
    bed.api.react("update", update)

    def release_and_arrive() -> None:
        bed.release("p1")
        bed.add("r1")

    bed.run(release_and_arrive)
    assert [w for w in bed.api.writes if w[1] == LOCK] == [("patch", LOCK)]  # the release and q1's grant
    assert seen == ["lock write sent", "status of r1", "lock write done", "status of q1"]
    assert bed.status("q1")["phase"] == "Held"
    assert bed.status("r1")["phase"] == "Pending" and bed.status("r1")["holder"] in ("agent-p2", "agent-q1")


def _renewed_then_released(bed: Bed, claim: str) -> Callable[[], None]:
    """Between a decision and its write: the lock written by someone else (a renewal, which records
    every token), then `claim` released."""

    def behind_its_back() -> None:
        stored = bed.api.objects[LOCK]
        stored["spec"].update(recorded(stored))
        stored["metadata"]["resourceVersion"] = str(next(bed.api._versions))
        bed.release(claim)

    return behind_its_back


def test_a_hand_over_on_a_lock_changed_since_is_stale_and_decided_again() -> None:
    """A write of the lock by someone else (a renewal) between the decision and the hand-over: the
    hand-over fails on the version it rested on, the lock is read again, and the hand-over is decided
    and made again on the lock as it now is."""
    bed = Bed(capacity=2)
    tokens = _semaphore_of_two_and_a_waiter(bed)
    bed.run(_renewed_then_released(bed, "p1"))
    assert [r for r in bed.api.requests if r[1] == LOCK] == [("patch", LOCK), ("get", LOCK), ("patch", LOCK)]
    assert bed.status("q1")["phase"] == "Held"
    assert grant_tokens(bed.api.objects[LOCK]) == {"u-p2": tokens["p2"], "u-q1": bed.status("q1")["fencingToken"]}


class _Gate(OpenGate):
    """Says whether the view is fresh enough to grant on, as `kubelock.operator.freshness` does."""

    fresh = True

    def may_grant(self, namespace: str, sequence: int) -> bool:
        return self.fresh


def test_a_hand_over_whose_grant_waits_for_a_fresh_view_removes_the_release_alone() -> None:
    """The grant of a hand-over waits for a fresh view like any grant; the release does not."""
    gate = _Gate()
    bed = Bed(capacity=2, gate=gate)
    _semaphore_of_two_and_a_waiter(bed)
    gate.fresh = False
    bed.run(lambda: bed.release("p1"))
    assert bed.api.writes == [("patch", LOCK)]
    assert set(grant_tokens(bed.api.objects[LOCK])) == {"u-p2"}
    assert bed.status("q1")["phase"] == "Pending" and bed.reconciler.holding


def _two_exclusive(bed: Bed, *names: str) -> int:
    """c1 holds the lock, then every one of `names` waits for it; c1's token."""

    def queue() -> None:
        bed.add("c1")
        for name in names:
            bed.add(name)

    bed.run(queue)
    bed.clock.advance(5)
    bed.api.requests.clear()
    return int(bed.status("c1")["fencingToken"])


def test_an_exclusive_handoff_is_one_update_of_the_lock_to_the_next_holder() -> None:
    """The release of an exclusive lock and the next waiter's grant are one conditional write of the
    same lock (not its deletion, then a create): the new holder, its lease, and its token that write's
    revision, above the one before; then its Held."""
    bed = Bed()
    first = _two_exclusive(bed, "c2")
    uid = bed.api.objects[LOCK]["metadata"]["uid"]
    bed.run(lambda: bed.release("c1"))
    assert bed.api.writes[:2] == [("patch", LOCK), ("update", paths.claims("a", "c2", status=True))]
    assert not [w for w in bed.api.writes if w[0] in ("create", "delete")]
    stored = bed.api.objects[LOCK]
    granted = bed.status("c2")
    assert stored["metadata"]["uid"] == uid  # the same object
    assert granted["phase"] == "Held" and granted["fencingToken"] == int(stored["metadata"]["resourceVersion"])
    assert granted["fencingToken"] > first
    assert grant_tokens(stored) == {"u-c2": granted["fencingToken"]}
    spec = stored["spec"]
    assert (spec["holder"], spec["claimRef"], spec["fencingToken"]) == ("agent-c2", {"name": "c2", "uid": "u-c2"}, 0)
    now = to_rfc3339(bed.clock.now())
    assert spec["acquireTime"] == spec["renewTime"] == now and not spec.get("grants")
    lock = bed.cache.locks[("a", R)]
    assert [g.claim_uid for g in lock.grants] == ["u-c2"] and lock.uid == uid


def test_a_handoff_with_more_waiters_grants_the_first_in_the_one_update() -> None:
    bed = Bed()
    first = _two_exclusive(bed, "c2", "c3")
    bed.run(lambda: bed.release("c1"))
    assert [w for w in bed.api.writes if w[1] == LOCK] == [("patch", LOCK)]
    assert [bed.status(n)["phase"] for n in ("c2", "c3")] == ["Held", "Pending"]
    second = bed.status("c2")["fencingToken"]
    assert second > first
    bed.api.requests.clear()
    bed.run(lambda: bed.release("c2"))
    assert [w for w in bed.api.writes if w[1] == LOCK] == [("patch", LOCK)]
    assert bed.status("c3")["fencingToken"] > second
    bed.api.requests.clear()
    bed.run(lambda: bed.release("c3"))
    assert bed.api.writes == [("delete", LOCK)]  # nobody waits: the last release deletes the lock


def test_an_exclusive_handoff_on_a_lock_changed_since_is_stale_and_decided_again() -> None:
    """A renewal between the decision and the handoff: the handoff fails on the version it rested on
    (writing nothing), the lock is read again, and the handoff is made on the lock as it now is."""
    bed = Bed()
    first = _two_exclusive(bed, "c2")
    bed.run(_renewed_then_released(bed, "c1"))
    assert [r for r in bed.api.requests if r[1] == LOCK] == [("patch", LOCK), ("get", LOCK), ("patch", LOCK)]
    granted = bed.status("c2")
    assert granted["phase"] == "Held" and granted["fencingToken"] > first
    assert grant_tokens(bed.api.objects[LOCK]) == {"u-c2": granted["fencingToken"]}


def test_an_exclusive_handoff_whose_grant_waits_for_a_fresh_view_deletes_the_lock_alone() -> None:
    gate = _Gate()
    bed = Bed(gate=gate)
    _two_exclusive(bed, "c2")
    gate.fresh = False
    bed.run(lambda: bed.release("c1"))
    assert bed.api.writes == [("delete", LOCK)]
    assert bed.status("c2")["phase"] == "Pending" and bed.reconciler.holding


def test_a_handoff_drops_the_break_record_of_the_holder_that_left() -> None:
    """An admin annotated the lock to break it, and its holder released first: the lock handed to the
    next holder carries no record of a break of the one before."""
    bed = Bed()
    _two_exclusive(bed, "c2")

    def annotated_then_released() -> None:
        stored = bed.api.objects[LOCK]
        stored["metadata"]["annotations"] = {
            BREAK_ACTOR_ANNOTATION: "admin", BREAK_REASON_ANNOTATION: "stuck", "keep": "me"
        }
        bed.cache.upsert_lock(stored)
        bed.release("c1")

    bed.run(annotated_then_released)
    assert bed.status("c2")["phase"] == "Held"
    assert bed.api.objects[LOCK]["metadata"]["annotations"] == {"keep": "me"}


def test_the_last_permit_handed_over_is_one_update_of_the_lock() -> None:
    """A semaphore's only grant given back to a waiter for more permits: one update, as for a mutex."""
    bed = Bed(capacity=2)

    def two() -> None:
        bed.add("p1")
        bed.add("q2", permits=2)

    bed.run(two)
    first = bed.status("p1")["fencingToken"]
    bed.api.requests.clear()
    bed.run(lambda: bed.release("p1"))
    assert bed.api.writes[:2] == [("patch", LOCK), ("update", paths.claims("a", "q2", status=True))]
    granted = bed.status("q2")
    assert granted["phase"] == "Held" and granted["fencingToken"] > first
    assert [(g.claim_uid, g.permits) for g in codec.lock_views(bed.api.objects[LOCK])] == [("u-q2", 2)]


def test_a_release_that_lets_two_in_hands_over_to_the_first_and_adds_the_second_in_a_write_of_its_own() -> None:
    """A grant's token is the revision of the write that adds it: two grants in one write would
    share a token. So the release and the first grant are one write, the second grant another."""
    bed = Bed(capacity=3)

    def four() -> None:
        bed.add("p2", permits=2)
        bed.add("p1")
        bed.add("q1")
        bed.add("q2")

    bed.run(four)
    assert [bed.status(n)["phase"] for n in ("p2", "p1", "q1", "q2")] == ["Held", "Held", "Pending", "Pending"]
    earlier = max(bed.status(n)["fencingToken"] for n in ("p2", "p1"))
    bed.api.requests.clear()
    bed.run(lambda: bed.release("p2"))
    assert [w for w in bed.api.writes if w[1] == LOCK] == [("patch", LOCK), ("patch", LOCK)]
    q1, q2 = bed.status("q1"), bed.status("q2")
    assert q1["phase"] == q2["phase"] == "Held"
    assert earlier < q1["fencingToken"] < q2["fencingToken"]
    assert grant_tokens(bed.api.objects[LOCK])["u-q2"] == q2["fencingToken"]
