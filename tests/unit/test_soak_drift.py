"""The soak's drift rule on hand-made histories: latency, grant rate and memory that move after the
warm-up fail the soak; noise within the bounds does not."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from chaos.history import Attempt, LockLife  # noqa: E402
from chaos.soak import Window, drift  # noqa: E402

T0 = 1_000_000.0
MINUTES = 30


def history(latency_at: dict[int, float], grants_at: dict[int, int]) -> tuple[list[Attempt], list[LockLife]]:
    """Ten try-locks a minute with the latency of that minute, and the given grants per minute."""
    attempts, locks = [], []
    for minute in range(MINUTES):
        for i in range(10):
            start = T0 + minute * 60 + i * 6
            latency = latency_at.get(minute, 0.1)
            attempts.append(Attempt("a", "r", False, start, start + latency, "Rejected"))
        for i in range(grants_at.get(minute, 100)):
            created = T0 + minute * 60 + i * 0.5
            locks.append(LockLife(f"l{minute}-{i}", "r", "a", f"c{minute}-{i}", 10, 10, created, created + 0.1, None))
    return attempts, locks


def windows(rss: dict[int, float]) -> list[Window]:
    return [Window(start=T0 + m * 60, rss_mb=rss.get(m, 90.0)) for m in range(MINUTES)]


def checks(found: list[object]) -> list[str]:
    return [str(v) for v in found]


def test_a_steady_soak_does_not_drift() -> None:
    attempts, locks = history({m: 0.1 + 0.01 * (m % 3) for m in range(MINUTES)}, {})
    found, lines = drift(T0, MINUTES, windows({m: 90 + (m % 4) for m in range(MINUTES)}), 60, attempts, locks)
    assert found == []
    assert any("reference minutes 10-15" in line for line in lines)


def test_latency_that_grows_after_the_warm_up_is_drift() -> None:
    attempts, locks = history({m: 0.1 if m < 25 else 0.14 for m in range(MINUTES)}, {})
    found, _ = drift(T0, MINUTES, windows({}), 60, attempts, locks)
    assert [v.check for v in found] == ["drift", "drift"]  # p50 and p95
    assert "p50" in str(found[0])


def test_a_slow_warm_up_is_not_drift() -> None:
    attempts, locks = history({m: 0.5 for m in range(10)}, {m: 50 for m in range(10)})
    found, _ = drift(T0, MINUTES, windows({m: 60 + 3 * m for m in range(10)}), 60, attempts, locks)
    assert found == []


def test_getting_faster_is_not_drift() -> None:
    attempts, locks = history({m: 0.5 if m < 20 else 0.1 for m in range(MINUTES)}, {m: 130 for m in range(20, 30)})
    assert drift(T0, MINUTES, windows({}), 60, attempts, locks)[0] == []


def test_a_falling_grant_rate_is_drift() -> None:
    attempts, locks = history({}, {m: 85 for m in range(25, MINUTES)})
    found, _ = drift(T0, MINUTES, windows({}), 60, attempts, locks)
    assert len(found) == 1 and "grants per minute" in str(found[0])


def test_memory_that_creeps_after_minute_ten_is_drift() -> None:
    attempts, locks = history({}, {})
    found, _ = drift(T0, MINUTES, windows({m: 90 + 0.3 * max(0, m - 10) for m in range(MINUTES)}), 60,
                     attempts, locks)
    assert len(found) == 1 and "RSS" in str(found[0])


def test_a_short_soak_fails_only_on_gross_drift() -> None:
    attempts, locks = history({}, {})
    short = [Window(start=T0, rss_mb=80, p95=0.2), Window(start=T0 + 10, rss_mb=100, p95=0.3)]
    assert drift(T0, 1, short, 10, attempts, locks)[0] == []
    short[-1].rss_mb = 130
    assert len(drift(T0, 1, short, 10, attempts, locks)[0]) == 1
