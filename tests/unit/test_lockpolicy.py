"""Which LockPolicy governs a resource: the longest prefix of the namespace's policies, ties by name."""

from __future__ import annotations

import itertools
import random

import pytest

from kubelock.domain.lockpolicy import DEFAULT, LockPolicy, PrefixLookup, Quotas, removed_message, select

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


def test_the_prefix_lookup_selects_as_the_walk_over_every_policy_does() -> None:
    """Hundreds of policies, many of one prefix and many whose prefixes all match one resource: the
    lookup picks what `select` picks, for resources matched by some, all or none of them."""
    rng = random.Random(7)
    target = "deploy://acme/app/prod"
    for _ in range(50):
        prefixes = [target[: rng.randrange(len(target) + 1)] for _ in range(200)] + ["git://", "d"]
        policies = [
            LockPolicy(f"p{rng.randrange(1000):03d}", rng.choice(prefixes)) for _ in range(rng.randrange(1, 200))
        ]
        lookup = PrefixLookup(policies)
        for resource in (target, target + "/x", "deploy://", "d", "git://x", "other://y", ""):
            assert lookup.select(resource) == select(policies, resource), resource
    assert PrefixLookup([]).select(target) is DEFAULT
