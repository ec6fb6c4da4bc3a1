"""#4's aiming of lease ends (bench/scenarios.py): the whole-second TTL that puts a renewed lease's
end inside the window, and the spread and busiest second reported. bench/ is a directory of
scripts, not a package: it is put on the path as `bench/run.py` has it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
scenarios: Any = importlib.import_module("scenarios")


@pytest.mark.parametrize("window", [1.0, 2.0, 5.5])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.49, 0.5, 0.51, 0.7, 0.99])
def test_the_end_falls_inside_the_window_for_any_renewal_instant(window: float, fraction: float) -> None:
    opens = 1000.0
    renewed = 980.0 + fraction  # the observed renewal's sub-second part is whatever it is
    for slot in (opens + window * k / 10 for k in range(11)):
        ttl = scenarios._ttl_towards(slot, renewed, opens, window)
        assert isinstance(ttl, int)
        assert opens <= renewed + ttl <= opens + window, (slot, ttl)


def test_of_two_ends_inside_the_nearer_to_the_slot_is_taken() -> None:
    assert scenarios._ttl_towards(1003.2, 980.0, 1000.0, 5.5) == 23
    assert scenarios._ttl_towards(1003.7, 980.0, 1000.0, 5.5) == 24


def test_a_renewal_too_late_for_the_window_gets_the_shortest_lease() -> None:
    assert scenarios._ttl_towards(1000.5, 1001.0, 1000.0, 1.0) == 1


def test_the_spread_and_the_busiest_second() -> None:
    ends = [10.0, 10.2, 10.4, 10.9, 11.5, 14.0]
    summary = scenarios._summed([0.1] * len(ends), ends, 5.5, 1)
    assert summary.window == pytest.approx(4.0)
    assert summary.busiest_second == 4  # 10.0 .. 10.9 (11.0 would be the fifth)
    assert (summary.aimed, summary.outside) == (5.5, 1)


def test_a_pass_made_again_waits_for_the_pace_the_given_up_one_went() -> None:
    # 1 000 claims granted at the pace they were created (5 s at 200 a second): the grants alone open
    # the window 15 s on, but after a pass given up at 40 ms a renewal the next needs 40 s.
    assert scenarios._aiming_time(1000, 200.0, 5.0, 0.04) == pytest.approx(65.0)
    # ... and when renewals are quick, the grants' pace still sets it.
    assert scenarios._aiming_time(1000, 200.0, 5.0, 0.001) == pytest.approx(15.0)
    assert scenarios._aiming_time(1000, 200.0, 12.0, 0.001) == pytest.approx(29.0)
