"""First answers for claims that enter the view while their resource's run waits for its writes
(`operator/busyanswers.py`): decided at once beside the run, only first answers taken."""

from __future__ import annotations

import asyncio
from typing import Any

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Claim, Decision, Policy
from kubelock.kube import paths
from kubelock.operator.busyanswers import BusyAnswers, Choice
from kubelock.operator.cache import Cache, Key
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from tests.support.arbitration import T0, claim, holding, lock_for, run
from tests.support.fakeapi import FakeApi

R = "deploy://api-prod"
KEY = ("a", R)


def test_only_a_running_resource_gets_a_decision_beside_its_run_and_one_at_a_time() -> None:
    calls: list[Key] = []
    release = asyncio.Event()

    async def decide_and_apply(key: Key, choose: Any) -> Choice:
        calls.append(key)
        await release.wait()
        return "nothing"

    async def scenario() -> None:
        running = {KEY}
        answers = BusyAnswers(decide_and_apply, lambda key: key in running, lambda key: None)
        answers.entered(("a", "deploy://other"))  # not running: the work queue takes it
        answers.entered(None)
        answers.entered(KEY)
        answers.entered(KEY)  # one decision at a time: this one's comes right after
        answers.entered(KEY)  # ... and it covers every claim that came meanwhile
        await asyncio.sleep(0)
        assert calls == [KEY] and answers.answering == [KEY]
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert calls == [KEY, KEY] and answers.answering == []
        answers.entered(KEY)
        await asyncio.sleep(0)
        assert calls == [KEY, KEY, KEY]
        await answers.stop()

    asyncio.run(scenario())


def _claim(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"u-{name}", "namespace": "a", "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"resource": R, "holder": f"agent-{name}", **spec},
    }


def _phase(api: FakeApi, name: str) -> str | None:
    return (api.objects[paths.claims("a", name)].get("status") or {}).get("phase")


def test_a_claim_created_while_its_resources_run_waits_on_a_write_is_answered_before_that_write_ends() -> None:
    """The run grants h and waits on h's Held write (under load: seconds); w, created meanwhile, is
    told Pending and t, a try-lock, Rejected before that write returns, not on the run's next round."""

    async def scenario() -> None:
        api, cache, reconciler, slow, answered = await _run_waiting_on_the_held_write()
        answered.set()  # w's answer is not held back here
        assert reconciler.queue.processing(KEY) and _phase(api, "h") is None  # waiting on h's Held write
        for name, wait in (("w", True), ("t", False)):
            cache.upsert_claim(api.put(paths.claims("a", name), _claim(name, wait=wait)))
            reconciler.busy_answers.entered(KEY)  # as the runtime does, before scheduling the key
            reconciler.schedule(KEY)
        for _ in range(20):
            await asyncio.sleep(0)
        assert (_phase(api, "h"), _phase(api, "w"), _phase(api, "t")) == (None, "Pending", "Rejected")
        slow.set()
        for _ in range(40):
            await asyncio.sleep(0)
        assert (_phase(api, "h"), _phase(api, "w"), _phase(api, "t")) == ("Held", "Pending", "Rejected")
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_decision_beside_the_run_takes_first_answers_only() -> None:
    """Never a grant or the end of another claim: those are the run's."""
    chosen: list[Choice] = []

    async def decide_and_apply(key: Key, choose: Any) -> Choice:
        holder = claim("h", 1, resource=R)
        lock = lock_for(holder, lease=30)
        new = claim("n", 2, resource=R, wait=True)
        decision: Decision = run([holding(holder, lock), new], lock, T0 + 31, resource=R)  # the lease ended
        claims: list[Claim] = [holding(holder, lock), new]
        result: Choice = choose(claims, decision)
        chosen.append(result)
        return result

    async def scenario() -> None:
        answers = BusyAnswers(decide_and_apply, lambda key: True, lambda key: None)
        answers.entered(KEY)
        await asyncio.sleep(0)
        await answers.stop()

    asyncio.run(scenario())
    [taken] = chosen
    # The decision expires h (its Expired status, its lock's deletion) and tells n, granted next and
    # overdue, Pending: only n's answer is taken.
    assert not isinstance(taken, str)
    assert [(type(a).__name__, a.claim.name, a.status.phase.value) for a in taken] == [  # type: ignore[attr-defined]
        ("SetStatus", "n", "Pending")
    ]


def _gated_reconciler(*gated: str) -> tuple[FakeApi, Cache, Reconciler, dict[str, asyncio.Event]]:
    """A reconciler (its queue started) whose status write of each claim named in `gated` waits until
    that claim's event in the returned dict is set."""
    clock = ManualClock(T0)
    api, cache = FakeApi(), Cache()
    reconciler = Reconciler(api, cache, Policy(), clock, EventRecorder(api, clock, "test"))  # type: ignore[arg-type]
    gates = {name: asyncio.Event() for name in gated}

    async def update(path: str, body: Any, default: Any) -> Any:
        for name, gate in gates.items():
            if path == paths.claims("a", name, status=True):
                await gate.wait()
        return default()

    api.react("update", update)
    reconciler.queue.start()
    return api, cache, reconciler, gates


async def _run_waiting_on_the_held_write() -> tuple[FakeApi, Cache, Reconciler, asyncio.Event, asyncio.Event]:
    """A run of KEY that granted h and waits on h's Held write (until `held` is set); a status write
    of w waits until `answered` is set."""
    api, cache, reconciler, gates = _gated_reconciler("h", "w")
    cache.upsert_claim(api.put(paths.claims("a", "h"), _claim("h")))
    reconciler.schedule(KEY)
    for _ in range(20):
        await asyncio.sleep(0)
    return api, cache, reconciler, gates["h"], gates["w"]


def test_the_runs_next_round_leaves_a_first_answer_being_written_beside_it_to_that_write() -> None:
    """Decided before that write's response, the run's next round would write the same answer again
    and fail on the claim's version (a 409 and a GET per claim)."""

    async def scenario() -> None:
        api, cache, reconciler, held, answered = await _run_waiting_on_the_held_write()
        cache.upsert_claim(api.put(paths.claims("a", "w"), _claim("w", wait=True)))
        reconciler.busy_answers.entered(KEY)
        reconciler.schedule(KEY)
        for _ in range(20):
            await asyncio.sleep(0)
        held.set()  # the run's Held write returns; its next round sees w without an answer
        for _ in range(40):
            await asyncio.sleep(0)
        answered.set()
        for _ in range(40):
            await asyncio.sleep(0)
        w_status = ("update", paths.claims("a", "w", status=True))
        assert api.requests.count(w_status) == 1
        assert (_phase(api, "h"), _phase(api, "w")) == ("Held", "Pending")
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_decision_beside_the_run_leaves_a_first_answer_the_run_is_writing_to_the_run() -> None:
    async def scenario() -> None:
        api, cache, reconciler, gates = _gated_reconciler("w")
        queued = gates["w"]
        cache.upsert_claim(api.put(paths.claims("a", "h"), _claim("h")))
        reconciler.schedule(KEY)
        for _ in range(40):
            await asyncio.sleep(0)
        assert _phase(api, "h") == "Held"
        cache.upsert_claim(api.put(paths.claims("a", "w"), _claim("w", wait=True)))
        reconciler.schedule(KEY)
        for _ in range(20):
            await asyncio.sleep(0)  # the run waits on w's Pending
        cache.upsert_claim(api.put(paths.claims("a", "t"), _claim("t", wait=False)))
        reconciler.busy_answers.entered(KEY)
        reconciler.schedule(KEY)
        for _ in range(20):
            await asyncio.sleep(0)
        assert _phase(api, "t") == "Rejected" and _phase(api, "w") is None
        queued.set()
        for _ in range(40):
            await asyncio.sleep(0)
        assert api.requests.count(("update", paths.claims("a", "w", status=True))) == 1
        assert _phase(api, "w") == "Pending"
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_claim_entering_while_answers_beside_the_run_are_written_is_answered_beside_them() -> None:
    """The run waits on h's Held write and w's Pending, decided beside it, waits on its own write
    (under load, each a second or more); t, a try-lock created meanwhile, is told Rejected before
    either returns, not on the run's next round behind both."""

    async def scenario() -> None:
        api, cache, reconciler, held, answered = await _run_waiting_on_the_held_write()
        for name, wait in (("w", True), ("t", False)):
            cache.upsert_claim(api.put(paths.claims("a", name), _claim(name, wait=wait)))
            reconciler.busy_answers.entered(KEY)  # as the runtime does, before scheduling the key
            reconciler.schedule(KEY)
            for _ in range(20):
                await asyncio.sleep(0)
        assert (_phase(api, "h"), _phase(api, "w"), _phase(api, "t")) == (None, None, "Rejected")
        held.set()
        answered.set()
        for _ in range(40):
            await asyncio.sleep(0)
        assert (_phase(api, "h"), _phase(api, "w"), _phase(api, "t")) == ("Held", "Pending", "Rejected")
        for name in ("w", "t"):
            assert api.requests.count(("update", paths.claims("a", name, status=True))) == 1, name
        await reconciler.stop()

    asyncio.run(scenario())
