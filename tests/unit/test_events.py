"""The Event recorder: routine (Normal) Events are rate-limited per namespace, Warning Events never
are, and what was not sent is counted."""

from __future__ import annotations

import asyncio
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.operator.events import ROUTINE_BURST, SUMMARY_NAMES, WARNING_BURST, EventRecorder, RoutineLimit


class Recording:
    """Stands in for the API client: keeps the Events it is asked to create."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body


class Counting:
    def __init__(self) -> None:
        self.unsent: list[str] = []

    def event_unsent(self, why: str) -> None:
        self.unsent.append(why)


def test_a_namespace_gets_its_burst_then_the_rate() -> None:
    limit = RoutineLimit(rate=2.0, burst=5)
    assert [limit.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limit.allow("b", 0.0), "namespaces have buckets of their own"
    assert not limit.allow("a", 0.4)  # 0.8 of a token
    assert limit.allow("a", 0.5)
    assert not limit.allow("a", 0.5)
    assert [limit.allow("a", 100.0) for _ in range(6)] == [True] * 5 + [False], "refills up to the burst only"


def test_rate_zero_sends_no_routine_event() -> None:
    assert not RoutineLimit(rate=0.0).allow("a", 0.0)


def test_routine_events_over_the_rate_are_counted_not_sent_and_warnings_always_go() -> None:
    async def scenario() -> tuple[Recording, Counting, EventRecorder]:
        clock = ManualClock()
        client, counting = Recording(), Counting()
        recorder = EventRecorder(client, clock, "test", routine_rate=1.0, unsent=counting)  # type: ignore[arg-type]
        recorder.start()
        burst = int(ROUTINE_BURST)
        for i in range(burst + 10):
            recorder.record("ns", f"c{i}", f"u{i}", "Granted", "granted", warning=False)
        for i in range(3):
            recorder.record("ns", f"c{i}", f"u{i}", "LeaseExpired", "expired", warning=True)
        clock.advance(2.0)
        recorder.record("ns", "late", "u-late", "Released", "released", warning=False)
        await recorder.drain()
        await recorder.stop()
        return client, counting, recorder

    client, counting, recorder = asyncio.run(scenario())
    reasons = [body["reason"] for body in client.created]
    assert reasons.count("Granted") == int(ROUTINE_BURST)
    assert reasons.count("LeaseExpired") == 3
    assert reasons.count("Released") == 1, "the bucket refilled with time"
    assert counting.unsent == ["limited"] * 10
    assert recorder.limited == 10


def test_a_burst_of_warnings_past_its_rate_is_sent_as_one_summary_a_second_naming_the_claims() -> None:
    async def scenario() -> tuple[Recording, Counting, EventRecorder]:
        clock = ManualClock()
        client, counting = Recording(), Counting()
        recorder = EventRecorder(
            client, clock, "test", unsent=counting, summary_seconds=3600  # type: ignore[arg-type]
        )
        recorder.start()
        burst = int(WARNING_BURST)
        for i in range(burst + 40):
            recorder.record("ns", f"c{i}", f"u{i}", "LeaseExpired", f"lease {i} expired", warning=True)
        recorder.record("ns", "d", "u-d", "Deadlocked", "a cycle", warning=True)  # a reason of its own
        recorder.record("other", "e", "u-e", "LeaseExpired", "expired", warning=True)  # a namespace too
        await recorder.drain()
        assert len(client.created) == burst + 2, "past the burst, nothing is sent one by one"
        recorder.summarise()
        recorder.summarise()  # nothing new: no second summary
        await recorder.drain()
        await recorder.stop()
        return client, counting, recorder

    client, counting, recorder = asyncio.run(scenario())
    assert all(body["type"] == "Warning" for body in client.created)
    summary = client.created[-1]
    assert len(client.created) == int(WARNING_BURST) + 3
    last = int(WARNING_BURST) + 39
    assert summary["involvedObject"]["name"] == f"c{last}" and summary["involvedObject"]["uid"] == f"u{last}"
    assert summary["message"].startswith("40 more claims: LeaseExpired in the last 1 s")
    first = [f"c{int(WARNING_BURST) + i}" for i in range(SUMMARY_NAMES)]
    assert ", ".join(first) + ", …" in summary["message"]
    assert summary["message"].endswith(f"the last: lease {int(WARNING_BURST) + 39} expired")
    assert recorder.summarised == 40 and counting.unsent == ["summarised"] * 40
