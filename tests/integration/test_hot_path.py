"""What an acquire+release cycle costs: the operator is the one deleter of a lock (a lock carries no
ownerReference the garbage collector would act on, and one whose claim went while no operator ran
goes when one starts), and routine Events go one by one for a namespace's burst, then as summaries,
while Warnings are never dropped."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from tests.integration.test_observability import scrape, value
from tests.support.claims import GROUP, VERSION, Locks, status_of, wait_until
from tests.support.operator import OperatorProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _quiet_requests(op: OperatorProcess) -> Samples:
    """The operator's API request counters once they have stood still for a second (at most 60 s).

    A fixed half second for "whatever it wrote is done" can be too short on a loaded machine, and a
    write that comes after it would be counted as the handoff's."""
    last = scrape(op.metrics_port)
    deadline = time.monotonic() + 60
    while True:
        time.sleep(1)
        now = scrape(op.metrics_port)
        if _requests(now) == _requests(last) or time.monotonic() > deadline:
            return now
        last = now


def _requests(samples: Samples) -> Samples:
    return {key: count for key, count in samples.items() if key[0] == "kubelock_api_requests_total"}


def _reasons(admin_api: ApiClient, ns: str, name: str) -> list[tuple[str, str]]:
    items = CoreV1Api(admin_api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.type) for e in items]



def test_a_lock_released_while_no_operator_runs_goes_when_one_starts(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,)):
        locks.claim("a", "deploy://one-deleter", "agent-a")
        locks.wait_phase("a", "Held")
        (lock,) = locks.locks()
        assert not lock["metadata"].get("ownerReferences"), "the garbage collector would race the operator"
    locks.delete("a")  # released while no operator runs
    time.sleep(3)  # the garbage collector has had time to act, had the lock an owner
    assert [lk["metadata"]["uid"] for lk in locks.locks()] == [lock["metadata"]["uid"]]
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "op2.log", namespaces=(iso_ns,)):
        wait_until(lambda: not locks.locks(), "the released lock to be deleted by the new operator")
        locks.claim("b", "deploy://one-deleter", "agent-b")
        locks.wait_phase("b", "Held")


def test_an_exclusive_handoff_is_one_update_of_the_lock_with_a_larger_token(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The holder releases, and the operator hands the lock to the waiter in one PATCH of the same
    ResourceLock (no deletion, no create): the lock's watch shows one MODIFIED event naming the new
    holder, whose token is that write's revision, above the one before. Admission (the token policy)
    accepts the write as it is."""
    resource = "deploy://handoff"
    locks = Locks(admin_api, iso_ns)
    op = OperatorProcess(
        control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,), metrics=True,
        extra_args=("--routine-event-rate", "0"),  # no Granted/Released Events: the writes are the lock's
    )
    with op:
        locks.claim("first", resource, "agent-a")
        first = status_of(locks.wait_phase("first", "Held"))["fencingToken"]
        locks.claim("next", resource, "agent-b", wait=True)
        locks.wait_phase("next", "Pending")
        (lock,) = locks.locks()
        before = _quiet_requests(op)  # whatever the waiter's arrival wrote is done
        locks.delete("first")
        held = locks.wait_phase("next", "Held")
        after = _quiet_requests(op)
    writes = {
        verb: value(after, "kubelock_api_requests_total", verb=verb)
        - value(before, "kubelock_api_requests_total", verb=verb)
        for verb in ("create", "delete", "patch", "update")
    }
    # The lock's one PATCH; the waiter's Held status, a PUT of its status subresource.
    assert writes == {"create": 0, "delete": 0, "patch": 1, "update": 1}, writes
    events = []
    for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
        CustomObjectsApi(admin_api).list_namespaced_custom_object, GROUP, VERSION, iso_ns, "resourcelocks",
        resource_version=lock["metadata"]["resourceVersion"], timeout_seconds=5,
    ):
        body = event["object"]
        events.append((event["type"], body["metadata"]["uid"], body["spec"]["claimRef"]["name"]))
        if body["spec"]["claimRef"]["name"] == "next":
            break
    assert events == [("MODIFIED", lock["metadata"]["uid"], "next")], events
    (handed,) = locks.locks()
    token = status_of(held)["fencingToken"]
    assert token > first and token == int(handed["metadata"]["resourceVersion"])  # nothing wrote it since
    assert handed["spec"]["holder"] == "agent-b" and handed["spec"]["fencingToken"] == 0
    assert handed["spec"]["acquireTime"] > lock["spec"]["acquireTime"]


def test_routine_events_are_rate_limited_and_warnings_never(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """With a rate of 0 no routine Event is sent at all, and the Warnings of an expiry (Stale, then
    LeaseExpired) still are."""
    locks = Locks(admin_api, iso_ns)
    op = OperatorProcess(
        control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,), extra_args=("--routine-event-rate", "0")
    )
    with op:
        with locks.history() as seen:  # Held for 5 s only: a poll held up longer would find it Expired
            locks.claim("short", "deploy://events", "agent-a", ttl=5)
            seen.wait_phase("short", "Held")
        locks.wait_phase("short", "Expired")
        wait_until(lambda: ("LeaseExpired", "Warning") in _reasons(admin_api, iso_ns, "short"), "the Warning")
        locks.claim("next", "deploy://events", "agent-b")
        locks.wait_phase("next", "Held")
        locks.delete("next")
        wait_until(lambda: "Released for agent-b" in op.log_text(), "the release in the log")
        time.sleep(1)
    events = _reasons(admin_api, iso_ns, "short") + _reasons(admin_api, iso_ns, "next")
    assert {kind for _, kind in events} == {"Warning"}, events  # no Granted, no Released


def test_a_burst_of_grants_past_the_routine_burst_is_summarised_and_each_claim_counted_once(
    control_plane,
    admin_api: ApiClient,
    iso_ns: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """30 claims granted, then released (60 routine Events) in a namespace: its Events are the first 25
    Granted one by one, then Normal summaries, one per reason and period, whose counts cover the other
    35 exactly. A claim granted past the burst has no Granted Event of its own and shows Held, with its
    Held condition, in its status like any other (what `kubectl describe lockclaim` shows)."""
    cycles, burst = 30, 25
    locks = Locks(admin_api, iso_ns)
    names = [f"c{i}" for i in range(cycles)]
    op = OperatorProcess(
        control_plane.kubeconfig, tmp_path / "op.log", namespaces=(iso_ns,),
        extra_args=("--routine-event-summary-seconds", "2"),
    )

    def normal() -> tuple[list[str], list[str]]:
        events = [e for e in CoreV1Api(admin_api).list_namespaced_event(iso_ns).items if e.type == "Normal"]
        summaries = [f"{e.reason}: {e.message}" for e in events if " more claims: " in e.message]
        singles = [f"{e.reason} {e.involved_object.name}" for e in events if " more claims: " not in e.message]
        return singles, summaries

    def covered() -> int:
        singles, summaries = normal()
        return len(singles) + sum(int(m.split(": ")[1].split()[0]) for m in summaries)

    with op:
        for name in names:
            locks.claim(name, f"deploy://burst/{name}", f"agent-{name}")
        held = {name: status_of(body) for name, body in zip(names, locks.wait_phases(names, "Held"), strict=True)}
        wait_until(lambda: len(normal()[0]) == burst, "the burst of Granted Events")
        late = [n for n in names if f"Granted {n}" not in normal()[0]]
        assert len(late) == cycles - burst
        for name in late:
            condition = next(c for c in held[name]["conditions"] if c["type"] == "Held")
            assert held[name]["reason"] == "Granted" and condition["status"] == "True", held[name]
        for name in names:
            locks.delete(name)
        wait_until(lambda: covered() >= 2 * cycles, "every grant's and release's Event sent or summarised")
        time.sleep(3)  # a summary period more: nothing further comes
        singles, summaries = normal()
    assert sorted(singles) == sorted(f"Granted {n}" for n in names if n not in late), singles
    assert covered() == 2 * cycles, (singles, summaries)
    assert {m.split(":")[0] for m in summaries} == {"Granted", "Released"}, summaries
    assert len(summaries) < 2 * cycles - burst, "fewer writes than the Events they cover"
    assert all("(a namespace's Normal Events past 25, then 1 every 300 s, are summarised every 2 s)" in m
               for m in summaries), summaries
