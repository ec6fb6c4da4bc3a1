"""Holder names `<identity>/<instance>`: identities that cannot collide, instances, short forms."""

from __future__ import annotations

import pytest

from kubelock.domain import holder
from kubelock.domain.resource import claim_name


@pytest.mark.parametrize(
    ("username", "pod", "identity"),
    [
        ("alice", None, "user:alice"),
        ("agent-a", None, "user:agent-a"),  # a user named like a pod is still a user
        ("system:serviceaccount:t1:agent", None, "sa:t1/agent"),
        ("system:serviceaccount:t1:agent", "agent-a", "pod:t1/agent-a"),
        ("system:serviceaccount:t2:agent", "agent-a", "pod:t2/agent-a"),  # same pod name, other namespace
        ("system:serviceaccount:broken", "agent-a", "user:system:serviceaccount:broken"),
        ("https://issuer.example/#1234", None, "user:https://issuer.example/#1234"),
    ],
)
def test_identity_of(username: str, pod: str | None, identity: str) -> None:
    assert holder.identity_of(username, pod) == identity


def test_kinds_never_collide() -> None:
    names = {
        holder.identity_of("agent-a"),
        holder.identity_of("pod:t1/agent-a"),  # a user named like a pod's identity
        holder.identity_of("system:serviceaccount:t1:agent", "agent-a"),
        holder.identity_of("system:serviceaccount:t2:agent", "agent-a"),
        holder.identity_of("system:serviceaccount:t1:agent"),
    }
    assert len(names) == 5


@pytest.mark.parametrize("bad", ["", "a/b", "-a", "a-", "a b", "x" * 64, "ä"])
def test_invalid_instances(bad: str) -> None:
    with pytest.raises(holder.InvalidInstance):
        holder.validate_instance(bad)


def test_split_and_pod_instance() -> None:
    assert holder.split("pod:t1/agent-a/3f2a1b4c") == ("pod:t1/agent-a", "3f2a1b4c")
    assert holder.split("user:https://issuer.example/#1234/laptop") == ("user:https://issuer.example/#1234", "laptop")
    assert holder.split("agent-a") is None  # a holder name from before instances
    assert holder.pod_instance("3f2a1b4c-aaaa", "w2") == "3f2a1b4c.w2"


def test_instance_from_free_text() -> None:
    assert holder.instance_from("my host.example") == "my-host.example"
    long = holder.instance_from("h" * 100)
    assert len(long) == 63 and holder.instance_from("h" * 100) == long != holder.instance_from("h" * 99)


def test_claim_names_show_the_instance_and_differ_per_instance() -> None:
    a = claim_name("pod:agents/worker-0/3f2a1b4c", "deploy://api")
    b = claim_name("pod:agents/worker-0/3f2a1b4c.w2", "deploy://api")
    assert a.startswith("worker-0-3f2a1b4c-deploy-api-")
    assert a != b
    assert claim_name("user:alice/laptop", "deploy://api").startswith("alice-laptop-deploy-api-")
