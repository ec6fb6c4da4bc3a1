"""The chaos suite's history checker, on hand-made histories: each property has a history that breaks it,
so the checker provably can fail, and a near miss that must pass, so it does not cry wolf."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

# `chaos/` lives at the repository root, beside the `operator/` source root.
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from chaos.history import (  # noqa: E402
    Attempt,
    Bounds,
    ClaimLife,
    History,
    Hold,
    LockLife,
    Outage,
    PodDeath,
    Record,
    Write,
    check,
    covered,
    from_dict,
    read_jsonl,
    to_json,
)
from chaos.runfreeze import ChildLife, overlaps  # noqa: E402
from chaos.store import FencedStore  # noqa: E402

R = "chaos://pool/r01"


def hold(agent: str, claim: str, token: int, start: float, end: float, expiry: float | None = None,
         pod: str | None = None, resource: str = R, mode: str = "Exclusive") -> Hold:
    return Hold(agent=agent, resource=resource, claim=claim, token=token, start=start, end=end,
                expiry=expiry if expiry is not None else end + 10, pod=pod, mode=mode)


def lock(claim: str, token: int, version: int, created: float, deleted: float | None, expiry: float | None = None,
         released: float | None = None, pod: str | None = None, holder: str = "a") -> LockLife:
    return LockLife(uid=f"lock-{claim}", resource=R, holder=holder, claim=claim, token=token, version=version,
                    created=created, deleted=deleted, expiry=expiry if expiry is not None else created + 30,
                    released=released, pod=pod)


def attempt(agent: str, outcome: str, start: float, end: float, *, wait: bool = True,
            pod: str | None = None) -> Attempt:
    return Attempt(agent=agent, resource=R, wait=wait, start=start, end=end, outcome=outcome, pod=pod)


def claim(uid: str, created: float, decided: float | None, deleted: float | None, *, wait: bool = True,
          answered: float | None = None) -> ClaimLife:
    return ClaimLife(uid=uid, resource=R, holder=uid, wait=wait, created=created, decided=decided, deleted=deleted,
                     phase=None, answered=answered if answered is not None else decided)


def violations(history: History, bounds: Bounds | None = None) -> list[str]:
    return [v.check for v in check(history, bounds).violations]


def clean_history() -> History:
    """Two agents take turns on one resource, each writing with its token: nothing wrong."""
    history = History(end=100)
    history.extend([
        attempt("a", "Held", 0, 1), attempt("b", "Held", 0.5, 5.2),
        hold("a", "c1", 10, 1, 5), hold("b", "c2", 20, 5.2, 9),
        lock("c1", 10, 100, 0.9, 5.1, released=5.0), lock("c2", 20, 200, 5.15, 9.1, released=9.0),
        claim("c1", 0, 0.95, 5.0), claim("c2", 0.5, 5.15, 9.0, answered=0.6),
        Write(0, "a", R, 10, 2, True), Write(1, "b", R, 20, 6, True),
    ])
    return history


def test_a_clean_history_passes() -> None:
    report = check(clean_history())
    assert report.violations == []
    assert report.stats["valid_holds"] == 2
    assert report.stats["operations"] == 2 + 2 + 2


# ---- mutual exclusion -------------------------------------------------------------------------------


def test_overlapping_holds_break_mutual_exclusion() -> None:
    history = History(end=100)
    history.extend([hold("a", "c1", 10, 0, 5), hold("b", "c2", 20, 4, 9)])
    assert violations(history) == ["mutual-exclusion"]


def test_shared_holds_may_overlap_each_other_but_not_an_exclusive_one() -> None:
    readers = History(end=100)
    readers.extend([hold("a", "c1", 10, 0, 5, mode="Shared"), hold("b", "c2", 20, 1, 9, mode="Shared"),
                    hold("c", "c3", 30, 2, 3, mode="Shared")])
    assert violations(readers) == []  # granted together, told in any order: no fencing-order either
    writer = History(end=100)
    writer.extend([hold("a", "c1", 10, 0, 5, mode="Shared"), hold("b", "c2", 20, 1, 9, mode="Shared"),
                   hold("w", "c3", 30, 6, 7)])
    assert violations(writer) == ["mutual-exclusion"]  # beside a reader that still held


def test_readers_told_in_another_order_than_granted_are_no_fencing_violation() -> None:
    """Two Shared grants (tokens 10, then 20) told the other way round, the second reader done before
    the first heard of its grant: the grants' order is the locks' (version 100 before 200)."""
    history = History(end=100)
    history.extend([hold("b", "c2", 20, 1, 2, mode="Shared"), hold("a", "c1", 10, 3, 5, mode="Shared"),
                    lock("c1", 10, 100, 0.5, 5.1), lock("c2", 20, 200, 0.6, 2.1)])
    assert violations(history) == []


def test_a_reader_granted_after_a_writer_with_a_smaller_token_breaks_fencing_order() -> None:
    history = History(end=100)
    history.extend([hold("w", "c1", 20, 0, 5), hold("a", "c2", 10, 6, 9, mode="Shared")])
    assert violations(history) == ["fencing-order"]


def test_a_hold_contained_in_another_is_caught() -> None:
    history = History(end=100)
    history.extend([hold("a", "c1", 10, 0, 9), hold("b", "c2", 20, 2, 3), hold("c", "c3", 30, 10, 11)])
    assert violations(history) == ["mutual-exclusion"]


def test_belief_past_the_lease_expiry_does_not_count() -> None:
    # `a` noticed the loss late (frozen), but its lease ended at 4, before `b` was granted.
    history = History(end=100)
    history.extend([hold("a", "c1", 10, 0, 9, expiry=4), hold("b", "c2", 20, 5, 8)])
    assert violations(history) == []


def test_a_holder_whose_pod_died_holds_nothing_after() -> None:
    history = History(end=100)
    history.extend([hold("a", "c1", 10, 0, 9, pod="pod-a"), hold("b", "c2", 20, 5, 8), PodDeath("pod-a", 4.5)])
    assert violations(history) == []
    history.pod_deaths = [PodDeath("pod-a", 6)]
    assert violations(history) == ["mutual-exclusion"]


def test_other_resources_and_the_same_claim_do_not_conflict() -> None:
    history = History(end=100)
    history.extend([hold("a", "c1", 10, 0, 5), hold("a", "c1", 10, 3, 6),
                    hold("b", "c2", 20, 1, 4, resource="chaos://pool/other")])
    assert violations(history) == []


# ---- fencing tokens ---------------------------------------------------------------------------------


def test_a_later_grant_with_a_smaller_token_breaks_fencing_order() -> None:
    history = History(end=100)
    history.extend([lock("c1", 1068, 1187, 11.6, 12.7), lock("c2", 1030, 1435, 12.7, 19.4)])
    assert violations(history) == ["fencing-order"]


def test_an_equal_token_for_a_new_grant_breaks_fencing_order() -> None:
    history = History(end=100)
    history.extend([lock("c1", 10, 100, 0, 1), lock("c2", 10, 200, 2, 3)])
    assert violations(history) == ["fencing-order"]


def test_a_lock_with_token_0_from_an_earlier_operator_is_a_reservation_not_a_grant() -> None:
    """Operators before the token was the lock's from its creation created locks with token 0 and
    wrote it afterwards; one deleted before that write was told to nobody, so it is no grant and
    takes no place in the token order. (Today's locks read their resourceVersion until then.)"""
    history = History(end=100)
    history.extend([lock("c1", 100, 100, 0, 1), lock("c2", 0, 150, 1.5, 1.6), lock("c3", 200, 200, 2, 3)])
    report = check(history)
    assert report.violations == []
    assert report.stats["grants"] == 2 and report.stats["reservations"] == 1


def test_a_lock_whose_token_reads_differently_at_a_later_version_is_a_violation() -> None:
    """A lock's token is its creation revision at every version: one that changed (a write that
    did not record it, a token rewritten) would let its holder and a reader disagree."""
    history = History(end=100)
    history.extend([lock("c1", 100, 100, 0, 1), replace(lock("c2", 150, 150, 1.5, 3), other_tokens=(170,))])
    assert violations(history) == ["fencing-stable"]


def test_a_reservation_that_lingers_for_a_deleted_claim_is_a_phantom() -> None:
    history = History(end=100)
    gone = replace(claim("c2", 0, None, 1.0), deleted_version=120)
    history.extend([gone, replace(lock("c2", 0, 150, 1.5, 9.0), created_version=150)])
    assert violations(history) == ["phantom-grant"]


def test_grant_order_comes_from_versions_not_arrival() -> None:
    history = History(end=100)
    # Seen out of order by the monitor, but versions say c1 came first: tokens do grow.
    history.extend([lock("c2", 20, 200, 1, 2), lock("c1", 10, 100, 5, 6)])
    assert violations(history) == []


def test_holds_in_sequence_with_a_falling_token_are_caught() -> None:
    history = History(end=100)
    history.extend([hold("a", "c1", 30, 0, 2), hold("b", "c2", 20, 3, 4)])
    assert violations(history) == ["fencing-order"]


def test_one_token_for_two_claims_is_caught() -> None:
    history = History(end=100)
    history.extend([hold("a", "c1", 10, 0, 2), hold("b", "c2", 10, 3, 4)])
    assert sorted(violations(history)) == ["fencing-order", "fencing-unique"]


def test_an_agent_seeing_another_token_than_its_lock_is_caught() -> None:
    history = History(end=100)
    history.extend([hold("a", "c1", 10, 1, 2), lock("c1", 11, 100, 0.9, 2.1)])
    assert violations(history) == ["fencing-mismatch"]


def test_a_phantom_second_lock_of_a_claim_leaves_its_hold_judged_by_the_lock_it_was_told_of() -> None:
    """A replica whose view of claims lagged created a second lock for a claim already released (a
    phantom, judged by the phantom check); the holder saw the first lock's token, which is right.
    A token of neither lock is still a mismatch."""
    history = History(end=100)
    released = ClaimLife(uid="c1", resource=R, holder="a", wait=True, created=0, decided=1, deleted=2,
                         phase="Held", answered=1, deleted_version=150)
    first = lock("c1", 100, 100, 0.5, 2, released=2)
    phantom = LockLife(uid="lock-c1-phantom", resource=R, holder="a", claim="c1", token=160, version=160,
                       created=3, deleted=3.4, expiry=40, created_version=160)
    history.extend([released, first, phantom, hold("a", "c1", 100, 1, 2)])
    assert violations(history) == []
    history.extend([hold("a", "c1", 120, 1.5, 2)])
    assert "fencing-mismatch" in violations(history)


def test_a_lock_for_a_deleted_claim_that_lingers_is_a_phantom_grant() -> None:
    history = History(end=100)
    released = ClaimLife(uid="c1", resource=R, holder="a", wait=True, created=0, decided=1, deleted=2,
                         phase="Held", answered=1, deleted_version=150)
    first = lock("c1", 10, 100, 1, 2, released=2)
    brief = LockLife(uid="lock-c1-brief", resource=R, holder="a", claim="c1", token=11, version=160, created=3,
                     deleted=3.2, expiry=40, created_version=160)
    history.extend([released, first, brief])
    assert violations(history) == []  # gone at once: the operator's lagging view, cleaned up in time
    lingering = LockLife(uid="lock-c1-again", resource=R, holder="a", claim="c1", token=12, version=170,
                         created=4, deleted=30, expiry=40, created_version=170)
    history.add(lingering)
    assert violations(history) == ["phantom-grant"]


def test_a_second_lock_for_one_claim_that_lingers_is_a_phantom_grant_even_unobserved() -> None:
    history = History(end=100)
    history.extend([lock("c1", 10, 100, 1, 2), lock("c1", 10, 160, 3, 20)])
    assert violations(history) == ["phantom-grant"]


# ---- first come, first served ----------------------------------------------------------------------


def fifo_history(older_decided_version: int | None) -> History:
    """`old` queues at version 10, `young` at 20; the lock created at version 30 goes to `young`."""
    history = History(end=100)
    old = ClaimLife(uid="old", resource=R, holder="old", wait=True, created=1, decided=3.5, deleted=4,
                    phase="Held", answered=1.1, created_version=10, decided_version=older_decided_version,
                    deleted_version=50)
    young = ClaimLife(uid="young", resource=R, holder="young", wait=True, created=1.2, decided=3, deleted=3.3,
                      phase="Held", answered=1.3, created_version=20, decided_version=31, deleted_version=40)
    granted = LockLife(uid="l-young", resource=R, holder="young", claim="young", token=30, version=30, created=3,
                       deleted=3.3, expiry=30, released=3.3, created_version=30)
    history.extend([old, young, granted])
    return history


def test_a_younger_claim_granted_while_an_older_one_waits_breaks_fifo() -> None:
    assert violations(fifo_history(older_decided_version=45)) == ["fifo"]


def test_an_older_claim_decided_before_the_grant_was_not_overtaken() -> None:
    # e.g. it timed out: the operator wrote TimedOut (version 25) before it created the lock (30),
    # even if a watch showed the lock first
    assert violations(fifo_history(older_decided_version=25)) == []


def test_an_older_claim_granted_first_and_told_later_was_not_overtaken() -> None:
    """Shared grants made together are told one after another: the older claim's grant (version 28)
    came before the younger's (30), its Held status (45) after."""
    history = fifo_history(older_decided_version=45)
    history.extend([LockLife(uid="l-old", resource=R, holder="old", claim="old", token=28, version=28, created=2.9,
                             deleted=4, expiry=30, released=4, created_version=28)])
    assert violations(history) == []
    history.locks = [replace(lock, created_version=32) if lock.claim == "old" else lock for lock in history.locks]
    assert violations(history) == ["fifo"]  # granted after the younger one: overtaken


def test_an_older_grant_first_seen_in_a_later_version_is_judged_by_its_token() -> None:
    """Shared grants added one write each (tokens 26, 28) that the monitor first saw in the version
    that made the younger claim's grant (30): their tokens say they came first."""
    history = fifo_history(older_decided_version=45)
    history.extend([LockLife(uid="l-old", resource=R, holder="old", claim="old", token=28, version=30, created=3,
                             deleted=4, expiry=30, released=4, created_version=None)])
    assert violations(history) == []
    history.locks = [replace(lock, token=32) if lock.claim == "old" else lock for lock in history.locks]
    assert "fifo" in violations(history)  # its own write came after the younger one's grant: overtaken


def test_an_older_claim_whose_pod_was_deleted_before_the_grant_was_passed_over_rightly() -> None:
    """A claim of a pod being deleted is ended, not granted; its ending write may come after the next
    claim's grant. Its pod's death before the grant excuses it, a death after the grant does not."""
    def history(died: float) -> History:
        h = fifo_history(older_decided_version=45)
        h.claims = [replace(c, holder=f"pod:ns/{c.uid}-pod/abcd1234") for c in h.claims]
        h.locks = [replace(lock, holder=f"pod:ns/{lock.holder}-pod/abcd1234") for lock in h.locks]
        h.extend([PodDeath(pod="old-pod", time=died)])
        return h

    assert violations(history(died=2.5)) == []  # deleted before the lock was seen made (3)
    assert violations(history(died=3.2)) == ["fifo"]  # deleted after it: overtaken while alive


def test_a_reservation_for_a_younger_claim_breaks_fifo_too() -> None:
    """Reserving the resource for the wrong claim is the wrong decision even when taken back."""
    history = fifo_history(older_decided_version=45)
    history.locks = [replace(lock, token=0) for lock in history.locks]
    assert violations(history) == ["fifo"]


def test_fifo_is_not_judged_without_the_versions() -> None:
    history = fifo_history(older_decided_version=45)
    history.claims = [replace(c, created_version=None) for c in history.claims]
    assert violations(history) == []


def test_a_waiter_deleted_while_the_monitor_was_away_is_not_judged() -> None:
    history = fifo_history(older_decided_version=None)
    history.claims = [replace(c, decided=None, deleted_version=None) if c.uid == "old" else c for c in history.claims]
    assert violations(history) == []


# ---- fenced writes ----------------------------------------------------------------------------------


def test_a_store_accepting_an_older_token_is_caught() -> None:
    history = History(end=100)
    history.extend([Write(0, "b", R, 20, 1, True), Write(1, "a", R, 10, 2, True)])
    assert violations(history) == ["fenced-write"]


def test_two_writers_with_one_token_are_caught() -> None:
    history = History(end=100)
    history.extend([Write(0, "a", R, 10, 1, True), Write(1, "b", R, 10, 2, True)])
    assert violations(history) == ["fenced-write"]


def test_a_refused_stale_write_is_counted_not_judged() -> None:
    # `a` was frozen past its lease (valid until 4), `b` took over and wrote; `a` wrote at 9.
    history = History(end=100)
    history.extend([
        hold("a", "c1", 10, 0, 9.5, expiry=4), hold("b", "c2", 20, 5, 8),
        Write(0, "a", R, 10, 1, True), Write(1, "b", R, 20, 5.5, True), Write(2, "a", R, 10, 9, False),
    ])
    report = check(history)
    assert report.violations == []
    assert report.stats["stale_writes_refused"] == 1


def test_the_fenced_store_refuses_older_tokens() -> None:
    store = FencedStore(clock=lambda: 0.0)
    assert store.write("a", R, 10)
    assert store.write("a", R, 10)  # the same holder again
    assert store.write("b", R, 20)
    assert not store.write("a", R, 10)  # the paused holder's late write
    assert store.write("c", "chaos://pool/other", 5)  # per resource
    assert [w.accepted for w in store.log] == [True, True, True, False, True]
    history = History(end=1)
    history.extend(store.log)
    assert violations(history) == []


# ---- waiters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["Held", "TimedOut", "Deadlocked", "Revoked", "Cancelled"])
def test_every_proper_ending_of_a_wait_passes(outcome: str) -> None:
    history = History(end=100)
    history.add(attempt("a", outcome, 0, 3))
    assert violations(history) == []


@pytest.mark.parametrize("outcome", ["Unreachable", "NotFound", "Expired", "Rejected"])
def test_a_waiter_ending_otherwise_is_lost(outcome: str) -> None:
    history = History(end=100)
    history.add(attempt("a", outcome, 0, 3))
    assert violations(history) == ["lost-waiter"]


def test_a_lost_waiter_is_excused_during_an_outage_or_after_its_pod_died() -> None:
    history = History(end=100)
    history.extend([attempt("a", "Unreachable", 0, 3), Outage("apiserver", 2, 4)])
    assert violations(history) == []
    history = History(end=100)
    history.extend([attempt("a", "Unreachable", 0, 3, pod="pod-a"), PodDeath("pod-a", 1)])
    assert violations(history) == []


def test_a_scoped_outage_excuses_only_its_agents() -> None:
    history = History(end=100)
    history.extend([attempt("a0-001", "Unreachable", 0, 3), attempt("a1-001", "Unreachable", 0, 3),
                    Outage("agent process frozen", 1, 2, scope="a0-")])
    report = check(history)
    assert [v.message.split()[2] for v in report.violations] == ["a1-001"]


def test_a_try_lock_ends_held_or_rejected() -> None:
    history = History(end=100)
    history.extend([attempt("a", "Rejected", 0, 1, wait=False), attempt("b", "TimedOut", 0, 1, wait=False)])
    assert violations(history) == ["try-lock-outcome"]


# ---- liveness ---------------------------------------------------------------------------------------


def test_a_lock_outliving_its_lease_is_caught() -> None:
    history = History(end=100)
    history.add(lock("c1", 10, 100, 0, 16, expiry=10))
    assert violations(history) == ["liveness"]
    assert violations(history, Bounds(liveness_seconds=7)) == []


def test_outage_time_does_not_count_against_liveness() -> None:
    history = History(end=100)
    history.extend([lock("c1", 10, 100, 0, 16, expiry=10), Outage("operator killed", 9, 13)])
    assert violations(history) == []


def test_a_lock_outliving_its_pod_or_its_release_is_caught() -> None:
    history = History(end=100)
    history.extend([lock("c1", 10, 100, 0, 12, pod="pod-a"), PodDeath("pod-a", 2)])
    assert violations(history) == ["liveness"]
    history = History(end=100)
    history.add(lock("c1", 10, 100, 0, 12, released=3))
    assert violations(history) == ["liveness"]


def test_a_lock_never_deleted_is_judged_at_the_end_of_the_run() -> None:
    history = History(end=50)
    history.add(lock("c1", 10, 100, 0, None, expiry=30))
    assert violations(history) == ["liveness"]


def test_a_waiter_kept_waiting_on_a_free_resource_is_caught() -> None:
    history = History(end=100)
    history.extend([lock("c1", 10, 100, 0, 2, released=2), claim("c2", 1, 12, None, answered=1.1),
                    lock("c2", 20, 200, 12, 13, released=13)])
    assert violations(history) == ["queue-liveness"]
    history.add(Outage("operator paused", 2, 10))
    assert violations(history) == []


def test_a_claim_nobody_answers_is_caught_even_when_its_client_gave_up() -> None:
    history = History(end=100)
    history.add(claim("c1", 0, None, 8, wait=False, answered=None))
    assert violations(history) == ["no-verdict"]
    history = History(end=100)
    history.add(claim("c1", 0, None, 8, wait=False, answered=0.3))
    assert violations(history) == []


def test_a_lock_broken_revocation_without_a_break_is_caught() -> None:
    broken = ClaimLife(uid="c1", resource=R, holder="a", wait=False, created=0, decided=1, deleted=2,
                       phase="Revoked", answered=1, reason="LockBroken")
    history = History(end=100)
    history.add(broken)
    assert violations(history) == ["reason"]
    history.locks_broken = 1
    assert violations(history) == []


# ---- plumbing ---------------------------------------------------------------------------------------


def test_records_survive_a_round_trip_and_a_torn_line(tmp_path: Path) -> None:
    records: list[Record] = [
        hold("a", "c1", 10, 0, 5, pod="p"), attempt("a", "Held", 0, 1), Outage("x", 1, 2, scope="a0-"),
        Write(0, "a", R, 10, 2, True), PodDeath("p", 3), claim("c1", 0, 1, 2),
    ]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(to_json(r) + "\n" for r in records) + '{"type": "hold", "agent"')
    assert list(read_jsonl(path)) == records
    assert from_dict({"type": "pod_death", "pod": "p", "time": 1.0, "ignored": True}) == PodDeath("p", 1.0)


def test_covered_counts_only_the_overlap_of_merged_windows() -> None:
    assert covered(0, 10, [(2, 4), (6, 20)]) == pytest.approx(6)
    assert covered(5, 6, [(0, 1)]) == 0


# ---- run-freeze: a command's life against the next grant ------------------------------------------


def test_a_command_alive_after_the_next_grant_is_a_violation() -> None:
    def grant(token: int, at: float, holder: str = "b") -> LockLife:
        return LockLife(uid=f"l{token}", resource="r://1", holder=holder, claim=f"c{token}", token=token,
                        version=token, created=at + 0.05, deleted=None, expiry=None, acquired=at)

    life = ChildLife("a", "r://1", 10, start=100.0, last=104.0)
    assert overlaps([life], [grant(10, 99.9, "a"), grant(11, 104.5)]) == [], "the next grant after its death"
    [found] = overlaps([life], [grant(11, 103.9)])
    assert found.check == "child-outlived-lease" and "0.100s after b was granted it" in found.message
    assert overlaps([life], [replace(grant(11, 103.9), resource="r://2")]) == [], "another resource"


# ---- claims of several resources -----------------------------------------------------------------

R2 = "chaos://pool/r02"


def multi_claim(uid: str, created: float, decided: float | None, held_version: int | None,
                deleted: float | None = None) -> ClaimLife:
    return ClaimLife(uid=uid, resource=R, holder=uid, wait=True, created=created, decided=decided, deleted=deleted,
                     phase="Held", answered=created + 0.1, resources=(R, R2), held_version=held_version,
                     created_version=10, decided_version=held_version)


def grant_of(claim: str, resource: str, made: int, created: float, deleted: float | None = None,
             deleted_version: int | None = None, token: int | None = None) -> LockLife:
    return LockLife(uid=f"lock-{resource}/{claim}", resource=resource, holder=claim, claim=claim,
                    token=token or made, version=made, created=created, deleted=deleted, expiry=created + 30,
                    created_version=made, deleted_version=deleted_version)


def test_a_claim_of_several_told_held_with_every_grant_passes() -> None:
    history = History(end=100)
    history.extend([multi_claim("m", 0, 1, 30), grant_of("m", R, 20, 0.5, 9, 40), grant_of("m", R2, 25, 0.6, 9, 41)])
    report = check(history)
    assert [v.check for v in report.violations] == []
    assert report.stats["multi_held_judged"] == 1


def test_a_claim_of_several_told_held_with_part_of_its_set_is_caught() -> None:
    never = History(end=100)
    never.extend([multi_claim("m", 0, 1, 30), grant_of("m", R, 20, 0.5, 9, 40)])
    assert violations(never) == ["partial-hold"]
    gone = History(end=100)  # its grant on R2 was given back before the Held was written
    gone.extend([multi_claim("m", 0, 1, 30), grant_of("m", R, 20, 0.5, 9, 40), grant_of("m", R2, 25, 0.6, 0.8, 28)])
    assert violations(gone) == ["partial-hold"]
    late = History(end=100)  # made after the Held
    late.extend([multi_claim("m", 0, 1, 30), grant_of("m", R, 20, 0.5, 9, 40), grant_of("m", R2, 31, 1.1, 9, 41)])
    assert violations(late) == ["partial-hold"]


def test_a_grant_removal_the_monitor_did_not_see_the_version_of_is_not_judged() -> None:
    history = History(end=100)
    history.extend([multi_claim("m", 0, 1, 30), grant_of("m", R, 20, 0.5, 9, 40), grant_of("m", R2, 25, 0.6, 0.8)])
    report = check(history)
    assert [v.check for v in report.violations] == [] and report.stats["multi_grants_unjudged"] == 1


def test_one_grant_per_resource_of_a_claim_of_several_is_no_phantom() -> None:
    history = History(end=100)
    history.extend([multi_claim("m", 0, 1, 30, deleted=20),
                    grant_of("m", R, 20, 0.5, 20.5, 40), grant_of("m", R2, 25, 0.6, 20.5, 41)])
    assert violations(history) == []


def test_a_waiter_kept_by_a_claim_of_several_queued_ahead_is_no_queue_liveness_violation() -> None:
    # m waits for R2 (held by x for 30 s) and keeps R, free, for itself; w queued on R after m waits too.
    history = History(end=100)
    waiting = replace(multi_claim("m", 0, 31, None), held_version=None)
    history.extend([
        waiting, grant_of("x", R2, 5, 0, 30.5, 50), grant_of("m", R, 60, 31, 40, 70), grant_of("m", R2, 61, 31, 40, 71),
        claim("w", 1, 41, None, answered=1.1),
    ])
    assert violations(history) == []
    alone = History(end=100)  # without m ahead of it, w waiting 40 s on a free resource is a violation
    alone.extend([claim("w", 1, 41, None, answered=1.1)])
    assert violations(alone) == ["queue-liveness"]
def test_a_reservation_is_judged_by_the_operators_order_of_arrival_not_by_when_the_monitor_saw_it() -> None:
    # After a relist the monitor first saw w (listed first) a moment before m, though the operator
    # queued m first (its sequence is lower): m's reservation of R keeps w waiting rightly.
    m = replace(multi_claim("m", 1.01, 31, None), held_version=None, sequence=7)
    w = replace(claim("w", 1, 41, None, answered=1.1), sequence=9)
    history = History(end=100)
    history.extend([m, grant_of("x", R2, 5, 0, 30.5, 50), grant_of("m", R, 60, 31, 40, 70),
                    grant_of("m", R2, 61, 31, 40, 71), w])
    assert violations(history) == []
    younger = History(end=100)  # m queued after w: its reservation is no excuse
    younger.extend([replace(m, sequence=11), grant_of("x", R2, 5, 0, 30.5, 50), grant_of("m", R, 60, 31, 40, 70),
                    grant_of("m", R2, 61, 31, 40, 71), replace(w, created=1.02)])
    assert violations(younger) == ["queue-liveness"]


# ---- capacity (a LockPolicy's semaphore) ------------------------------------------------------------


def permit_hold(agent: str, token: int, start: float, end: float, permits: int = 1, mode: str = "Exclusive",
                capacity: int = 3) -> Hold:
    return replace(hold(agent, f"c-{agent}", token, start, end, mode=mode), permits=permits, capacity=capacity)


@pytest.mark.parametrize(
    ("holds", "found"),
    [
        pytest.param([permit_hold("a", 10, 0, 5, 2), permit_hold("b", 20, 1, 6, 1)], [], id="3 of 3 permits"),
        pytest.param([permit_hold("a", 10, 0, 5, 2), permit_hold("b", 20, 1, 6, 2)], ["capacity"],
                     id="4 of 3 permits"),
        pytest.param([permit_hold("a", 10, 0, 5, 2), permit_hold("b", 20, 5, 9, 2)], [],
                     id="one after another: the first ended"),
        pytest.param([permit_hold("a", 10, 0, 9, 1), permit_hold("b", 20, 1, 2, 1), permit_hold("c", 30, 3, 4, 1),
                      permit_hold("d", 40, 5, 6, 1)], [], id="a long hold beside short ones in turn"),
        pytest.param([permit_hold("a", 10, 0, 9, 1), permit_hold("b", 20, 1, 8, 1), permit_hold("c", 30, 3, 7, 1),
                      permit_hold("d", 40, 5, 6, 1)], ["capacity"], id="four single permits at once"),
        pytest.param([permit_hold("r", 10, 0, 5, mode="Shared"), permit_hold("s", 20, 1, 6, mode="Shared")], [],
                     id="Shared together"),
        pytest.param([permit_hold("r", 10, 0, 5, mode="Shared"), permit_hold("w", 20, 1, 6, 1)], ["capacity-mode"],
                     id="Shared beside Exclusive"),
        pytest.param([permit_hold("b", 20, 0, 2, 1), permit_hold("a", 10, 1, 5, 2)], [],
                     id="permit grants told in another order than granted"),
    ],
)
def test_holds_on_a_resource_of_capacity_3(holds: list[Hold], found: list[str]) -> None:
    history = History(end=100)
    history.extend(holds)
    assert violations(history) == found


def test_the_peak_of_permits_held_at_once_is_reported() -> None:
    history = History(end=100)
    history.extend([permit_hold("a", 10, 0, 5, 2), permit_hold("b", 20, 1, 6, 1), permit_hold("c", 30, 7, 8, 1)])
    report = check(history)
    assert report.stats["capacity_peak_permits"] == 3 and report.stats["capacity_holds"] == 3


def test_a_semaphore_grant_with_a_falling_token_in_the_locks_order_is_caught() -> None:
    history = History(end=100)
    history.extend([permit_hold("a", 20, 0, 5), permit_hold("b", 10, 1, 6),
                    lock("c-a", 20, 100, 0, 5.1), lock("c-b", 10, 200, 0.5, 6.1)])
    assert violations(history) == ["fencing-order"]
