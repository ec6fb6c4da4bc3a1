"""The reconciler: grants held back until the view is fresh (and nothing else with them), writes
conditional on the versions the decision saw, the writes of a grant, queue positions written once
the queue is still. (Which key runs when is the work queue's: tests/unit/test_workqueue.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NoReturn

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import ClaimStatus, CreateLock, Policy, SetStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.resource import lock_name
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import paths
from kubelock.kube.errors import Forbidden
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import (
    EXPIRED_LOCK_PATIENCE,
    POSITION_DELAY,
    REFUSED_RETRY_DELAY,
    Reconciler,
    Seen,
)
from tests.support.fakeapi import ClosedGate, FakeApi

R = "github://acme/app/issues/42"


class NoApi:
    """Any request fails the test: a held-back grant must not reach the API server."""

    def __getattr__(self, name: str) -> Any:
        async def call(*_: object, **__: object) -> NoReturn:
            raise AssertionError(f"unexpected API call: {name}")

        return call


def test_a_grant_waits_for_a_fresh_view_and_is_decided_again_on_release() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cache = Cache()
        cache.upsert_claim(
            {
                "metadata": {"name": "c1", "uid": "u1", "namespace": "a", "resourceVersion": "7"},
                "spec": {"resource": R, "holder": "agent"},
            }
        )
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"), gate=ClosedGate())
        await reconciler.reconcile(("a", R))  # would create the lock: held back instead, no request made
        assert reconciler.holding and ("a", R) in reconciler._held_back
        reconciler.queue.start()
        reconciler.release_grants()
        assert not reconciler.holding
        assert reconciler.queue.pending(("a", R))  # decided again
        await reconciler.stop()

    asyncio.run(scenario())


def test_what_a_held_back_grant_was_decided_with_goes_ahead() -> None:
    """A waiter timing out does not wait for the view a grant needs."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        cache.upsert_claim({
            "metadata": {"name": "late", "uid": "u1", "namespace": "a", "resourceVersion": "7",
                         "creationTimestamp": to_rfc3339(clock.now() - 60)},
            "spec": {"resource": R, "holder": "agent-1", "wait": True, "waitTimeoutSeconds": 30},
            "status": {"phase": "Pending", "reason": "Queued", "sequence": 7, "queuePosition": 1},
        })
        cache.upsert_claim({
            "metadata": {"name": "next", "uid": "u2", "namespace": "a", "resourceVersion": "8"},
            "spec": {"resource": R, "holder": "agent-2", "wait": True},
        })
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"), gate=ClosedGate())
        try:
            await reconciler.reconcile(("a", R))
        except AssertionError as error:
            assert "unexpected API call: replace" in str(error)  # the TimedOut status, not the create
        else:
            raise AssertionError("the waiter's timeout was held back with the grant")
        assert reconciler.holding
        await reconciler.stop()

    asyncio.run(scenario())


def test_an_uncontended_grant_makes_two_writes_the_lock_and_the_claims_held_status() -> None:
    """The floor of the grant path: the lock is created (the grant, its token its creation revision)
    and the claim is told `Held` with that token; nothing writes the token into the lock."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        api = FakeApi()
        cache = Cache()
        cache.upsert_claim(api.put(paths.claims("a", "c1"), _claim("c1")))
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        await reconciler.reconcile(("a", R))
        lock_path = paths.locks("a", lock_name(R))
        assert api.writes == [("create", paths.locks("a")), ("update", paths.claims("a", "c1", status=True))]
        lock = api.objects[lock_path]
        token = int(lock["metadata"]["resourceVersion"])
        assert lock["spec"]["fencingToken"] == 0  # not copied: its resourceVersion is the token
        status = api.objects[paths.claims("a", "c1")]["status"]
        assert (status["phase"], status["fencingToken"]) == ("Held", token)
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_renewal_records_the_token_the_holder_was_told() -> None:
    """The lock's first write after its creation records its token (admission requires it): the
    creation revision, which the holder was told."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        api = FakeApi()
        cache = Cache()
        cache.upsert_claim(api.put(paths.claims("a", "c1"), _claim("c1")))
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        await reconciler.reconcile(("a", R))
        claim_path = paths.claims("a", "c1")
        told = api.objects[claim_path]["status"]["fencingToken"]
        cache.upsert_claim(api.put(claim_path, {**api.objects[claim_path],
                                                "metadata": {**api.objects[claim_path]["metadata"],
                                                             "annotations": {"kubelock.dev/renew": "r1"}}}))
        clock.advance(60)
        api.requests.clear()
        await reconciler.reconcile(("a", R))
        lock_path = paths.locks("a", lock_name(R))
        assert api.writes == [("patch", lock_path), ("update", paths.claims("a", "c1", status=True))]
        assert api.objects[lock_path]["spec"]["fencingToken"] == told
        assert cache.locks[("a", R)].grants[0].fencing_token == told
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_create_that_finds_the_lock_taken_learns_the_holder_and_tells_nobody() -> None:
    """A 409 AlreadyExists (the other replica granted first): the lock is read, and the claim is not
    told `Held` (it is not its lock)."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        api = FakeApi()
        cache = Cache()
        cache.upsert_claim(api.put(paths.claims("a", "c1"), _claim("c1")))
        other = _held_lock()
        other["metadata"]["name"] = lock_name(R)
        api.put(paths.locks("a", lock_name(R)), other)  # the other replica's grant, not yet in this cache
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        await reconciler._create_lock("a", CreateLock(cache.claims["u1"].claim, clock.now(), 60), Seen({}, None))
        assert api.requests == [("create", paths.locks("a")), ("get", paths.locks("a", lock_name(R)))]
        assert cache.locks[("a", R)].grants[0].claim_uid == "ua"
        assert "status" not in api.objects[paths.claims("a", "c1")]
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_status_is_written_on_the_version_the_decision_saw() -> None:
    """A renewal that reaches the cache while an expiry is being applied must make the expiry's
    write fail, not be overwritten by it."""

    class Recording(NoApi):
        def __init__(self) -> None:
            self.writes: list[dict[str, Any]] = []

        async def replace(self, path: str, body: dict[str, Any]) -> NoReturn:
            self.writes.append(body)
            raise AssertionError("recorded")

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        cache.upsert_claim({
            "metadata": {"name": "c1", "uid": "u1", "namespace": "a", "resourceVersion": "7"},
            "spec": {"resource": R, "holder": "agent"},
        })
        seen = Seen({"u1": cache.claims["u1"]}, None)
        cache.upsert_claim({  # the holder's renewal arrives meanwhile
            "metadata": {"name": "c1", "uid": "u1", "namespace": "a", "resourceVersion": "9",
                         "annotations": {"kubelock.dev/renew": "r2"}},
            "spec": {"resource": R, "holder": "agent"},
        })
        client = Recording()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"))
        status = ClaimStatus(Phase.REJECTED, Reason.HELD_BY_ANOTHER, "x", sequence=7)
        with contextlib.suppress(AssertionError):
            action = SetStatus(cache.claims["u1"].claim, status)
            await reconciler._set_status("a", action, clock.now(), seen.claims["u1"])
        assert client.writes[0]["metadata"]["resourceVersion"] == "7"
        await reconciler.stop()

    asyncio.run(scenario())


class SwitchGate:
    """A gate the test opens and closes, with an epoch it can move (a stall)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.open = True

    def may_grant(self, namespace: str, sequence: int) -> bool:
        return self.open

    def wrote(self, namespace: str, version: int) -> None:
        pass


def test_the_claim_of_a_lock_created_across_a_stall_is_told_only_on_a_fresh_view() -> None:
    """The create rested on the view from before the stall: its claim is told `Held` only once
    the view is fresh again. A create that did not cross a stall is told at once, even if the view
    goes stale right after (the status write is conditional on the claim's version)."""

    async def scenario(stall: bool) -> None:
        clock = ManualClock(1_800_000_000.0)
        api = FakeApi()
        gate = SwitchGate()

        async def create_then_stale_view(path: str, body: Any, default: Any) -> Any:
            created = default()
            gate.open = False  # the view goes stale right after the create
            gate.epoch += int(stall)  # ... and the create was in flight across a stall
            return created

        api.react("create", create_then_stale_view)
        cache = Cache()
        cache.upsert_claim(api.put(paths.claims("a", "c1"), _claim("c1")))
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"), gate=gate)  # type: ignore[arg-type]
        await reconciler.reconcile(("a", R))
        status = paths.claims("a", "c1", status=True)
        if not stall:
            assert api.writes == [("create", paths.locks("a")), ("update", status)]
            return
        assert api.writes == [("create", paths.locks("a"))] and reconciler.holding
        await reconciler.reconcile(("a", R))  # still stale: nothing
        assert api.writes == [("create", paths.locks("a"))]
        gate.open = True
        await reconciler.reconcile(("a", R))
        assert api.writes == [("create", paths.locks("a")), ("update", status)]
        await reconciler.stop()

    asyncio.run(scenario(stall=False))
    asyncio.run(scenario(stall=True))


def _claim(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": "u1", "namespace": "a"}, "spec": {"resource": R, "holder": "agent"}}


def _held_lock() -> dict[str, Any]:
    return {
        "metadata": {"name": "lock-1", "uid": "l1", "namespace": "a", "resourceVersion": "20"},
        "spec": {
            "resource": R, "holder": "agent-a", "claimRef": {"name": "ca", "uid": "ua"}, "fencingToken": 20,
            "acquireTime": "2027-01-15T08:00:00Z", "renewTime": "2027-01-15T08:00:00Z", "leaseDurationSeconds": 3600,
        },
    }


def test_renumbering_waiters_waits_until_the_queue_has_been_still() -> None:
    """Each grant shifts every waiter; while grants follow each other, positions are written once
    the queue has been still for POSITION_DELAY, not once per grant."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        stamp = to_rfc3339(clock.now())
        cache = Cache()
        lock = _held_lock()
        lock["spec"]["acquireTime"] = lock["spec"]["renewTime"] = stamp
        cache.upsert_lock(lock)
        cache.upsert_claim({
            "metadata": {"name": "ca", "uid": "ua", "namespace": "a", "resourceVersion": "21"},
            "spec": {"resource": R, "holder": "agent-a"},
            "status": {"phase": "Held", "sequence": 5, "holder": "agent-a", "lockName": "lock-1", "fencingToken": 20,
                       "acquiredAt": stamp, "renewedAt": stamp, "expiresAt": to_rfc3339(clock.now() + 3600),
                       "reason": "Granted", "message": "agent-a holds github://acme/app/issues/42 (fencing token 20)"},
        })
        cache.upsert_claim({  # says position 2, but it is first in line now
            "metadata": {"name": "cb", "uid": "ub", "namespace": "a", "resourceVersion": "22"},
            "spec": {"resource": R, "holder": "agent-b", "wait": True},
            "status": {"phase": "Pending", "sequence": 6, "holder": "agent-a", "queuePosition": 2,
                       "reason": "Queued", "message": "old"},
        })
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"))
        key = ("a", R)
        reconciler._granted_at[key] = clock.now()  # the lock was just granted
        await reconciler.reconcile(key)  # the renumbering waits: no request
        assert reconciler.queue.next_deadline() == clock.now() + POSITION_DELAY
        clock.advance(POSITION_DELAY)
        try:
            await reconciler.reconcile(key)
        except AssertionError as error:
            assert "unexpected API call: replace" in str(error)  # now it is written
        else:
            raise AssertionError("the queue position was never written")

    asyncio.run(scenario())


def _expiring(name: str, uid: str, *, wait: bool = False, ttl: int = 30) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "namespace": "a"},
            "spec": {"resource": R, "holder": f"agent-{name}", "ttlSeconds": ttl, "wait": wait}}


async def _one_granted(ttl: int = 30) -> tuple[ManualClock, FakeApi, Cache, Reconciler, tuple[str, str]]:
    """A reconciler whose first run granted `c1` (a lease of `ttl` seconds) the resource R in
    namespace `a`."""
    clock = ManualClock(1_800_000_000.0)
    api = FakeApi()
    cache = Cache()
    cache.upsert_claim(api.put(paths.claims("a", "c1"), _expiring("c1", "u1", ttl=ttl)))
    reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
    key = ("a", R)
    await reconciler.reconcile(key)
    return clock, api, cache, reconciler, key


def test_an_expiry_nobody_waits_behind_writes_expired_first_and_deletes_the_lock_later() -> None:
    """When many leases end at once, each expiry's deadline work is one write (the claim's Expired
    status); the lock's deletion is queued behind the deadlines due (`schedule_after_due`)."""

    async def scenario() -> None:
        clock, api, _, reconciler, key = await _one_granted()
        clock.advance(31)
        api.requests.clear()
        scheduled: list[object] = []
        after_due: list[object] = []
        reconciler.schedule = scheduled.append  # type: ignore[method-assign]
        reconciler.queue.schedule_after_due = lambda k, latest=None: after_due.append(k)  # type: ignore[method-assign]
        await reconciler.reconcile(key)  # woken by the lease's end
        lock = paths.locks("a", lock_name(R))
        assert api.writes == [("update", paths.claims("a", "c1", status=True))]
        assert api.objects[paths.claims("a", "c1")]["status"]["phase"] == "Expired"
        assert lock in api.objects and after_due == [key] and not scheduled, "the deletion waits for the deadlines"
        await reconciler.reconcile(key)  # that run
        assert api.writes[1:] == [("delete", lock)]
        await reconciler.stop()

    asyncio.run(scenario())


def test_an_expired_locks_held_back_deletion_has_a_deadline_of_its_own() -> None:
    """The deletion held back behind the deadlines is due at the latest EXPIRED_LOCK_PATIENCE after
    the decision that ended the lease, whatever else the queue holds back or keeps due."""

    async def scenario() -> None:
        clock, _, _, reconciler, key = await _one_granted()
        clock.advance(31)
        decided_at = clock.now()
        held: list[float | None] = []
        reconciler.queue.schedule_after_due = lambda k, latest=None: held.append(latest)  # type: ignore[method-assign]
        await reconciler.reconcile(key)  # woken by the lease's end: the Expired status, then held back
        assert len(held) == 1 and held[0] is not None, "the held-back deletion has no deadline of its own"
        assert held[0] - decided_at == EXPIRED_LOCK_PATIENCE <= 30.0
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_claim_arriving_while_an_expired_locks_deletion_is_held_back_is_granted_only_after_it() -> None:
    """The lock of an expired lease stays until a write takes its grant off: a new claim's run (an
    event schedules it at once) replaces the expired grant by the new one in one conditional write of
    the lock, and tells the claim only then, with a fencing token above the expired one's."""

    async def scenario() -> None:
        clock, api, cache, reconciler, key = await _one_granted()
        first_token = api.objects[paths.claims("a", "c1")]["status"]["fencingToken"]
        clock.advance(31)
        after_due: list[object] = []
        reconciler.queue.schedule_after_due = lambda k, latest=None: after_due.append(k)  # type: ignore[method-assign]
        await reconciler.reconcile(key)  # the Expired status; the deletion held back
        lock = paths.locks("a", lock_name(R))
        assert after_due == [key] and lock in api.objects
        cache.upsert_claim(api.put(paths.claims("a", "c2"), _expiring("c2", "u2", wait=True)))
        api.requests.clear()
        await reconciler.reconcile(key)  # the new claim's event
        # The expired grant leaves the lock in the same write that grants the new claim (an update
        # conditional on the lock's version), before the claim is told.
        assert api.writes[:2] == [("patch", lock), ("update", paths.claims("a", "c2", status=True))]
        spec = api.objects[lock]["spec"]
        assert spec["claimRef"]["uid"] == "u2" and not spec.get("grants")
        status = api.objects[paths.claims("a", "c2")]["status"]
        assert status["phase"] == "Held" and status["fencingToken"] > first_token
        await reconciler.stop()

    asyncio.run(scenario())


def test_an_expiry_with_a_waiter_frees_the_resource_at_once() -> None:
    async def scenario() -> None:
        clock, api, cache, reconciler, key = await _one_granted()
        cache.upsert_claim(api.put(paths.claims("a", "c2"), _expiring("c2", "u2", wait=True)))
        await reconciler.reconcile(key)
        clock.advance(31)
        api.requests.clear()
        await reconciler.reconcile(key)
        lock = paths.locks("a", lock_name(R))
        assert api.writes[:2] == [("update", paths.claims("a", "c1", status=True)), ("delete", lock)]
        assert ("create", paths.locks("a")) in api.writes
        assert api.objects[paths.claims("a", "c2")]["status"]["phase"] == "Held"
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_new_claims_first_answer_does_not_wait_behind_the_grant_beside_it() -> None:
    """The grant of an older waiter and the first answer of a try-lock behind it are one decision;
    the answer rests on the try-lock's own version only, so it is sent while the lock's create is
    still under way (on a busy API server a write takes a second or more), not after it."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        api = FakeApi()
        cache = Cache()
        first = {"metadata": {"name": "c1", "uid": "u1", "namespace": "a"},
                 "spec": {"resource": R, "holder": "agent-1", "wait": True}}
        cache.upsert_claim(api.put(paths.claims("a", "c1"), first))
        late = {"metadata": {"name": "c2", "uid": "u2", "namespace": "a"}, "spec": {"resource": R, "holder": "agent-2"}}
        cache.upsert_claim(api.put(paths.claims("a", "c2"), late))
        seen: list[str] = []

        async def slow_create(path: str, body: Any, default: Any) -> Any:
            seen.append("create sent")
            await asyncio.sleep(0.2)
            seen.append("create done")
            return default()

        async def update(path: str, body: Any, default: Any) -> Any:
            seen.append(f"status of {path.split('/')[-2]}: {body['status']['phase']}")
            return default()

        api.react("create", slow_create)
        api.react("update", update)
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        await reconciler.reconcile(("a", R))
        assert seen[:3] == ["create sent", "status of c2: Rejected", "create done"]
        assert "status of c1: Held" in seen[3:]
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_refused_lock_create_fails_closed_tells_the_claim_and_is_tried_again_seldom() -> None:
    """A 403 on the lock's create (a used-up ResourceQuota on ResourceLocks): nothing is granted. A
    try-lock ends Rejected `LockRefused` with the API server's words; a waiter's status says
    `LockRefused` (Pending), written once with one Warning Event however often the create is refused
    again, and the key is decided again after REFUSED_RETRY_DELAY, not at the queue's 1 s."""

    sent: list[Any] = []

    async def refuse(path: str, body: Any, default: Any) -> Any:
        if path != paths.locks("a"):
            sent.append(body)  # an Event
            return body
        raise Forbidden(403, "Forbidden", 'resourcelocks.kubelock.dev "x" is forbidden: exceeded quota: locks')

    async def scenario(wait: bool) -> None:
        clock = ManualClock(1_800_000_000.0)
        api = FakeApi()
        api.react("create", refuse)
        cache = Cache()
        cache.upsert_claim(api.put(paths.claims("a", "c1"), {**_claim("c1"), "spec": {**_claim("c1")["spec"],
                                                                                      "wait": wait}}))
        events = EventRecorder(api, clock, "test")  # type: ignore[arg-type]
        events.start()
        reconciler = Reconciler(api, cache, Policy(), clock, events)  # type: ignore[arg-type]
        await reconciler.reconcile(("a", R))
        await reconciler.reconcile(("a", R))  # refused again
        await events.drain()
        await events.stop()
        status = api.objects[paths.claims("a", "c1")].get("status")
        told = [body for body in sent if body.get("reason") == Reason.LOCK_REFUSED.value]
        sent.clear()
        writes = [w for w in api.writes if "/events" not in w[1]]
        if wait:
            # Still waiting, and its status says why: written once, not at the second refusal.
            assert (status["phase"], status["reason"]) == (Phase.PENDING.value, Reason.LOCK_REFUSED.value)
            assert "exceeded quota: locks" in status["message"] and status["queuePosition"] == 1
            assert writes == [("create", paths.locks("a")), ("update", paths.claims("a", "c1", status=True)),
                              ("create", paths.locks("a"))]
            assert len(told) == 1 and "exceeded quota: locks" in (told[0].get("message") or told[0].get("note"))
            assert reconciler.queue.next_deadline() == clock.now() + REFUSED_RETRY_DELAY
        else:
            assert (status["phase"], status["reason"]) == (Phase.REJECTED.value, Reason.LOCK_REFUSED.value)
            assert "exceeded quota: locks" in status["message"]
            assert writes == [("create", paths.locks("a")), ("update", paths.claims("a", "c1", status=True))]
        assert paths.locks("a", lock_name(R)) not in api.objects
        await reconciler.stop()

    asyncio.run(scenario(wait=True))
    asyncio.run(scenario(wait=False))



def test_a_key_left_empty_keeps_no_deadline_and_no_break_record() -> None:
    """A resource locked once and released costs nothing afterwards: when its claim and lock are gone,
    the claim's expiry deadline (up to its TTL away) and the record of how its lock ended go too."""

    async def scenario() -> None:
        _, api, cache, reconciler, key = await _one_granted(ttl=3600)
        assert reconciler.queue._deadlines.scheduled(key)  # the expiry of the held claim
        lock = api.objects[paths.locks("a", lock_name(R))]
        cache.upsert_lock(lock)
        # Deleted: the claim, then its lock (the watch's DELETED of the lock before the operator's own
        # delete reached the cache, as in a flood of deletions).
        cache.delete_claim(api.objects[paths.claims("a", "c1")])
        cache.delete_lock(lock)
        assert key in cache.breaks
        await reconciler.reconcile(key)
        assert not reconciler.queue._deadlines.scheduled(key)
        assert len(reconciler.queue._deadlines) == 0
        assert key not in cache.breaks
        assert key not in reconciler._granted_at
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_key_with_a_claim_left_keeps_its_deadline() -> None:
    async def scenario() -> None:
        clock, api, cache, reconciler, key = await _one_granted(ttl=3600)
        cache.upsert_claim(api.objects[paths.claims("a", "c1")])
        cache.upsert_lock(api.objects[paths.locks("a", lock_name(R))])
        clock.advance(10)
        await reconciler.reconcile(key)  # nothing to do: the held claim's expiry stays scheduled
        assert reconciler.queue._deadlines.scheduled(key)
        await reconciler.stop()

    asyncio.run(scenario())
