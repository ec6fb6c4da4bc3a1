"""The operator's cache: late news never revives a deleted object, and a resync prunes only what its
LISTs prove gone."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from kubelock.domain.quotas import Count
from kubelock.operator.cache import Cache

R = "github://acme/app/issues/42"


def claim(uid: str, rv: int, namespace: str = "a", resource: str = R) -> dict[str, Any]:
    return {
        "metadata": {"name": f"c-{uid}", "uid": uid, "namespace": namespace, "resourceVersion": str(rv)},
        "spec": {"resource": resource, "holder": f"agent-{uid}"},
    }


def lock(uid: str, rv: int, namespace: str = "a", claim_uid: str = "c1") -> dict[str, Any]:
    return {
        "metadata": {"name": "lock-x", "uid": uid, "namespace": namespace, "resourceVersion": str(rv)},
        "spec": {
            "resource": R, "holder": "agent-c1", "claimRef": {"name": f"c-{claim_uid}", "uid": claim_uid},
            "fencingToken": rv, "leaseDurationSeconds": 60,
        },
    }


def everywhere(_: str) -> bool:
    return True


def test_a_deleted_locks_late_events_do_not_bring_it_back() -> None:
    cache = Cache()
    assert cache.upsert_lock(lock("l1", 10)) == ("a", R)
    cache.forget_lock(("a", R), "l1")  # the operator deleted it
    assert cache.upsert_lock(lock("l1", 11)) is None  # the watch's MODIFIED (token) arrives afterwards
    assert ("a", R) not in cache.locks
    assert cache.upsert_lock(lock("l2", 20)) == ("a", R)  # the next lock of the resource is a new uid
    assert cache.locks[("a", R)].grants[0].uid == "l2"


def test_an_unchanged_lock_asks_for_no_reconcile() -> None:
    cache = Cache()
    cache.upsert_lock(lock("l1", 10))
    assert cache.upsert_lock(lock("l1", 10)) is None
    assert cache.upsert_lock(lock("l1", 12)) == ("a", R)


def test_a_write_response_after_the_claims_deletion_does_not_revive_it() -> None:
    cache = Cache()
    cache.upsert_claim(claim("c1", 5))
    cache.delete_claim(claim("c1", 7))
    assert cache.upsert_claim(claim("c1", 6)) is None  # e.g. the response to a status write
    assert cache.claims_for(("a", R)) == []
    assert cache.was_deleted("c1")


def test_a_resync_prunes_what_the_list_no_longer_has() -> None:
    cache = Cache()
    for uid, rv in (("c1", 5), ("c2", 6), ("c3", 50)):
        cache.upsert_claim(claim(uid, rv))
    listed: set[str] = set()
    cache.absorb_claims([claim("c1", 5)], listed, everywhere)
    assert cache.prune_claims(listed, list_version=40) == {("a", R)}
    # c2 (older than the LIST and not in it) is gone; c3 is newer than the LIST, so it stays
    assert sorted(r.claim.uid for r in cache.claims_for(("a", R))) == ["c1", "c3"]


def test_a_resync_over_several_namespaces_prunes_nothing_listed_in_another() -> None:
    cache = Cache()
    cache.upsert_claim(claim("c1", 5, namespace="a"))
    cache.upsert_claim(claim("c2", 6, namespace="b"))
    listed: set[str] = set()
    cache.absorb_claims([claim("c1", 5, namespace="a")], listed, everywhere)  # page of namespace a
    cache.absorb_claims([claim("c2", 6, namespace="b")], listed, everywhere)  # page of namespace b
    assert cache.prune_claims(listed, list_version=40) == set()
    assert len(cache.claims) == 2


def test_a_resync_forgets_a_lock_deleted_while_the_watch_was_away() -> None:
    cache = Cache()
    cache.upsert_lock(lock("l1", 10))
    listed: set[str] = set()
    assert cache.absorb_locks([], listed, everywhere) == set()
    assert cache.prune_locks(listed, list_version=30) == {("a", R)}
    assert cache.locks == {}
    assert cache.upsert_lock(lock("l1", 10)) is None  # and a stale copy of it is not taken back


def test_only_keys_with_unanswered_or_queued_claims_await_a_decision() -> None:
    cache = Cache()
    held = claim("c1", 5)
    held["status"] = {"phase": "Held", "sequence": 5}
    cache.upsert_claim(held)
    assert not cache.awaits_decision(("a", R))
    cache.upsert_claim(claim("c2", 6, resource="github://acme/app/issues/43"))
    assert cache.awaits_decision(("a", "github://acme/app/issues/43"))
    queued = claim("c3", 7, resource="github://acme/app/issues/44")
    queued["spec"]["wait"] = True
    queued["status"] = {"phase": "Pending", "sequence": 7}
    cache.upsert_claim(queued)
    several = claim("c4", 8, namespace="b")
    several["spec"]["resources"] = ["github://acme/app/issues/45", "github://acme/app/issues/46"]
    cache.upsert_claim(several)
    cache.upsert_lock(lock("l1", 9))
    every = cache.keys()  # a method of the cache, not of a dict
    awaiting = {key for key in every if cache.awaits_decision(key)}
    assert cache.awaiting_keys() == awaiting == {
        ("a", "github://acme/app/issues/43"), ("a", "github://acme/app/issues/44"),
        ("b", "github://acme/app/issues/45"), ("b", "github://acme/app/issues/46"),
    }


def test_a_terminal_claim_leaves_the_operators_memory() -> None:
    """Holders leave finished claims in the API (the SDK replaces them on the next attempt): kept in
    memory they would grow with every holder and resource, and slow every decision on the resource."""
    cache = Cache()
    cache.upsert_claim(claim("c1", 5))
    rejected = claim("c1", 6)
    rejected["status"] = {"phase": "Rejected", "reason": "HeldByAnotherHolder", "sequence": 5}
    assert cache.upsert_claim(rejected) == ("a", R)  # the resource is decided again
    assert "c1" not in cache.claims and cache.claims_for(("a", R)) == []
    assert cache.upsert_claim(claim("c1", 5)) is None  # late news of it changes nothing
    assert cache.upsert_claim(rejected) is None


def test_a_terminal_claim_is_remembered_only_for_its_removal() -> None:
    """ttlSecondsAfterFinished removes terminal claims: the cache keeps what that needs (name, uid,
    when it finished), and forgets it when the claim is deleted."""
    cache = Cache()
    rejected = claim("c1", 6)
    rejected["status"] = {"phase": "Rejected", "reason": "HeldByAnotherHolder", "finishedAt": "2026-01-01T00:00:00Z"}
    cache.upsert_claim(rejected)
    [finished] = cache.finished_for(("a", R))
    assert (finished.name, finished.uid, finished.phase.value) == ("c-c1", "c1", "Rejected")
    assert finished.finished_at == 1767225600.0
    # Its key is decided again (and forgets its removal deadline: nothing is left there).
    assert cache.delete_claim(rejected) == ("a", R)
    assert cache.finished_for(("a", R)) == []
    assert cache.delete_claim(rejected) is None  # told twice: nothing to decide


def test_a_terminal_claims_deletion_without_its_spec_still_forgets_it() -> None:
    cache = Cache()
    expired = claim("c2", 7)
    expired["status"] = {"phase": "Expired", "reason": "LeaseExpired"}
    cache.upsert_claim(expired)
    assert len(cache.finished_for(("a", R))) == 1
    assert cache.delete_claim({"metadata": {"uid": "c2"}}) == ("a", R)
    assert cache.finished_for(("a", R)) == []


def _expired_with_lock_delay(*resources: str) -> dict[str, Any]:
    """A claim of several resources (uid "m", namespace "a") that expired and left a 10 s lock-delay."""
    return {
        "metadata": {"name": "c-m", "uid": "m", "namespace": "a", "resourceVersion": "7"},
        "spec": {"resources": list(resources), "holder": "agent-m"},
        "status": {"phase": "Expired", "reason": "LeaseExpired", "finishedAt": "2026-01-01T00:00:00Z",
                   "availableAt": "2026-01-01T00:00:10Z"},
    }


def test_a_claim_of_several_resources_that_left_a_lock_delay_is_remembered_under_each() -> None:
    """Each of its resources rests on its record; deleting the claim forgets it under all of them."""
    a, b = "r://a", "r://b"
    expired = _expired_with_lock_delay(b, a)
    cache = Cache()
    cache.upsert_claim(expired)
    for key in (("a", a), ("a", b)):
        [record] = cache.finished_for(key)
        assert (record.uid, record.resource, record.available_at) == ("m", b, 1767225610.0)
    cache.forget_finished(("a", b), "m")  # the operator removed it after ttlSecondsAfterFinished
    assert cache.finished_for(("a", a)) == [] and cache.finished_for(("a", b)) == []
    cache.upsert_claim({**expired, "metadata": {**expired["metadata"], "uid": "m2"}})
    cache.delete_claim({**expired, "metadata": {**expired["metadata"], "uid": "m2"}})  # its holder deleted it
    assert cache.finished_for(("a", a)) == [] and cache.finished_for(("a", b)) == []


def test_deleting_a_claim_of_several_resources_that_left_a_lock_delay_decides_each_resource_again() -> None:
    """Its deletion ends the rest of every resource: the key scheduled is the claim's own, whose
    reconcile (the claim gone) decides again each of its resources, not only the first."""
    a, b = "r://a", "r://b"
    expired = _expired_with_lock_delay(b, a)
    cache = Cache()
    key = cache.upsert_claim(expired)
    assert key is not None and set(cache.resource_keys_of("m")) == {("a", a), ("a", b)}  # its first reconcile
    assert set(cache.resource_keys_of("m")) == set()
    deleted = cache.delete_claim(expired)
    assert deleted == key
    assert set(cache.resource_keys_of("m")) == {("a", a), ("a", b)}
    assert cache.resource_keys_of("m") == ()  # forgotten once its reconcile took them


def test_a_claim_of_several_resources_without_a_lock_delay_is_remembered_once() -> None:
    rejected = {
        "metadata": {"name": "c-m", "uid": "m", "namespace": "a", "resourceVersion": "7"},
        "spec": {"resources": ["r://b", "r://a"], "holder": "agent-m"},
        "status": {"phase": "Rejected", "reason": "HeldByAnotherHolder", "finishedAt": "2026-01-01T00:00:00Z"},
    }
    cache = Cache()
    cache.upsert_claim(rejected)
    assert [r.uid for r in cache.finished_for(("a", "r://b"))] == ["m"] and cache.finished_for(("a", "r://a")) == []


def test_deleting_a_refused_claim_of_several_resources_finds_it_under_its_first_without_a_walk() -> None:
    """It has no `spec.resource`: its record is looked up under the first of `spec.resources`, where it
    is kept, not by a walk of every key kept (one walk per deletion made a burst of N such deletions
    cost N x N)."""

    class NoWalk(defaultdict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def]
            raise AssertionError("every key walked")

    rejected = {
        "metadata": {"name": "c-m", "uid": "m", "namespace": "a", "resourceVersion": "7"},
        "spec": {"resources": ["r://b", "r://a"], "holder": "agent-m"},
        "status": {"phase": "Rejected", "reason": "HeldByAnotherHolder", "finishedAt": "2026-01-01T00:00:00Z"},
    }
    cache = Cache()
    cache.upsert_claim(rejected)
    cache._finished = NoWalk(dict, cache._finished)
    assert cache.delete_claim(rejected) == ("a", "r://b")  # the resource it was kept under
    assert cache.finished_for(("a", "r://b")) == [] and cache.was_deleted("m")


def test_a_quota_reservation_of_a_refused_claim_outlives_the_claim_if_it_was_held() -> None:
    """A claim one replica refused may have been reserved by another whose view still has it waiting,
    and whose lock create (which cannot be conditional on the claim's status) may still come: its
    held reservation keeps counting to its bound. A waiting one does not (a Pending write cannot
    follow the refusal), nor does any reservation of a claim that ended otherwise, or was deleted."""
    held, waiting = Count.HELD, Count.WAITING
    cache = Cache()
    cache.upsert_claim(claim("waiting", 5))
    assert not cache.reservation_ended("waiting", held) and not cache.reservation_ended("waiting", waiting)
    for uid, phase in (("refused", "Rejected"), ("expired", "Expired"), ("timed-out", "TimedOut")):
        ended = claim(uid, 6)
        ended["status"] = {"phase": phase, "reason": "Other", "sequence": 6}
        cache.upsert_claim(ended)
    assert not cache.reservation_ended("refused", held) and cache.reservation_ended("refused", waiting)
    assert all(cache.reservation_ended(uid, c) for uid in ("expired", "timed-out") for c in (held, waiting))
    cache.delete_claim(claim("refused", 7))
    cache.delete_claim(claim("released", 8))
    assert not cache.reservation_ended("refused", held)  # still: the other replica's grant may be in flight
    assert cache.reservation_ended("refused", waiting)
    assert cache.reservation_ended("released", held) and cache.reservation_ended("released", waiting)


def held(name: str, uid: str, resource: str, holder: str, claim_uid: str, rv: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": uid, "namespace": "a", "resourceVersion": str(rv)},
        "spec": {
            "resource": resource, "holder": holder, "claimRef": {"name": f"c-{claim_uid}", "uid": claim_uid},
            "fencingToken": rv, "leaseDurationSeconds": 60,
        },
    }


def waiter(uid: str, rv: int, resource: str, holder: str) -> dict[str, Any]:
    body = claim(uid, rv, resource=resource)
    body["spec"] |= {"holder": holder, "wait": True}
    return body


def test_a_deleted_claims_grant_no_longer_closes_a_cycle_in_the_wait_for_graph() -> None:
    """Two agents each release what they hold and queue for what the other held, before either
    lock's release is written: while both grants counted, the graph had a cycle that was none."""
    r1, r2 = "deploy://one", "deploy://two"
    cache = Cache()
    for uid, resource, holder, rv in (("a1", r1, "agent-a", 1), ("b1", r2, "agent-b", 2)):
        body = claim(uid, rv, resource=resource)
        body["spec"]["holder"] = holder
        cache.upsert_claim(body)
        cache.upsert_lock(held(f"lock-{uid}", f"l-{uid}", resource, holder, uid, rv))
    cache.upsert_claim(waiter("a2", 3, r2, "agent-a"))
    cache.upsert_claim(waiter("b2", 4, r1, "agent-b"))
    graph = cache.graphs["a"]
    assert graph.find_cycle("agent-b", r1, 4) is not None  # both still hold: a real deadlock
    cache.delete_claim(claim("a1", 5, resource=r1))  # released; the lock's deletion is not written yet
    assert graph.holders_of(r1) == frozenset()
    assert graph.find_cycle("agent-b", r1, 4) is None
    assert graph.find_cycle("agent-a", r2, 3) is None
    assert graph.holders_of(r2) == frozenset({"agent-b"})  # b1 still holds r2
    # The lock's late events (a renewal seen after the claim's deletion) do not count it again.
    cache.upsert_lock(held("lock-a1", "l-a1", r1, "agent-a", "a1", 6))
    assert graph.holders_of(r1) == frozenset()


def test_a_held_claim_and_its_lock_keep_one_copy_of_the_strings_they_share() -> None:
    """A held lock's two records name the same claim and lock; with 10 000 held locks each copy of
    those strings is about 0.7 MiB of the operator's memory."""
    def decoded(body: dict[str, Any]) -> dict[str, Any]:  # new strings of every value, as from the API
        return json.loads(json.dumps(body))  # type: ignore[no-any-return]

    for lock_first in (False, True):  # a watch sees the claim first; a restart may list the locks first
        cache = Cache()
        granted = claim("c1", 5)
        granted["status"] = {"phase": "Held", "reason": "Granted", "message": "", "lockName": "lock-x"}
        if lock_first:
            cache.upsert_lock(decoded(lock("l1", 6)))
        cache.upsert_claim(decoded(claim("c1", 4)))  # unanswered yet
        cache.upsert_lock(decoded(lock("l1", 6)))
        cache.upsert_claim(decoded(granted))  # its Held status, naming the lock
        grant = cache.locks[("a", R)].grants[0]
        record = cache.claims["c1"].claim
        assert record.status is not None and record.status.lock_name == grant.name == "lock-x"
        assert (grant.claim_name, grant.claim_uid) == (record.name, record.uid) == ("c-c1", "c1")
        assert grant.claim_uid is record.uid and grant.claim_name is record.name
        assert record.status.lock_name is grant.name
