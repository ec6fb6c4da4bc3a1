"""The reconcile of a claim of several resources, through a recording fake API: the writes of an
all-or-nothing grant in sorted order, Held written last, and the give-back when the rest was taken
meanwhile (its status written before any grant is removed)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.domain.resource import lock_name
from kubelock.kube import paths
from kubelock.operator.cache import Cache, multi_key
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import Body, FakeApi

A, B = "git://acme/app/branch/fix-1", "github://acme/app/issues/1"  # sorted: A first


def _multi(name: str = "m", uid: str = "um") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "namespace": "a"},
            "spec": {"resources": [B, A], "holder": "agent", "wait": True}}


def _setup(api: FakeApi) -> tuple[Cache, Reconciler]:
    clock = ManualClock(1_800_000_000.0)
    cache = Cache()
    cache.upsert_claim(api.put(paths.claims("a", "m"), _multi()))
    reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
    return cache, reconciler


def test_grants_are_written_in_sorted_order_and_held_last_with_one_token_each() -> None:
    async def scenario() -> None:
        api = FakeApi()
        _, reconciler = _setup(api)
        await reconciler.reconcile(multi_key("a", "um"))
        assert api.writes == [
            ("create", paths.locks("a")), ("create", paths.locks("a")),
            ("update", paths.claims("a", "m", status=True)),
        ]
        created = [api.objects[paths.locks("a", lock_name(r))] for r in (A, B)]
        assert [lk["spec"]["resource"] for lk in created] == [A, B]
        status = api.objects[paths.claims("a", "m")]["status"]
        assert status["phase"] == "Held" and status.get("fencingToken") is None
        assert status["grants"] == [
            {"resource": r, "lockName": lock_name(r), "fencingToken": int(lk["metadata"]["resourceVersion"]),
             "mode": "Exclusive", "permits": 1}
            for r, lk in zip((A, B), created, strict=True)
        ]
        # Held rests on a fresh read of every lock, made after the last grant was written.
        last_create = max(i for i, (verb, _) in enumerate(api.requests) if verb == "create")
        reads = {path for verb, path in api.requests[last_create:] if verb == "get"}
        assert reads == {paths.locks("a", lock_name(r)) for r in (A, B)}
        await reconciler.stop()

    asyncio.run(scenario())


def test_the_rest_taken_meanwhile_gives_back_what_it_holds_after_writing_its_status() -> None:
    async def scenario() -> None:
        api = FakeApi()
        cache, reconciler = _setup(api)
        other = api.put(paths.claims("a", "x"), {"metadata": {"name": "x", "uid": "ux", "namespace": "a"},
                                                 "spec": {"resource": B, "holder": "other"}})

        async def create(path: str, body: Body | None, default: Any) -> Body:
            assert body is not None
            if body["spec"]["resource"] == B and paths.locks("a", lock_name(B)) not in api.objects:
                # Another replica grants B to another claim just before this create.
                api.put(paths.locks("a", lock_name(B)), {
                    "metadata": {"name": lock_name(B), "namespace": "a"},
                    "spec": {"resource": B, "holder": "other", "claimRef": {"name": "x", "uid": "ux"},
                             "fencingToken": 0, "acquireTime": "2027-01-15T08:00:00Z",
                             "renewTime": "2027-01-15T08:00:00Z", "leaseDurationSeconds": 3600},
                })
                cache.upsert_claim(other)
            result: Body = default()
            return result

        api.react("create", create)
        await reconciler.reconcile(multi_key("a", "um"))
        writes = [w for w in api.writes if w[1] != paths.claims("a", "x", status=True)]
        claim_status = ("update", paths.claims("a", "m", status=True))
        lock_a = ("delete", paths.locks("a", lock_name(A)))
        assert writes[:2] == [("create", paths.locks("a")), ("create", paths.locks("a"))]
        assert lock_a in writes and claim_status in writes[:writes.index(lock_a)], writes
        assert paths.locks("a", lock_name(A)) not in api.objects  # given back
        status = api.objects[paths.claims("a", "m")]["status"]
        assert (status["phase"], status["reason"]) == ("Pending", "Queued") and B in status["message"], status
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_waiter_naming_a_deadlock_victims_resource_wakes_it_once_and_never_itself() -> None:
    """h2's claim of several resources waits for A (held by h1) and D (free, promised to it); h1 waits
    behind it for D: h2 -A-> h1 -D-> h2, whose victim is h1's newer wait on D. The claim of several
    resources wakes D (so D's decision ends the victim), not itself, and only once."""

    async def scenario() -> None:
        d = "deploy://d"
        api = FakeApi()
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        cache.upsert_lock(api.put(paths.locks("a", lock_name(A)), {
            "metadata": {"name": lock_name(A), "namespace": "a"},
            "spec": {"resource": A, "holder": "h1", "claimRef": {"name": "ha", "uid": "uha"}, "fencingToken": 0,
                     "acquireTime": "2027-01-15T08:00:00Z", "renewTime": "2027-01-15T08:00:00Z",
                     "leaseDurationSeconds": 3600},
        }))
        waiting = {"phase": "Pending", "reason": "Queued", "sequence": 5, "queuePosition": 1,
                   "message": f"waiting for {A} (all or nothing): {A} held by h1; position 1 in the queue of {A}",
                   "waitingSince": "2027-01-15T08:00:00Z"}
        cache.upsert_claim(api.put(paths.claims("a", "m"), {
            "metadata": {"name": "m", "uid": "um", "namespace": "a"},
            "spec": {"resources": [A, d], "holder": "h2", "wait": True}, "status": waiting}))
        cache.upsert_claim(api.put(paths.claims("a", "v"), {
            "metadata": {"name": "v", "uid": "uv", "namespace": "a"},
            "spec": {"resource": d, "holder": "h1", "wait": True},
            "status": {**waiting, "sequence": 9, "message": "waiting"}}))
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        reconciler.queue.start()
        key = multi_key("a", "um")
        await reconciler.multi.reconcile(key)
        assert reconciler.queue.pending(("a", d)) and not reconciler.queue.pending(key)
        await reconciler.queue.stop()
        reconciler.queue.start()
        await reconciler.multi.reconcile(key)  # nothing new: D is not woken again
        assert not reconciler.queue.pending(("a", d)) and not reconciler.queue.pending(key)
        assert api.writes == []
        await reconciler.stop()

    asyncio.run(scenario())


# ---- waking the other claims of several resources ----------------------------------------------
# A claim of several resources that waits is decided again only when something wakes its key. What a
# claim of several resources itself writes (an expiry giving back its grants, a timeout, its release)
# frees the resources for the others queued on them; nothing else need follow (the lock events of
# the operator's own deletions are no news to its cache), so that reconcile must wake them itself.


def _several(name: str, resources: list[str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": "u" + name, "namespace": "a"},
            "spec": {"resources": resources, "holder": name, "wait": True, **spec}}


async def _drain(reconciler: Reconciler) -> None:
    """Let the work queue run until no key is left to reconcile (the fake API answers at once)."""
    for _ in range(10_000):
        await asyncio.sleep(0)
        if reconciler.queue.busy == 0 and not reconciler.queue.waiting:
            return
    raise AssertionError("the work queue did not drain")


def _phase(api: FakeApi, name: str) -> str | None:
    phase: str | None = (api.objects[paths.claims("a", name)].get("status") or {}).get("phase")
    return phase


def test_a_waiter_of_several_is_granted_when_the_claim_of_several_ahead_expires() -> None:
    async def scenario() -> None:
        api = FakeApi()
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        cache.upsert_claim(api.put(paths.claims("a", "m1"), _several("m1", [A, B], ttlSeconds=3)))
        cache.upsert_claim(api.put(paths.claims("a", "m2"), _several("m2", [A, B], waitTimeoutSeconds=60)))
        reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
        reconciler.start()
        await _drain(reconciler)
        assert (_phase(api, "m1"), _phase(api, "m2")) == ("Held", "Pending")
        clock.advance(4)
        reconciler.queue.schedule(multi_key("a", "um1"))  # its lease's deadline
        await _drain(reconciler)
        assert _phase(api, "m1") == "Expired"
        assert _phase(api, "m2") == "Held"  # not left waiting until its own timeout
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_waiter_of_several_moves_up_when_the_claim_of_several_ahead_of_it_times_out_or_goes() -> None:
    """x holds A; m1 {A, B} waits for it, ahead of m2 {B, C} on B. m1 giving up (its wait timing out,
    or its holder deleting it) leaves B to m2 at once."""
    for ending in ("timeout", "delete"):

        async def scenario(ending: str = ending) -> None:
            c = "deploy://c"
            api = FakeApi()
            clock = ManualClock(1_800_000_000.0)
            cache = Cache()
            cache.upsert_claim(api.put(paths.claims("a", "x"), {
                "metadata": {"name": "x", "uid": "ux", "namespace": "a"}, "spec": {"resource": A, "holder": "x"}}))
            cache.upsert_claim(api.put(paths.claims("a", "m1"), _several("m1", [A, B], waitTimeoutSeconds=5)))
            cache.upsert_claim(api.put(paths.claims("a", "m2"), _several("m2", [B, c])))
            reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
            reconciler.start()
            await _drain(reconciler)
            assert [_phase(api, n) for n in ("x", "m1", "m2")] == ["Held", "Pending", "Pending"]
            if ending == "timeout":
                clock.advance(6)
                reconciler.queue.schedule(multi_key("a", "um1"))  # its wait's deadline
            else:
                # The claim's DELETED event, as the runtime takes it in.
                reconciler.schedule(cache.delete_claim(api.objects.pop(paths.claims("a", "m1"))))
            await _drain(reconciler)
            assert ending == "delete" or _phase(api, "m1") == "TimedOut"
            assert _phase(api, "m2") == "Held", ending
            await reconciler.stop()

        asyncio.run(scenario())


def test_a_deleted_claim_of_several_leaves_no_deadline_behind() -> None:
    """A held claim of several resources has its lease's end as a deadline; once the claim is deleted
    its key keeps nothing in the queue (a flood of them would otherwise be kept until every lease's
    end came)."""

    async def scenario() -> None:
        api = FakeApi()
        cache, reconciler = _setup(api)
        reconciler.start()
        key = multi_key("a", "um")
        reconciler.schedule(key)
        await _drain(reconciler)
        assert _phase(api, "m") == "Held"
        assert reconciler.queue.next_deadline() is not None  # the lease's end
        reconciler.schedule(cache.delete_claim(api.objects.pop(paths.claims("a", "m"))))
        await _drain(reconciler)
        assert reconciler.queue.next_deadline() is None
        await reconciler.stop()

    asyncio.run(scenario())
