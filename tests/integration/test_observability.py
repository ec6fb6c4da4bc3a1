"""Metrics scraped over HTTP from the running operator, and its decision log lines."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, V1Namespace, V1ObjectMeta

from tests.support.claims import Locks, status_of, wait_until
from tests.support.operator import OperatorProcess

# How long the metrics and the log may lag behind the claims' statuses on a loaded machine.
SETTLE_SECONDS = 60.0
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = frozenset(
            tuple(part.split("=", 1)) for part in re.findall(r'[a-zA-Z_]+="[^"]*"', match["labels"] or "")
        )
        labels = frozenset((k, v.strip('"')) for k, v in labels)
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    want = frozenset(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture
def observed(control_plane, admin_api: ApiClient, tmp_path: Path) -> Iterator[tuple[OperatorProcess, str]]:  # type: ignore[no-untyped-def]
    ns = f"klo-{secrets.token_hex(4)}"
    CoreV1Api(admin_api).create_namespace(V1Namespace(metadata=V1ObjectMeta(name=ns)))
    op = OperatorProcess(
        control_plane.kubeconfig,
        tmp_path / "op.log",
        namespaces=(ns,),
        metrics=True,
        extra_args=("--log-format", "json"),
    ).start()
    try:
        yield op, ns
    finally:
        op.stop()
        with contextlib.suppress(ApiException):
            CoreV1Api(admin_api).delete_namespace(ns)


def test_metrics_follow_a_scripted_scenario(observed: tuple[OperatorProcess, str], admin_api: ApiClient) -> None:
    op, ns = observed
    locks = Locks(admin_api, ns)
    before = scrape(op.metrics_port)
    assert value(before, "kubelock_grants_total", namespace=ns) == 0

    locks.claim("a", "deploy://one", "agent-a")
    locks.wait_phase("a", "Held")
    locks.claim("b", "deploy://one", "agent-b")
    locks.wait_phase("b", "Rejected")
    locks.claim("c", "deploy://one", "agent-c", wait=True)
    locks.wait_phase("c", "Pending")
    locks.claim("d", "deploy://one", "agent-d", wait=True, wait_timeout=1)
    locks.wait_phase("d", "TimedOut", timeout=60)
    locks.claim("e", "deploy://short", "agent-e", ttl=1)
    locks.wait_phase("e", "Expired", timeout=60)
    # A deadlock: a holds one, waits for two; f holds two, waits for one.
    locks.claim("f", "deploy://two", "agent-f")
    locks.wait_phase("f", "Held")
    locks.claim("a-two", "deploy://two", "agent-a", wait=True)
    locks.wait_phase("a-two", "Pending")
    locks.claim("f-one", "deploy://one", "agent-f", wait=True)
    locks.wait_phase("f-one", "Deadlocked")
    # The gauges as the operator last computed them: polled, as a scrape may come before that.
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        held = scrape(op.metrics_port)
        try:
            assert value(held, "kubelock_locks_held", namespace=ns) == 2
            assert value(held, "kubelock_claims_pending", namespace=ns) == 2  # c and a-two
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    # Admin break of a's lock: a is revoked, c (first in queue) is granted.
    locks.delete_lock(status_of(locks.get("a"))["lockName"])
    locks.wait_phase("a", "Revoked")
    locks.wait_phase("c", "Held")

    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        after = scrape(op.metrics_port)
        try:
            assert value(after, "kubelock_grants_total", namespace=ns) == 4  # a, e, f, c
            assert value(after, "kubelock_rejections_total", namespace=ns) == 1
            assert value(after, "kubelock_timeouts_total", namespace=ns) == 1
            assert value(after, "kubelock_expirations_total", namespace=ns) == 1
            assert value(after, "kubelock_deadlocks_total", namespace=ns) == 1
            assert value(after, "kubelock_revocations_total", namespace=ns, reason="LockBroken") == 1
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert value(after, "kubelock_acquire_latency_seconds_count") >= 4
    assert value(after, "kubelock_wait_seconds_count") >= 1  # c waited
    assert value(after, "kubelock_hold_seconds_count") >= 2  # e expired, a broken
    # e's expiry, timed from the end it was told to its Expired write (observed with the count above)
    assert value(after, "kubelock_expiry_lateness_seconds_count") == 1
    assert value(after, "kubelock_expiry_lateness_seconds_sum") >= 0
    assert value(after, "kubelock_reconcile_duration_seconds_count") > 0
    assert value(after, "kubelock_api_requests_total", verb="create") > 0
    assert value(after, "kubelock_api_requests_total", verb="update") > 0  # claim status, written whole
    # Bounded labels: no resource URI or holder ever appears in a label.
    for (name, labels), _ in after.items():
        for key, label in labels:
            assert "://" not in label and not label.startswith("agent-"), (name, key, label)


def test_one_json_log_line_per_decision(observed: tuple[OperatorProcess, str], admin_api: ApiClient) -> None:
    op, ns = observed
    locks = Locks(admin_api, ns)
    locks.claim("a", "github://acme/app/issues/9", "agent-a")
    locks.wait_phase("a", "Held")
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        entries = [json.loads(line) for line in op.log_lines() if line.startswith("{")]
        decisions = [e for e in entries if e.get("claim") == "a"]
        if decisions:
            break
        time.sleep(0.1)
    assert decisions, op.log_text()[-2000:]
    entry = decisions[0]
    assert entry["namespace"] == ns
    assert entry["resource"] == "github://acme/app/issues/9"
    assert entry["holder"] == "agent-a"
    assert entry["outcome"] == "Held"
    assert entry["reason"] == "Granted"
    assert entry["level"] == "info" and entry["time"].endswith("Z")


def test_watch_metrics_count_events_and_age(observed: tuple[OperatorProcess, str], admin_api: ApiClient) -> None:
    """kubelock_watch_events_total counts what each of the operator's own watches delivered and
    kubelock_watch_last_event_age_seconds how long ago the last came: the age grows while nothing
    happens and falls back when an event arrives."""
    op, ns = observed
    locks = Locks(admin_api, ns)

    def claim_watch() -> tuple[float, float | None]:
        samples = scrape(op.metrics_port)
        age = [v for (n, ls), v in samples.items()
               if n == "kubelock_watch_last_event_age_seconds" and {("kind", "claim"), ("scope", ns)} <= ls]
        return value(samples, "kubelock_watch_events_total", kind="claim", scope=ns), (age[0] if age else None)

    events, _ = claim_watch()
    locks.claim("w", "deploy://watched", "agent-w")
    locks.wait_phase("w", "Held")
    # The agent's create (ADDED) and the operator's Held status (MODIFIED) came through the claim
    # watch; the grant's lock through the lock watch.
    wait_until(lambda: claim_watch()[0] >= events + 2, "the claim watch to count the claim's two events",
               SETTLE_SECONDS)
    wait_until(lambda: value(scrape(op.metrics_port), "kubelock_watch_events_total", kind="lock", scope=ns) >= 1,
               "the lock watch to count the grant's lock", SETTLE_SECONDS)

    # Quiet: the age grows with the time between two reads (unless a bookmark came in between,
    # which the count shows).
    count_a, age_a = claim_watch()
    time.sleep(2.0)
    count_b, age_b = claim_watch()
    assert age_a is not None and age_b is not None
    if count_b == count_a:
        assert age_b >= age_a + 1.0, (age_a, age_b)

    # An event: the age falls back below the time since the write that caused it (the operator and
    # this test read the same monotonic clock of the machine).
    sent = time.monotonic()
    locks.renew("w", "watched")
    wait_until(lambda: claim_watch()[0] > count_b, "the claim watch to count the renewal", SETTLE_SECONDS)
    _, age_c = claim_watch()
    assert age_c is not None and age_c <= time.monotonic() - sent, (age_c, time.monotonic() - sent)
