"""The operator pod is deleted while a lock is held and agents wait: the Deployment starts a new
one, no lock is ever granted twice, and the waiters are served first-come-first-served afterwards.
With one replica and with two (the chart's replicaCount, set by `helm upgrade`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.agents import SLEEP, Agents, agents_namespace, poll, run
from tests.e2e.conftest import RELEASE_NAMESPACE, E2ECluster, helm_install_args
from tests.e2e.tools import Tools
from tests.support.monitor import HolderMonitor

OPERATOR_PODS = "app.kubernetes.io/name=kubelock,app.kubernetes.io/component=operator"
WAITERS = 3


@pytest.fixture
def agents(tools: Tools, kubelock: str, image: str) -> Iterator[Agents]:
    with agents_namespace(tools, image, "restarts") as agents:
        yield agents


def operator_pods(tools: Tools) -> dict[str, bool]:
    """Operator pod name → Ready, for pods not being deleted."""
    pods = json.loads(tools.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-l", OPERATOR_PODS, "-o", "json"))
    return {
        p["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])
        )
        for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp")
    }


@pytest.mark.parametrize("replicas", [1, 2])
def test_deleted_operator_pod_is_replaced_without_double_grants_and_waiters_keep_their_order(
    cluster: E2ECluster, agents: Agents, replicas: int
) -> None:
    tools = cluster.tools
    tools.helm(*helm_install_args(cluster, f"replicaCount={replicas}"))
    before = poll(lambda: (p := operator_pods(tools)) and len(p) == replicas and all(p.values()) and p,
                  f"{replicas} Ready operator pods", 180)  # fmt: skip
    uri = f"work://restarts/{replicas}"
    with HolderMonitor(cluster.api(), agents.namespace) as monitor:
        holder = agents.start("holder", run(f'rlock "{uri}"'), SLEEP)
        assert agents.wait_outputs(holder, 1)[0][1] == 0
        waiters = []
        for i in range(WAITERS):
            waiter = agents.start(f"waiter-{i}", run(f'rlock --wait "{uri}"'), SLEEP)
            poll(lambda w=waiter: agents.phase_of(w, uri) == "Pending", f"{waiter} to queue", 60)
            waiters.append(waiter)

        tools.kubectl("delete", "pods", "-n", RELEASE_NAMESPACE, "-l", OPERATOR_PODS, "--wait=false")
        tools.kubectl("rollout", "status", "deployment/kubelock-operator", "-n", RELEASE_NAMESPACE, "--timeout=180s")
        after = poll(lambda: (p := operator_pods(tools)) and len(p) == replicas and all(p.values()) and p,
                     "the replacement operator pods to be Ready", 180)  # fmt: skip
        assert not set(after) & set(before), f"pods {before} were not replaced: {after}"
        assert agents.phase_of(holder, uri) == "Held"

        # Each holder's pod is killed in turn; the next waiter in line gets the lock.
        current = holder
        for waiter in waiters:
            agents.kill(current)
            poll(lambda w=waiter: agents.phase_of(w, uri) == "Held", f"{waiter} to be granted", 90)
            current = waiter
    assert monitor.violations == []
    order = [name for resource, name, _ in monitor.grants if resource == uri]
    holders = [next(h for h in (holder, *waiters) if name.startswith(f"{h}-")) for name in order]
    assert holders == [holder, *waiters], order
    tokens = monitor.tokens_by_resource()[uri]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens
