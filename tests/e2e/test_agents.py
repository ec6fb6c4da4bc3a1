"""Three agent replicas in a real cluster, with the operator from the image and the chart: no item is
ever worked on by two agents at once, fencing tokens only grow, and killing agent pods releases
their locks to the survivors.

The agents are tests/e2e/agent.py, run from the agent image (the SDK and the CLI) with a
ServiceAccount bound to the chart's kubelock-agent role, so the admission policies check them as
they would check any agent: holder = pod:<namespace>/<pod>/<uid prefix>, podRef = the pod.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import yaml

from kubelock.api.fencing import lock_token
from tests.e2e.agents import access_objects
from tests.e2e.tools import E2E_DIR, Tools

REPLICAS = 3
WORK_SECONDS = 60
Obj = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Interval:
    item: str
    pod: str
    token: int
    start: float
    end: float  # math.inf: still working when the logs were read


def agent_objects(namespace: str, image: str) -> list[Obj]:
    labels = {"app.kubernetes.io/name": "kubelock-e2e-agent"}
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "ITEMS", "value": "3"},
        {"name": "HOLD_SECONDS", "value": "2"},
    ]
    return [
        *access_objects(namespace),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "agent", "namespace": namespace},
            "data": {"agent.py": (E2E_DIR / "agent.py").read_text()},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "agents", "namespace": namespace},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {
                    # The label makes the operator follow the pod, so that its death releases its locks.
                    "metadata": {"labels": {**labels, "kubelock.dev/lock-holder": "true"}},
                    "spec": {
                        "serviceAccountName": "agent",
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "agent",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["python", "/agent/agent.py"],
                                "env": env,
                                "volumeMounts": [{"name": "agent", "mountPath": "/agent"}],
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                        "volumes": [{"name": "agent", "configMap": {"name": "agent"}}],
                    },
                },
            },
        },
    ]


@pytest.fixture
def agents(tools: Tools, kubelock: str, image: str) -> Iterator[str]:
    namespace = f"agents-{secrets.token_hex(3)}"
    tools.kubectl("create", "namespace", namespace)
    try:
        tools.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(agent_objects(namespace, image)))
        tools.kubectl("rollout", "status", "deployment/agents", "--namespace", namespace, "--timeout=5m")
        yield namespace
    finally:
        tools.kubectl("delete", "namespace", namespace, "--wait=false")


def pods(tools: Tools, namespace: str) -> list[str]:
    out = tools.kubectl(
        "get", "pods", "--namespace", namespace, "-l", "app.kubernetes.io/name=kubelock-e2e-agent",
        "--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}",
    )  # fmt: skip
    return out.split()


def events(tools: Tools, namespace: str, pod: str) -> list[Obj]:
    lines = tools.kubectl("logs", pod, "--namespace", namespace).splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def intervals(events_by_pod: dict[str, list[Obj]], cutoff: float) -> list[Interval]:
    """Work intervals begun before `cutoff` (taken before the logs were read). One not ended in its
    pod's log was still running when that log was read, so after the cutoff: it ends at infinity."""
    out: list[Interval] = []
    for pod, evs in events_by_pod.items():
        open_: dict[str, Obj] = {}
        for ev in evs:
            if ev["event"] == "start" and ev["time"] < cutoff:
                open_[ev["item"]] = ev
            elif ev["event"] in ("end", "lost") and ev["item"] in open_:
                start = open_.pop(ev["item"])
                out.append(Interval(ev["item"], pod, start["token"], start["time"], ev["time"]))
        out += [Interval(item, pod, ev["token"], ev["time"], math.inf) for item, ev in open_.items()]
    return out


def overlaps_and_token_order(work: list[Interval]) -> list[str]:
    """Problems: two intervals on one item that overlap, or a later grant with a smaller token."""
    problems: list[str] = []
    by_item: dict[str, list[Interval]] = defaultdict(list)
    for interval in work:
        by_item[interval.item].append(interval)
    for item, spans in by_item.items():
        spans.sort(key=lambda s: s.start)
        for before, after in itertools.pairwise(spans):
            if after.start < before.end:
                problems.append(f"{item}: {before.pod} (token {before.token}) and {after.pod} overlap")
            if after.token <= before.token:
                problems.append(f"{item}: token {after.token} of {after.pod} after {before.token} of {before.pod}")
    return problems


def resource_locks(tools: Tools, namespace: str) -> list[Obj]:
    items: list[Obj] = json.loads(tools.kubectl("get", "resourcelocks", "--namespace", namespace, "-o", "json"))[
        "items"
    ]
    return items


def poll(value: Callable[[], T], what: str, timeout: float) -> T:
    """The first truthy result of `value`, polled every half second."""
    deadline = time.monotonic() + timeout
    while not (result := value()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)
    return result


@pytest.mark.timeout(3600)  # includes building the image and creating the cluster
def test_agents_never_work_on_one_item_at_once_and_dead_agents_release(tools: Tools, agents: str) -> None:
    namespace = agents
    time.sleep(WORK_SECONDS)

    # 1. Mutual exclusion and fencing, from the agents' own logs.
    running = pods(tools, namespace)
    assert len(running) == REPLICAS
    cutoff = time.time()
    logs = {pod: events(tools, namespace, pod) for pod in running}
    assert all(any(e["event"] == "ready" for e in evs) for evs in logs.values()), logs
    assert not [e for evs in logs.values() for e in evs if e["event"] in ("lost", "error")]
    work = intervals(logs, cutoff)
    assert len(work) >= 10, f"too little work in {WORK_SECONDS}s: {work}"
    assert len({w.pod for w in work}) == REPLICAS, "every agent got work"
    assert overlaps_and_token_order(work) == []

    # 2. Killing holders: their locks go to the survivors, with greater tokens.
    def current_locks() -> dict[str, Obj]:
        # A lock's token is spec.fencingToken once a write recorded it, its resourceVersion before.
        return {lk["spec"]["resource"]: {**lk["spec"], "fencingToken": lock_token(lk)}
                for lk in resource_locks(tools, namespace)}

    held = poll(current_locks, "an agent to hold a lock", 30)
    def pod_of(spec: Obj) -> str | None:
        return (spec.get("podRef") or {}).get("name")

    victims = sorted({pod for lock in held.values() if (pod := pod_of(lock))})[:2]
    for pod in victims:
        tools.kubectl("delete", "pod", pod, "--namespace", namespace, "--grace-period=0", "--force", "--wait=false")
    killed = {r: lock["fencingToken"] for r, lock in held.items() if pod_of(lock) in victims}

    def released() -> bool:
        return not any(pod_of(lock) in victims for lock in current_locks().values())

    poll(released, f"the locks of the killed pods {victims} to be released", 90)
    claims = json.loads(tools.kubectl("get", "lockclaims", "--namespace", namespace, "-o", "json"))["items"]
    for claim in claims:
        if pod_of(claim["spec"]) in victims:
            assert (claim.get("status") or {}).get("phase") != "Held", claim

    regranted_items: set[str] = set()

    def regranted() -> bool:
        # Each item of a killed pod is seen held again, with a greater token (not necessarily all at once).
        for resource, lock in current_locks().items():
            if resource in killed and lock["fencingToken"] > killed[resource]:
                regranted_items.add(resource)
        return regranted_items == set(killed)

    poll(regranted, f"the items of the killed pods ({sorted(killed)}) to be granted again", 120)
