"""The chaos checker's time bounds on commit times: a write's moment read off the revision clock's ticks
(`chaos.clock`), not off when the monitor's watch delivered it. Each case has a history the monitor
stamped late or early, and the verdict the commit times give."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

# `chaos/` lives at the repository root, beside the `operator/` source root.
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from chaos.history import (  # noqa: E402
    ClaimLife,
    History,
    LockLife,
    PodDeath,
    RevisionClock,
    Tick,
    check,
    from_dict,
    retimed,
    to_json,
)

R = "chaos://pool/r01"


def ticks(*spans: tuple[int, float, float]) -> list[Tick]:
    return [Tick(version, sent, received) for version, sent, received in spans]


def lock(created: float, deleted: float | None, *, expiry: float, created_version: int | None = None,
         deleted_version: int | None = None, pod: str | None = None) -> LockLife:
    return LockLife(uid="lock-c1/c1", resource=R, holder="a", claim="c1", token=7, version=7, created=created,
                    deleted=deleted, expiry=expiry, pod=pod, created_version=created_version,
                    deleted_version=deleted_version)


def history(*records: object, end: float = 100.0) -> History:
    h = History()
    h.extend(records)  # type: ignore[arg-type]
    h.end = end
    return h


def test_window_is_bounded_by_the_ticks_either_side() -> None:
    clock = RevisionClock.of(ticks((200, 2.0, 2.4), (100, 1.0, 1.3)))
    assert clock.window(150) == (1.0, 2.4)
    assert clock.window(200) == (1.0, 2.4)  # the tick's own write: between its sending and its answer
    assert clock.window(50) == (None, 1.3)
    assert clock.window(250) == (2.0, None)


def test_a_deletion_the_monitor_heard_of_late_is_in_time_by_its_commit() -> None:
    # The lease ended at 10; the deletion was committed at revision 105, between ticks answered by
    # 12.3; the monitor's event loop, starved, stamped it at 18.
    h = history(lock(0.0, 18.0, expiry=10.0, created_version=5, deleted_version=105),
                *ticks((100, 12.0, 12.1), (110, 12.2, 12.3)))
    report = check(h)
    assert [v.check for v in report.violations] == []
    assert report.stats["time_bound_violations_by_arrival"] == 1


def test_a_deletion_committed_late_is_still_late() -> None:
    h = history(lock(0.0, 17.5, expiry=10.0, deleted_version=205),
                *ticks((200, 17.0, 17.1), (210, 17.2, 17.3)))
    violations = check(h).violations
    assert [v.check for v in violations] == ["liveness"]
    assert "7.3s after its lease expiry" in violations[0].message


def test_a_stamp_no_later_tick_bounds_is_kept() -> None:
    # The clock stopped (an API server restart) before the deletion: nothing says when it was committed.
    h = history(lock(0.0, 18.0, expiry=10.0, deleted_version=305), *ticks((100, 1.0, 1.1)))
    assert [v.check for v in check(h).violations] == ["liveness"]


def test_a_commit_is_never_placed_after_its_arrival() -> None:
    h = history(lock(0.0, 12.0, expiry=10.0, deleted_version=105), *ticks((100, 11.0, 11.1), (110, 13.0, 16.0)))
    assert retimed(h).locks[0].deleted == 12.0


def test_a_pod_death_counts_from_its_deletion_commit_never_before_its_stamp() -> None:
    # The harness stamped the death at 5.0, before sending 30 deletions; this one was committed by 9.0.
    # The lock went at 13.4 (its event arrived at 13.5): 4.4 s after the pod's death, not 8.5 s.
    h = history(lock(0.0, 13.5, expiry=60.0, deleted_version=150, pod="p"), PodDeath("p", 5.0, 50),
                *ticks((40, 4.0, 4.2), (60, 8.5, 9.0), (140, 13.0, 13.1), (160, 13.3, 13.4)))
    assert retimed(h).pod_deaths[0].time == 9.0
    report = check(h)
    assert report.violations == []
    assert report.stats["time_bound_violations_by_arrival"] == 1
    early = history(PodDeath("p", 5.0, 50), *ticks((60, 1.0, 2.0)))
    assert retimed(early).pod_deaths[0].time == 5.0
    # The deletion's own answer, when it came before the next tick's, bounds its commit closer.
    answered = history(PodDeath("p", 5.0, 50, answered=6.5), *ticks((40, 4.0, 4.2), (60, 8.5, 9.0)))
    assert retimed(answered).pod_deaths[0].time == 6.5


def test_a_claim_stamped_late_on_arrival_can_be_found_unanswered_too_long() -> None:
    # Commit times are not only kinder: the monitor heard of the claim's creation 2.9 s late and of its
    # first phase 0.5 s late, which hid a 5.5 s silence.
    claim = ClaimLife(uid="c1", resource=R, holder="a", wait=False, created=3.0, decided=None, deleted=None,
                      phase="Pending", answered=7.0, created_version=10, answered_version=20)
    h = history(claim, *ticks((5, 0.9, 0.95), (15, 1.0, 1.1), (25, 6.5, 6.6)), end=8.0)
    report = check(h)
    assert [v.check for v in report.violations] == ["no-verdict"]
    assert report.stats["time_bound_violations_by_arrival"] == 0


def test_without_ticks_the_stamps_are_judged_as_they_are() -> None:
    h = history(lock(0.0, 18.0, expiry=10.0, deleted_version=105))
    assert retimed(h) is h
    report = check(h)
    assert [v.check for v in report.violations] == ["liveness"]
    assert "time_bound_violations_by_arrival" not in report.stats


def test_ticks_and_versions_survive_the_history_file() -> None:
    for record in (Tick(5, 1.0, 1.2), PodDeath("p", 1.0, 9), replace(lock(0, 1, expiry=2), released_version=4)):
        assert from_dict(__import__("json").loads(to_json(record))) == record
