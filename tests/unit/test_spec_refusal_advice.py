"""A claim refused for what its spec asks says what to change: the operator's message is all a
newcomer sees (status.message, the Warning Event, the SDK's and the CLI's error)."""

from __future__ import annotations

from kubelock.domain.model import PodLiveness, Policy
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.specadvice import permits_over_capacity
from tests.support.arbitration import RES, T0, claim, only_status, run


def test_a_ttl_above_the_cluster_maximum_names_the_most_it_may_ask_for() -> None:
    status = only_status(run([claim("a", 5, ttl_seconds=7200)], None, T0, Policy(max_ttl_seconds=3600))).status
    assert (status.phase, status.reason) == (Phase.REJECTED, Reason.INVALID_SPEC)
    assert status.message == (
        "ttlSeconds 7200 exceeds the maximum of 3600 (operator setting maxTtlSeconds); ask for at most 3600 "
        "and renew the lease by heartbeat while the work lasts"
    )


def test_permits_beyond_the_capacity_name_the_most_that_fit_and_who_can_raise_it() -> None:
    status = only_status(run([claim("big", 5, permits=4)], [], T0 + 1, capacity=3)).status
    assert (status.phase, status.reason) == (Phase.REJECTED, Reason.INVALID_SPEC)
    assert status.message == (
        f"permits 4 exceed the capacity 3 of {RES}; ask for at most 3 (or have a lock admin raise the capacity "
        "with a LockPolicy)"
    )


def test_permits_beyond_several_capacities_name_the_smallest() -> None:
    assert permits_over_capacity(5, [("r://a", 4), ("r://b", 2)]) == (
        "permits 5 exceed the capacity of r://a (4), r://b (2); ask for at most 2 (or have a lock admin raise the "
        "capacity with a LockPolicy)"
    )


def test_a_pod_ref_naming_no_pod_says_to_fix_or_drop_it() -> None:
    status = only_status(run([claim("a", 5, pod_name="ghost", pod=PodLiveness.MISSING)], None, T0)).status
    assert (status.phase, status.reason) == (Phase.REJECTED, Reason.POD_NOT_FOUND)
    assert status.message is not None and status.message.startswith("pod ghost does not exist; set spec.podRef to")
    assert "leave podRef out" in status.message
