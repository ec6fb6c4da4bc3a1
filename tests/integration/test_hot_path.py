"""What an acquire+release cycle costs: the operator is the one deleter of a lock (a lock carries no
ownerReference the garbage collector would act on, and one whose claim went while no operator ran
goes when one starts), and routine Events are rate-limited per namespace while Warnings never are."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient, CoreV1Api

from tests.support.claims import Locks, wait_until
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess


@pytest.fixture
def iso_ns(admin_api: ApiClient) -> Iterator[str]:
    """A namespace no shared operator watches: the test runs its own."""
    with temporary_namespace(admin_api, "klh-") as name:
        yield name


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
        locks.claim("short", "deploy://events", "agent-a", ttl=1)
        locks.wait_phase("short", "Held")
        locks.wait_phase("short", "Expired", timeout=30)
        wait_until(lambda: ("LeaseExpired", "Warning") in _reasons(admin_api, iso_ns, "short"), "the Warning")
        locks.claim("next", "deploy://events", "agent-b")
        locks.wait_phase("next", "Held")
        locks.delete("next")
        wait_until(lambda: "Released for agent-b" in op.log_text(), "the release in the log")
        time.sleep(1)
    events = _reasons(admin_api, iso_ns, "short") + _reasons(admin_api, iso_ns, "next")
    assert {kind for _, kind in events} == {"Warning"}, events  # no Granted, no Released
