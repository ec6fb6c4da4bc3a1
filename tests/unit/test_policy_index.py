"""The operator's index of LockPolicies: filled from LISTs and watch events, it answers which policy
governs a resource and the resource's capacity, and tells which resources a change touches."""

from __future__ import annotations

from typing import Any

from kubelock.domain.lockpolicy import DEFAULT
from kubelock.operator.policies import PolicyIndex, changed, policy_view, snapshot


def body(name: str, prefix: str, namespace: str = "ns", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubelock.dev/v1alpha1",
        "kind": "LockPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"resourcePrefix": prefix, **spec},
    }


def test_a_policy_body_reads_as_the_domains_value_with_defaults() -> None:
    namespace, policy = policy_view(body("p", "deploy://", maxWaitingPerHolder=3))
    assert namespace == "ns"
    assert (policy.name, policy.prefix, policy.capacity, policy.lock_delay_seconds) == ("p", "deploy://", 1, 0)
    assert policy.quotas.max_waiting_per_holder == 3 and policy.quotas.max_held_per_holder is None


def test_capacity_of_follows_the_longest_prefix_of_the_claims_namespace() -> None:
    index = PolicyIndex()
    index.upsert(body("all", "", capacity=2))
    index.upsert(body("deploys", "deploy://", capacity=4))
    index.upsert(body("elsewhere", "deploy://", namespace="other", capacity=9))
    assert index.capacity_of("ns", "deploy://api") == 4
    assert index.capacity_of("ns", "github://x") == 2
    assert index.capacity_of("other", "deploy://api") == 9
    assert index.policy_for("third", "deploy://api") is DEFAULT
    assert index.capacity_of("third", "deploy://api") == 1
    index.delete(body("deploys", "deploy://"))
    assert index.capacity_of("ns", "deploy://api") == 2


def test_a_change_touches_exactly_the_resources_it_governs_or_governed() -> None:
    index = PolicyIndex()
    index.upsert(body("deploys", "deploy://", capacity=2))
    keys = {("ns", "deploy://api"), ("ns", "github://x"), ("other", "deploy://api")}
    before = snapshot(index, keys, ["ns"])
    index.upsert(body("deploys", "deploy://", capacity=3))
    assert [(k, p.capacity) for k, p in changed(index, before)] == [(("ns", "deploy://api"), 3)]
    before = snapshot(index, keys, ["ns"])
    index.upsert(body("deploys", "github://"))  # the prefix moved: both the old and the new resources
    assert [k for k, _ in changed(index, before)] == [("ns", "deploy://api"), ("ns", "github://x")]


def test_a_full_list_replaces_the_scope_and_drops_what_it_no_longer_has() -> None:
    index = PolicyIndex()
    index.upsert(body("gone", "deploy://", capacity=5))
    index.upsert(body("kept", "x://", namespace="other"))
    touched = index.replace([body("new", "deploy://", capacity=2)], within=lambda ns: ns == "ns")
    assert touched == {"ns"}
    assert index.capacity_of("ns", "deploy://api") == 2
    assert index.policy_for("other", "x://y").name == "kept"  # outside the LIST's scope: untouched
    assert len(index) == 2
