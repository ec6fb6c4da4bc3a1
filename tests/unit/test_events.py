"""The Event recorder: routine (Normal) Events go one by one for a namespace's burst, then as one
summary per namespace and reason a minute; Warning Events are never dropped, a burst of them is
summarised each second; and what was not sent one by one is counted."""

from __future__ import annotations

import asyncio
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.kube import paths
from kubelock.operator.events import (
    ROUTINE_BURST,
    SUMMARY_NAMES,
    WARNING_BURST,
    EventRecorder,
    RoutineLimit,
)
from tests.support.fakeapi import FakeApi


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


def test_rate_zero_sends_no_routine_event_nor_summary_and_warnings_still_go() -> None:
    assert not RoutineLimit(rate=0.0).allow("a", 0.0)

    async def scenario() -> tuple[Recording, Counting, EventRecorder]:
        clock = ManualClock()
        client, counting = Recording(), Counting()
        recorder = EventRecorder(client, clock, "test", routine_rate=0.0, unsent=counting)  # type: ignore[arg-type]
        recorder.start()
        for i in range(30):
            recorder.record("ns", f"c{i}", f"u{i}", "Granted", "granted", warning=False)
        recorder.record("ns", "x", "u-x", "LeaseExpired", "expired", warning=True)
        clock.advance(3600)
        recorder.summarise()
        await recorder.drain()
        await recorder.stop()
        return client, counting, recorder

    client, counting, recorder = asyncio.run(scenario())
    assert [(body["reason"], body["type"]) for body in client.created] == [("LeaseExpired", "Warning")]
    assert counting.unsent == ["limited"] * 30 and recorder.limited == 30 and recorder.summarised == 0


def _grants_and_releases(recorder: EventRecorder, namespace: str, count: int, tag: str = "") -> None:
    for i in range(count):
        recorder.record(namespace, f"g{tag}{i}", f"ug{tag}{i}", "Granted", f"granted {tag}{i}", warning=False)
        recorder.record(namespace, f"g{tag}{i}", f"ug{tag}{i}", "Released", f"released {tag}{i}", warning=False)


def test_routine_events_go_one_by_one_for_the_burst_then_as_one_summary_per_namespace_and_reason() -> None:
    """30 acquire+release cycles in a namespace: the first 25 Events one by one, the other 35 in two
    summaries (Granted, Released) that count and name them; another namespace has its own burst."""
    burst = int(ROUTINE_BURST)

    async def scenario() -> tuple[Recording, Counting, EventRecorder, int]:
        clock = ManualClock()
        client, counting = Recording(), Counting()
        recorder = EventRecorder(client, clock, "test", unsent=counting)  # type: ignore[arg-type]
        recorder.start()
        _grants_and_releases(recorder, "ns", 30)
        _grants_and_releases(recorder, "other", 2)
        await recorder.drain()
        one_by_one = len(client.created)
        clock.advance(42)
        recorder.summarise()
        recorder.summarise()  # nothing new: no second summary
        await recorder.drain()
        await recorder.stop()
        return client, counting, recorder, one_by_one

    client, counting, recorder, one_by_one = asyncio.run(scenario())
    assert one_by_one == burst + 4, "past the burst nothing is sent one by one"
    assert all(body["type"] == "Normal" for body in client.created)
    singles = [b["involvedObject"]["name"] for b in client.created[:one_by_one] if b["metadata"]["namespace"] == "ns"]
    assert singles == [f"g{i // 2}" for i in range(burst)], "each of the burst is its claim's own Event"
    summaries = {body["reason"]: body for body in client.created[one_by_one:]}
    assert len(client.created) == one_by_one + 2 and set(summaries) == {"Granted", "Released"}
    granted, released = summaries["Granted"], summaries["Released"]
    assert granted["message"].startswith(
        "17 more claims: Granted in the last 42 s (a namespace's Normal Events past 25, then 1 every 300 s, "
        "are summarised every 60 s): g13, g14,"
    ), granted["message"]
    assert ", ".join(f"g{13 + i}" for i in range(SUMMARY_NAMES)) + ", …; the last: granted 29" in granted["message"]
    assert released["message"].startswith("18 more claims: Released in the last 42 s")
    assert granted["involvedObject"]["name"] == released["involvedObject"]["name"] == "g29", "about the last claim"
    assert granted["involvedObject"]["uid"] == "ug29"
    assert recorder.summarised == 35 and counting.unsent == ["summarised"] * 35 and recorder.limited == 0


def test_a_namespace_past_its_routine_burst_gets_one_event_back_every_300_s() -> None:
    async def scenario() -> list[str]:
        clock = ManualClock()
        client = Recording()
        recorder = EventRecorder(client, clock, "test")  # type: ignore[arg-type]
        recorder.start()
        for i in range(int(ROUTINE_BURST) + 1):
            recorder.record("ns", f"c{i}", f"u{i}", "Granted", "granted", warning=False)
        clock.advance(299)
        recorder.record("ns", "early", "u-early", "Granted", "granted", warning=False)  # folded
        clock.advance(1)
        recorder.record("ns", "refilled", "u-refilled", "Granted", "granted", warning=False)
        recorder.record("ns", "next", "u-next", "Granted", "granted", warning=False)  # folded
        await recorder.drain()
        await recorder.stop()
        return [body["involvedObject"]["name"] for body in client.created]

    sent = asyncio.run(scenario())
    assert sent == [f"c{i}" for i in range(int(ROUTINE_BURST))] + ["refilled"]


def test_routine_summaries_have_their_own_period_and_do_not_hurry_warning_summaries() -> None:
    """Summaries go out on their own: the routine ones each `routine_summary_seconds`, the Warnings'
    each `summary_seconds` (here an hour, so none in the test)."""

    async def scenario() -> list[tuple[str, str]]:
        client = Recording()
        recorder = EventRecorder(
            client, ManualClock(), "test", summary_seconds=3600, routine_summary_seconds=0.05  # type: ignore[arg-type]
        )
        recorder.start()
        _grants_and_releases(recorder, "ns", 20)
        for i in range(int(WARNING_BURST) + 5):
            recorder.record("ns", f"e{i}", f"ue{i}", "LeaseExpired", "expired", warning=True)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if len(client.created) == int(ROUTINE_BURST) + int(WARNING_BURST) + 2:
                break
        await recorder.drain()
        await recorder.stop()
        return [(body["reason"], body["message"].split(":")[0]) for body in client.created]

    sent = asyncio.run(scenario())
    assert sent.count(("Granted", "7 more claims")) == 1 and sent.count(("Released", "8 more claims")) == 1, sent
    assert not [m for _, m in sent if "LeaseExpired" in m], "the Warnings' summary waits for its own period"
    assert len(sent) == int(ROUTINE_BURST) + int(WARNING_BURST) + 2


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
    assert summary["message"].startswith(
        "40 more claims: LeaseExpired in the last 1 s (Warnings over 1 a second are summarised): "
    )
    first = [f"c{int(WARNING_BURST) + i}" for i in range(SUMMARY_NAMES)]
    assert ", ".join(first) + ", …" in summary["message"]
    assert summary["message"].endswith(f"the last: lease {int(WARNING_BURST) + 39} expired")
    assert recorder.summarised == 40 and counting.unsent == ["summarised"] * 40


def test_an_event_that_is_not_routine_goes_one_by_one_past_the_burst_and_at_rate_zero() -> None:
    """A LockPolicy's `PolicyRemoved`: rare and an admin's act, never folded into a summary of claims
    nor limited by the routine rate."""

    async def scenario(rate: float) -> Recording:
        clock = ManualClock()
        client = Recording()
        recorder = EventRecorder(client, clock, "test", routine_rate=rate)  # type: ignore[arg-type]
        recorder.start()
        for i in range(int(ROUTINE_BURST) + 5):
            recorder.record("ns", f"c{i}", f"u{i}", "Granted", "granted", warning=False)
        for i in range(3):
            recorder.record("ns", f"p{i}", f"pu{i}", "PolicyRemoved", "deleted", warning=False, kind="LockPolicy",
                            routine=False)
        await recorder.drain()
        await recorder.stop()
        return client

    for rate in (0.0, 1 / 300):
        created = asyncio.run(scenario(rate)).created
        removed = [b["involvedObject"] for b in created if b["reason"] == "PolicyRemoved"]
        assert [(o["kind"], o["name"], o["uid"], o["namespace"]) for o in removed] == [
            ("LockPolicy", f"p{i}", f"pu{i}", "ns") for i in range(3)
        ], rate


def test_an_event_every_replica_records_once_is_kept_once() -> None:
    """Two replicas each record a deleted policy's Event: it is named after the policy's uid, so the
    API server keeps the first create; the second meets it (409) and is dropped without a warning."""

    async def scenario() -> FakeApi:
        api, clock = FakeApi(), ManualClock()
        recorders = [EventRecorder(api, clock, f"replica-{i}") for i in range(2)]  # type: ignore[arg-type]
        for recorder in recorders:
            recorder.start()
        for recorder in recorders:
            recorder.record("ns", "wide", "7f1c", "PolicyRemoved", "deleted", warning=False, kind="LockPolicy",
                            routine=False, once=True)
            recorder.record("ns", "c1", "u1", "Granted", "granted", warning=False)  # named by the server
            await recorder.drain()
            await recorder.stop()
        return api

    api = asyncio.run(scenario())
    events = [b for path, b in api.objects.items() if path.startswith(paths.events("ns"))]
    removed = [b for b in events if b["reason"] == "PolicyRemoved"]
    assert [b["metadata"]["name"] for b in removed] == ["wide.policyremoved.7f1c"]
    assert removed[0]["reportingInstance"] == "replica-0"
