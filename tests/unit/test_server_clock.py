"""Bounds on the API server's clock from the `Date` of its answers (`kubelock.kube.serverclock`)."""

from __future__ import annotations

import time

from kubelock.kube.serverclock import ServerClock

DATE = "Sat, 28 Nov 2026 10:40:25 GMT"
STAMP = 1795862425.0  # DATE in seconds since the epoch


def test_the_server_clock_is_bounded_by_the_answer_and_the_request_s_moments() -> None:
    clock = ServerClock()
    clock.record(DATE, sent=100.0, received=100.25)
    # Read while the request was under way, truncated to the second: at monotonic 110 (9.75 s after
    # the answer came, 10 s after the request went) the server's clock reads 10:40:34.75 at the
    # earliest and 10:40:36 at the latest.
    assert clock.earliest_now(110.0) == STAMP + 9.75
    assert clock.latest_now(110.0) == STAMP + 11.0


def test_this_machines_wall_clock_does_not_enter_once_an_answer_came() -> None:
    clock = ServerClock()
    clock.record(DATE, sent=time.monotonic(), received=time.monotonic())
    # A machine ten minutes off still counts the time left on a stamp of the server's clock right.
    assert abs(clock.latest_now() - STAMP) <= 1.5
    assert abs(clock.earliest_now() - STAMP) <= 0.5


def test_before_any_answer_or_with_an_unreadable_date_the_wall_clock_or_the_last_bounds_stand() -> None:
    clock = ServerClock()
    assert abs(clock.latest_now() - time.time()) < 1
    clock.record("not a date", sent=1.0, received=1.0)
    assert abs(clock.earliest_now() - time.time()) < 1
    clock.record(DATE, sent=100.0, received=100.0)
    assert clock.latest_now(100.0) == STAMP + 1.0
    clock.record("Sat, 99 Nov 2026 99:99:99 GMT", sent=200.0, received=200.0)
    assert clock.latest_now(100.0) == STAMP + 1.0  # the bounds last read stand
    clock.record(None, sent=300.0, received=300.0)
    assert clock.latest_now(100.0) == STAMP + 1.0


def test_a_server_clock_stepped_since_is_followed_at_the_next_answer() -> None:
    clock = ServerClock()
    clock.record(DATE, sent=100.0, received=100.0)
    clock.record("Sat, 28 Nov 2026 10:30:25 GMT", sent=101.0, received=101.0)  # stepped back 10 min
    assert clock.latest_now(101.0) == STAMP - 600 + 1.0
