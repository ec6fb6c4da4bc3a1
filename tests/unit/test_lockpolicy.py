"""Which LockPolicy governs a resource: the longest prefix of the namespace's policies, ties by name."""

from __future__ import annotations

import itertools

import pytest

from kubelock.domain.lockpolicy import DEFAULT, LockPolicy, Quotas, removed_message, select

ALL = LockPolicy("all", "", capacity=2)
GITHUB = LockPolicy("github", "github://", capacity=3)
ACME = LockPolicy("acme", "github://acme/", capacity=5)
ACME_TOO = LockPolicy("acme-too", "github://acme/", capacity=7)


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("github://acme/app/pr/1", "acme"),  # longest prefix; "acme" sorts before "acme-too"
        ("github://other/app", "github"),
        ("deploy://api-prod", "all"),  # "" governs every resource
        ("github://acme", "github"),  # a prefix is a plain string prefix: no "/" to spare
    ],
)
def test_the_longest_prefix_wins_and_ties_go_to_the_first_name(resource: str, expected: str) -> None:
    policies = [ALL, GITHUB, ACME, ACME_TOO]
    for order in itertools.permutations(policies):  # whatever order the watch delivered them in
        assert select(order, resource).name == expected


def test_no_policy_means_capacity_one_no_delay_no_quota() -> None:
    chosen = select([GITHUB], "deploy://x")
    assert chosen is DEFAULT
    assert (chosen.capacity, chosen.lock_delay_seconds, chosen.quotas.any) == (1, 0, False)
    assert chosen.describe() == "the default policy"


def test_quotas_know_whether_any_is_set() -> None:
    assert not Quotas().any
    assert Quotas(max_waiting_per_namespace=3).any


def test_a_removed_policy_s_message_names_it_and_what_it_governed() -> None:
    policy = LockPolicy(name="deploys", prefix="deploy://", capacity=2)
    message = removed_message(policy, 2, 3)
    assert message.startswith("LockPolicy deploys (resourcePrefix 'deploy://', capacity 2) was deleted")
    assert "governed 2 resources with 3 claims" in message
    assert "governed 1 resource with 1 claim," in removed_message(policy, 1, 1)
    assert "governed 0 resources with 0 claims" in removed_message(policy, 0, 0)
