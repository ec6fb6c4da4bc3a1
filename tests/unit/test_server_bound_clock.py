"""The operator's clock held to the API server's (`domain.clock.bounded_now`, `ServerBoundClock`) and
the bounds it is held to (`kube.serverclock.ServerClock.bounds`): pure arithmetic, explicit clocks."""

from __future__ import annotations

import logging
import time

import pytest

from kubelock.domain.clock import (
    SYNC_TOLERANCE_SECONDS,
    ManualClock,
    ServerBoundClock,
    bounded_now,
    offset_from,
)
from kubelock.kube.serverclock import ServerClock
from kubelock.operator.clockbound import server_bound

BOUNDS = (1000.0, 1001.2)  # the earliest and the latest the server's clock can read


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        (1000.5, 1000.5),  # within: a synchronised clock is kept as it is
        (1000.0, 1000.0),
        (1001.2, 1001.2),
        (1001.2 + SYNC_TOLERANCE_SECONDS, 1001.2 + SYNC_TOLERANCE_SECONDS),  # NTP's milliseconds off an edge
        (1000.0 - SYNC_TOLERANCE_SECONDS, 1000.0 - SYNC_TOLERANCE_SECONDS),
        (1120.0, 1000.0),  # ahead: the earliest bound, never the latest
        (1001.2 + SYNC_TOLERANCE_SECONDS + 0.01, 1000.0),
        (880.0, 1000.0),  # behind: the earliest bound
    ],
)
def test_a_clock_off_the_servers_reads_the_earliest_bound(own: float, expected: float) -> None:
    assert bounded_now(own, BOUNDS) == pytest.approx(expected)


def test_without_bounds_the_own_clock_stands() -> None:
    assert bounded_now(1120.0, None) == 1120.0


@pytest.mark.parametrize(("own", "offset"), [(1000.5, 0.0), (1120.0, 118.8), (880.0, -120.0), (1001.2, 0.0)])
def test_the_offset_is_how_far_outside_the_bounds(own: float, offset: float) -> None:
    assert offset_from(own, BOUNDS) == pytest.approx(offset)


def test_the_clock_reports_each_reading_outside_and_its_offset() -> None:
    own = ManualClock(1120.0)
    told: list[float] = []
    bounds: tuple[float, float] | None = BOUNDS
    clock = ServerBoundClock(own, lambda: bounds, told.append)
    assert clock.now() == 1000.0
    assert told == [pytest.approx(118.8)]
    assert clock.offset() == pytest.approx(118.8)
    own.advance(-119.5)  # 1000.5: within again
    assert clock.now() == 1000.5
    assert told == [pytest.approx(118.8)]
    assert clock.offset() == 0.0
    bounds = None
    assert clock.offset() == 0.0


def test_no_holder_counts_a_lease_past_the_end_an_operator_ahead_enforces() -> None:
    """The rule's purpose, on simulated clocks: the server's clock `s`, an operator node 120 s ahead
    whose bounds are the widest an answer gives (a second and a round trip), a holder that counts the
    stamp against the latest the server's clock can read. Every lease the operator ends, it ends at or
    after the moment the holder stopped counting it held."""
    skew, ttl, rtt = 120.0, 10.0, 0.2
    for start in (1000.0, 1000.3, 1000.99):
        for fraction in (0.0, 0.5, 0.999):  # where in its second the answer's `Date` was taken

            def bounds(s: float, fraction: float = fraction) -> tuple[float, float]:
                date = int(s - fraction)  # the header of an answer taken `fraction` s into a second
                return date + fraction - rtt / 2, date + 1.0 + fraction + rtt / 2

            expires = bounded_now(start + skew, bounds(start)) + ttl  # the operator's stamp
            ended = next(start + i / 100 for i in range(100_000)
                         if bounded_now(start + i / 100 + skew, bounds(start + i / 100)) >= expires)
            # The holder stops when even the latest the server's clock can read reaches the stamp, at
            # the latest when the server's clock itself does.
            assert ended >= expires, (start, fraction)
            assert ended - start >= ttl - 1.0 - rtt  # the lease is shorter by the bounds' width at most


def test_server_clock_bounds_from_a_date_header() -> None:
    clock = ServerClock()
    assert clock.bounds(5.0) is None
    clock.record("Sat, 28 Nov 2026 20:00:00 GMT", sent=10.0, received=10.2)
    earliest, latest = clock.bounds(12.0) or (0.0, 0.0)
    stamp = 1795896000.0
    assert earliest == pytest.approx(stamp + 1.8)
    assert latest == pytest.approx(stamp + 1.0 + 2.0)
    clock.record("Sat, 28 Nov 2026 20:00:00 GMT", sent=10.5, received=10.6)  # same header, parsed once
    assert clock.bounds(12.0) == (pytest.approx(stamp + 1.4), pytest.approx(stamp + 2.5))
    clock.record("not a date", sent=11.0, received=11.1)  # unreadable: the last bounds stand
    assert clock.bounds(12.0) == (pytest.approx(stamp + 1.4), pytest.approx(stamp + 2.5))


def test_the_operator_warns_once_of_a_clock_off_and_not_at_every_reading(caplog: pytest.LogCaptureFixture) -> None:
    server = ServerClock()
    server.record("Sat, 28 Nov 2026 20:00:00 GMT", sent=time.monotonic(), received=time.monotonic())
    own = ManualClock(1795896000.0 + 120.0)
    clock = server_bound(own, server)
    with caplog.at_level(logging.WARNING, logger="kubelock.operator"):
        readings = [clock.now() for _ in range(100)]
    assert all(r < 1795896000.0 + 2.0 for r in readings)  # the server's clock, not the node's
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ahead of the API server's" in warnings[0]
