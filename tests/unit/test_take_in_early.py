"""What the early path wrote after the priming's LISTs is handed to the primed cache
(`Runtime._take_in_early`): the lock it created where the cache has none, and the newer version (the
`Held` status) of a claim the cache knows; nothing older than its kind's LIST, no claim the cache does
not know (the claim watch brings it, with its place in the freshness order), nothing out of scope."""

from __future__ import annotations

from typing import Any

from kubelock.kube.config import Credentials
from kubelock.operator.runtime import Runtime
from kubelock.operator.settings import Settings

R = "github://acme/app/issues/42"
CLAIMS_LISTED_AT, LOCKS_LISTED_AT = 100, 100


class FrozenClock:
    def now(self) -> float:
        return 1_000_000.0


def runtime() -> Runtime:
    settings = Settings(namespaces=("a",))
    return Runtime(settings, Credentials(server="https://127.0.0.1:1"), FrozenClock())


def claim(uid: str, rv: int, *, namespace: str = "a", resource: str = R, held: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "LockClaim",
        "metadata": {"name": f"c-{uid}", "uid": uid, "namespace": namespace, "resourceVersion": str(rv)},
        "spec": {"resource": resource, "holder": f"agent-{uid}"},
    }
    if held:
        body["status"] = {"phase": "Held", "sequence": rv}
    return body


def lock(uid: str, rv: int, *, namespace: str = "a", claim_uid: str = "c1") -> dict[str, Any]:
    return {
        "kind": "ResourceLock",
        "metadata": {"name": f"lock-{uid}", "uid": uid, "namespace": namespace, "resourceVersion": str(rv)},
        "spec": {
            "resource": R, "holder": f"agent-{claim_uid}", "claimRef": {"name": f"c-{claim_uid}", "uid": claim_uid},
            "fencingToken": rv, "leaseDurationSeconds": 60,
        },
    }


def take_in(rt: Runtime, bodies: list[dict[str, Any]]) -> None:
    rt._take_in_early(bodies, {"a": CLAIMS_LISTED_AT}, {"a": LOCKS_LISTED_AT})


def test_the_lock_and_the_held_status_written_early_reach_the_primed_cache() -> None:
    rt = runtime()
    rt.cache.upsert_claim(claim("c1", 90))  # listed by the priming, unanswered
    take_in(rt, [lock("l1", 110), claim("c1", 111, held=True)])
    assert rt.cache.locks[("a", R)].grants[0].uid == "l1"  # else the normal path creates it again: 409
    record = rt.cache.claims["c1"]
    assert record.resource_version == "111"  # else its first status write meets 409
    assert record.claim.phase is not None and record.claim.phase.value == "Held"


def test_nothing_the_priming_lists_already_covered_is_taken() -> None:
    """An object at or before its kind's LIST is the LIST's to show (a lock missing from it was
    deleted since; taking it back would revive it)."""
    rt = runtime()
    rt.cache.upsert_claim(claim("c1", 95, held=True))
    take_in(rt, [lock("l1", LOCKS_LISTED_AT), claim("c1", 90)])
    assert rt.cache.locks == {}
    assert rt.cache.claims["c1"].resource_version == "95"


def test_a_lock_the_cache_has_for_the_resource_is_not_replaced() -> None:
    rt = runtime()
    rt.cache.upsert_lock(lock("l0", 80, claim_uid="c0"))
    take_in(rt, [lock("l1", 110)])
    assert rt.cache.locks[("a", R)].grants[0].uid == "l0"  # the watch brings what happened since


def test_a_claim_the_cache_does_not_know_and_objects_out_of_scope_are_left_to_the_watches() -> None:
    rt = runtime()
    take_in(rt, [claim("new", 120, held=True), lock("lx", 130, namespace="x"), claim("cx", 131, namespace="x")])
    assert rt.cache.claims == {}
    assert rt.cache.locks == {}
