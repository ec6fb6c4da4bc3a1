"""The figures of one watch stream (`operator.watchstats`), on a clock the test sets."""

from __future__ import annotations

from kubelock.operator.watchstats import ScopeStats, WatchStats


def test_counts_events_and_the_age_of_the_last() -> None:
    stats = ScopeStats("claim", "team-a")
    assert stats.age(100.0) is None  # nothing delivered yet: no age to show
    stats.began(100.0)
    stats.delivered(101.0)
    stats.delivered(101.5)
    assert stats.events == 2
    assert stats.age(104.0) == 2.5
    assert stats.age(101.0) == 0.0  # never negative


def test_largest_gap_of_a_request_and_where_it_ended() -> None:
    stats = ScopeStats("claim", None)
    stats.began(0.0)
    for when in (0.5, 1.0, 9.0, 9.5):
        stats.delivered(when)
    seconds, events, gap, since = stats.request_summary(10.0)
    assert (seconds, events, gap, since) == (10.0, 4, 8.0, 1.0)  # 1.0 -> 9.0, ended at 9.0


def test_a_silence_up_to_now_counts_as_the_largest_gap() -> None:
    stats = ScopeStats("claim", None)
    stats.began(0.0)
    stats.delivered(1.0)
    assert stats.request_summary(30.0) == (30.0, 1, 29.0, 0.0)  # still silent: the gap has not ended


def test_a_new_request_starts_its_own_figures_and_keeps_the_totals() -> None:
    stats = ScopeStats("lock", "team-a")
    stats.began(0.0)
    stats.delivered(50.0)
    stats.began(60.0)
    stats.delivered(61.0)
    assert stats.requests == 2 and stats.events == 2
    assert stats.request_summary(61.0) == (1.0, 1, 1.0, 0.0)


def test_one_record_per_kind_and_scope() -> None:
    watches = WatchStats(lambda: 0.0)
    assert watches.scope("claim", None) is watches.scope("claim", None)
    assert watches.scope("claim", "a") is not watches.scope("lock", "a")
    assert sorted((s.kind, s.scope or "*") for s in watches) == [("claim", "*"), ("claim", "a"), ("lock", "a")]
