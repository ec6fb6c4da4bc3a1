"""When a grant may rest on the view: the claim is within the cache's horizon, its scope is watched,
and the event loop has not just come back from a stall."""

from __future__ import annotations

from typing import Any

from kubelock.operator.cache import Cache
from kubelock.operator.freshness import ECHO_SECONDS, STALL_SECONDS, TICK_SECONDS, Freshness

R = "github://acme/app/issues/42"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def claim(uid: str, rv: int, namespace: str = "a") -> dict[str, Any]:
    return {
        "metadata": {"name": f"c-{uid}", "uid": uid, "namespace": namespace, "resourceVersion": str(rv)},
        "spec": {"resource": R, "holder": f"agent-{uid}"},
    }


def fresh(cache: Cache, stale: list[str], clock: Monotonic, deaf: list[str | None] | None = None) -> Freshness:
    deaf = [] if deaf is None else deaf
    return Freshness(cache, lambda ns: ns if ns in ("a", "b") else None, stale.append, deaf.append, monotonic=clock)


def test_a_claim_first_seen_beyond_the_horizon_waits_until_the_horizon_passes_it() -> None:
    cache, clock, stalls = Cache(), Monotonic(), []
    gate = fresh(cache, stalls, clock)
    cache.advance("a", 100)
    assert gate.may_grant("a", 100)
    assert not gate.may_grant("a", 101)  # a claim created before it may still be on its way
    assert cache.advance("a", 101)
    assert gate.may_grant("a", 101)
    assert not cache.advance("a", 90)  # the horizon never goes back
    assert cache.complete_at("a") == 101
    assert not gate.may_grant("b", 1)  # nothing of namespace b has been listed yet


def test_a_cluster_wide_horizon_covers_every_namespace() -> None:
    cache = Cache()
    cache.advance(None, 50)
    cache.advance("a", 70)
    assert cache.complete_at("a") == 70
    assert cache.complete_at("zzz") == 50


def test_grants_wait_while_their_scope_is_unwatched() -> None:
    cache, clock, stalls = Cache(), Monotonic(), []
    gate = fresh(cache, stalls, clock)
    cache.advance("a", 100)
    cache.advance("b", 100)
    gate.unwatched("a")
    assert not gate.may_grant("a", 10)
    assert gate.may_grant("b", 10)  # another scope is not affected
    gate.watched("a")
    assert gate.may_grant("a", 10)


def test_a_stall_is_reported_once_and_grants_wait_until_the_catch_up_is_done() -> None:
    cache, clock, stalls = Cache(), Monotonic(), []
    gate = fresh(cache, stalls, clock)
    cache.advance("a", 100)
    clock.now += TICK_SECONDS + STALL_SECONDS / 2  # a late tick is no stall
    assert not gate.check()
    clock.now += TICK_SECONDS + STALL_SECONDS + 8.0  # SIGSTOP, then SIGCONT
    assert not gate.may_grant("a", 10)  # the grant is first to notice
    assert len(stalls) == 1 and "did not run for 9.0 s" in stalls[0] and gate.epoch == 1
    assert not gate.check()  # the pulse, running next, does not report it again
    gate.catching_up = True  # what the runtime does on a stall
    assert not gate.may_grant("a", 10)
    gate.catching_up = False
    assert gate.may_grant("a", 10)


def test_a_watch_that_does_not_show_the_operators_own_write_is_deaf() -> None:
    """A partition can leave the watch's connection half-open: no error, no events. The operator's
    own claim writes must come back on it; when one does not, the watch is started again."""
    cache, clock, stale, deaf = Cache(), Monotonic(), [], []
    gate = fresh(cache, stale, clock, deaf)
    cache.advance("a", 100)
    gate.wrote("a", 120)
    gate.wrote("a", 130)  # the oldest unseen write is the one that counts
    clock.now += ECHO_SECONDS / 2
    gate.reset()
    assert gate.may_grant("a", 100)  # not late yet
    gate.seen_to("a", 125)  # the watch showed the first write: alive
    gate.wrote("a", 140)
    clock.now += ECHO_SECONDS + 0.1
    gate.reset()
    assert not gate.may_grant("a", 100)
    assert deaf == ["a"] and stale == []
    assert not gate.may_grant("a", 100)  # unwatched until the watch has listed again
    gate.watched("a")
    assert gate.may_grant("a", 100)


def test_an_event_of_an_unknown_claim_within_the_horizon_is_old_news() -> None:
    """After a LIST at version 100 (e.g. following a stall) the watch may still deliver events it had
    queued: a claim created and deleted before the LIST must not come back."""
    cache = Cache()
    cache.upsert_claim(claim("known", 40))
    cache.advance("a", 100)
    assert cache.claim_event(claim("ghost", 60)) is None
    assert "ghost" not in cache.claims
    assert cache.claim_event(claim("known", 80)) == ("a", R)  # news of a claim it knows
    assert cache.claim_event(claim("new", 101)) == ("a", R)  # created after the LIST


def test_a_relist_of_one_namespace_prunes_nothing_of_another() -> None:
    cache = Cache()
    cache.upsert_claim(claim("a1", 10, "a"))
    cache.upsert_claim(claim("b1", 10, "b"))
    assert cache.prune_claims(set(), 40, within="a".__eq__) == {("a", R)}
    assert "b1" in cache.claims and "a1" not in cache.claims


def test_a_write_the_watch_showed_before_its_answer_arrived_is_echoed() -> None:
    """The watch event of the operator's own write and the answer to that write reach the operator
    together; when the event is handled first, the write is already seen. In a quiet cluster no
    later event would come to clear it, and the watch would be taken for dead (a warning and a
    relist for nothing)."""
    cache, clock, stale, deaf = Cache(), Monotonic(), [], []
    gate = fresh(cache, stale, clock, deaf)
    cache.advance("a", 100)
    gate.seen_to("a", 120)  # the event of the write...
    gate.wrote("a", 120)  # ...then its answer
    gate.wrote("a", 110)  # an update that changed nothing answers with the version it had
    clock.now += ECHO_SECONDS + 0.1
    gate.reset()
    assert gate.may_grant("a", 100)
    assert deaf == [] and stale == []
    gate.wrote("a", 121)  # a write the watch has not shown still counts
    clock.now += ECHO_SECONDS + 0.1
    gate.reset()
    assert not gate.may_grant("a", 100) and deaf == ["a"]
def test_a_write_whose_event_came_before_its_response_is_not_awaited_again() -> None:
    """The write's response and its watch event travel on different connections: under load the
    event may be read first. Waiting for it again would find the watch deaf once the namespace went
    quiet, and start it again for nothing."""
    cache, clock, stale, deaf = Cache(), Monotonic(), [], []
    gate = fresh(cache, stale, clock, deaf)
    cache.advance("a", 100)
    gate.seen_to("a", 130)  # the echo of the write below, read before the write returned
    gate.wrote("a", 130)
    gate.wrote("a", 120)  # an older one, seen too
    clock.now += ECHO_SECONDS * 4  # nothing else happens in the namespace
    gate.reset()
    assert gate.may_grant("a", 100)
    assert deaf == []
    gate.wrote("a", 131)  # a later write still counts
    clock.now += ECHO_SECONDS + 0.1
    gate.reset()
    assert not gate.may_grant("a", 100)
    assert deaf == ["a"]


def test_a_watch_that_delivers_but_is_behind_is_not_deaf() -> None:
    """A busy API server or event loop can make the watch deliver seconds late; it still delivers
    everything in order, so it will show the write. Only a watch that has delivered nothing at all for
    ECHO_SECONDS since the write counts as dead."""
    cache, clock, stale, deaf = Cache(), Monotonic(), [], []
    gate = fresh(cache, stale, clock, deaf)
    cache.advance("a", 100)
    gate.wrote("a", 200)
    for version in range(150, 160):  # older events keep arriving, one every ECHO_SECONDS / 2
        clock.now += ECHO_SECONDS / 2
        gate.reset()
        gate.seen_to("a", version)
        assert gate.may_grant("a", 100)
    assert deaf == []
    clock.now += ECHO_SECONDS - 0.1  # then silence, but not for long enough
    gate.reset()
    assert gate.may_grant("a", 100) and deaf == []
    clock.now += 0.2
    gate.reset()
    assert not gate.may_grant("a", 100)
    assert deaf == ["a"]
