"""What the decision of a claim of several resources is taken on (`MultiClaims._gather`): the claim,
taken first, and each of its locks, taken after it (from the cache, or read from the API server),
then each resource's other claims, taken last. The reads let watch events in between, so the view
mixes versions; these tests pin why no mix makes a wrong write (the comment on `_gather` gives the
whole argument):
- the other claims of a view may be newer than its lock (the shape of the false `LockBroken` fixed
  in `Reconciler._gather`), but the decision writes only its own claim and its own grants;
- its own claim may be older than its locks, and every write of the claim is conditional on that
  older version, so a give-back that began meanwhile (it writes the claim first) makes a `Held`
  write fail.
Writes are asserted through the recording fake API."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.domain.resource import lock_name
from kubelock.kube import paths
from kubelock.kube.errors import Conflict
from kubelock.operator.cache import Cache, multi_key
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.fakeapi import Body, FakeApi

T0 = 1_800_000_000.0
A, B = "git://acme/app/branch/fix-1", "github://acme/app/issues/1"  # sorted: A first
M = multi_key("a", "um")


def _multi() -> dict[str, Any]:
    return {"metadata": {"name": "m", "uid": "um", "namespace": "a"},
            "spec": {"resources": [B, A], "holder": "agent-m", "wait": True}}


def _single(name: str, resource: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"u{name}", "namespace": "a"},
            "spec": {"resource": resource, "holder": f"agent-{name}", "wait": True}}


def _reconciler(api: FakeApi, cache: Cache, clock: ManualClock) -> Reconciler:
    events = EventRecorder(api, clock, "test")  # type: ignore[arg-type]
    # B is a semaphore of two permits, A an exclusive lock.
    return Reconciler(api, cache, Policy(), clock, events, capacity=lambda _ns, r: 2 if r == B else 1)  # type: ignore[arg-type]


def _status(api: FakeApi, name: str) -> tuple[str, str]:
    status = api.objects[paths.claims("a", name)]["status"]
    return status["phase"], status["reason"]


def test_a_claim_held_of_a_grant_newer_than_the_lock_in_the_view_is_left_to_its_resource() -> None:
    """The 158fb74 shape on a claim of several resources. A restarted replica's lock watch is
    behind: its cache has B's lock with m's grant only, and not A's lock; m (Held) is in its cache.
    Deciding m, it reads A's lock from the API server (m is Held and A's grant is missing); meanwhile
    the claim watch delivers s, Held of B's second permit (granted by the other replica after the
    version of B's lock in the cache). B's view then has s Held and no grant of s. m's decision
    writes nothing (its grants are all there), and never s's status: whether s lost its grant is
    for B's own decision, which reads B's lock back."""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        other = _reconciler(api, Cache(), clock)
        other.cache.upsert_claim(api.put(paths.claims("a", "m"), _multi()))
        await other.reconcile(M)
        assert _status(api, "m") == ("Held", "Granted")
        lock_b_of_m_only = copy.deepcopy(api.objects[paths.locks("a", lock_name(B))])
        other.cache.upsert_claim(api.put(paths.claims("a", "s"), _single("s", B)))
        await other.reconcile(("a", B))
        await other.stop()
        assert _status(api, "s") == ("Held", "Granted")
        assert len(api.objects[paths.locks("a", lock_name(B))]["spec"]["grants"]) == 1  # the second grant

        cache = Cache()
        cache.upsert_lock(lock_b_of_m_only)
        cache.upsert_claim(copy.deepcopy(api.objects[paths.claims("a", "m")]))
        reconciler = _reconciler(api, cache, clock)

        async def get_while_the_claim_watch_delivers(path: str, body: Body | None, default: Any) -> Body:
            read: Body = default()
            if path == paths.locks("a", lock_name(A)):
                cache.claim_event(copy.deepcopy(api.objects[paths.claims("a", "s")]))
            return read

        api.react("get", get_while_the_claim_watch_delivers)
        api.requests.clear()
        await reconciler.reconcile(M)
        assert ("get", paths.locks("a", lock_name(A))) in api.requests  # m's missing grant, read back
        assert api.writes == []
        # s's event scheduled B: its decision reads B's lock back and leaves both grants be.
        await reconciler.reconcile(("a", B))
        await reconciler.stop()
        assert api.writes == []
        assert _status(api, "m") == ("Held", "Granted") and _status(api, "s") == ("Held", "Granted")

    asyncio.run(scenario())


def test_a_give_back_begun_while_the_locks_are_read_makes_the_held_write_fail() -> None:
    """m holds both its grants and is not told yet (its operator stopped between the last grant and
    the Held write). A replica deciding it reads both locks back from the API server before it tells
    m Held; while the second read is under way, the other replica, whose view had B taken, writes m's
    status `GivingBack` and removes both grants, and the claim watch delivers that status. The locks
    read show both grants, the claim decided on is the version from before the reads: the Held write,
    conditional on that version, fails. m is told Held only later, once it is granted both again.
    (Were the claim the Held write rests on taken after the reads, that write would succeed with
    neither grant left.)"""

    async def scenario() -> None:
        clock = ManualClock(T0)
        api = FakeApi()
        other = _reconciler(api, Cache(), clock)
        other.cache.upsert_claim(api.put(paths.claims("a", "m"), _multi()))

        async def no_held_write(path: str, body: Body | None, default: Any) -> Body:
            raise ConnectionError("the other replica stops before telling m")

        api.react("update", no_held_write)
        with pytest.raises(ConnectionError):
            await other.reconcile(M)
        await other.stop()
        locks = {r: paths.locks("a", lock_name(r)) for r in (A, B)}
        assert all(p in api.objects for p in locks.values()) and "status" not in api.objects[paths.claims("a", "m")]

        cache = Cache()
        for r in (A, B):
            cache.upsert_lock(copy.deepcopy(api.objects[locks[r]]))
        cache.upsert_claim(copy.deepcopy(api.objects[paths.claims("a", "m")]))
        reconciler = _reconciler(api, cache, clock)
        held_writes: list[tuple[bool, list[str]]] = []  # (stored, the grants missing as it was sent)
        giving_back = False

        async def update(path: str, body: Body | None, default: Any) -> Body:
            assert body is not None
            if path != paths.claims("a", "m", status=True) or body["status"].get("phase") != "Held":
                return default()
            missing = [r for r in (A, B) if locks[r] not in api.objects]
            try:
                written: Body = default()
            except Conflict:
                held_writes.append((False, missing))
                raise
            held_writes.append((True, missing))
            return written

        async def get(path: str, body: Body | None, default: Any) -> Body:
            nonlocal giving_back
            read: Body = default()
            if path == locks[B] and not giving_back:
                giving_back = True
                # The other replica gives back: m's status first (conditional on its version), then
                # the grants. Its claim watch delivers the status to this replica's cache at once.
                seen = api.objects[paths.claims("a", "m")]["metadata"]
                status = {"phase": "Pending", "reason": "GivingBack",
                          "message": f"giving back {A}, {B}: the rest of {A}, {B} was taken meanwhile"}
                cache.claim_event(await api.replace(paths.claims("a", "m", status=True), {
                    "metadata": {"uid": seen["uid"], "resourceVersion": seen["resourceVersion"]}, "status": status}))
                for r in (A, B):
                    await api.delete(locks[r])
            return read

        api.react("update", update)
        api.react("get", get)
        api.requests.clear()
        await reconciler.reconcile(M)
        await reconciler.stop()
        # The Held write on the reads failed; m was told Held once, with both grants stored.
        assert held_writes == [(False, [A, B]), (True, [])], held_writes
        assert _status(api, "m") == ("Held", "Granted")
        assert all(p in api.objects for p in locks.values())

    asyncio.run(scenario())
