"""LockPolicies created, changed (capacity up and down, quotas on and off) and deleted while claims
flow on the resources they govern, decided by one operator and by two replicas.

Agents each make claims one after another (waiting ones, some Shared), hold briefly and release;
meanwhile the policies go through `STEPS` again and again without waiting for the operators. What
must hold:
- no grant makes more holders than the capacity in force (Shared holders share; the capacity a
  grant may rest on is any the policies gave the resource in the last `LAG` seconds: a change
  reaches the operators' decisions through their watch of policies, and lowering the capacity
  revokes nobody);
- no claim is left waiting: every claim is Held in the end (none times out);
- a deleted policy's `PolicyRemoved` Event is there once, whatever the number of replicas;
- once the claims and the policies are gone, the operators keep nothing more of them than before
  the churn (their own tables, from `bench/heapfacts`, as in test_flood_memory.py).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi

from kubelock.api.constants import GROUP, VERSION
from kubelock.domain.grants import Mode, Need, compatible
from kubelock.domain.resource import normalise
from tests.integration.test_flood_memory import BOUNDED, _FactsOperator
from tests.support.claims import Locks, phase_of, wait_until
from tests.support.monitor import HolderMonitor
from tests.support.namespaces import temporary_namespace

PREFIX = "klpc-"
RESOURCES = [f"deploy://churn/{i}" for i in range(4)]
AGENTS, CLAIMS_EACH = 5, 60
LAG = 15.0  # a policy change reaches the decisions within this, also on a loaded machine
STEP_SECONDS = 0.5
QUOTA_FIELDS = ("maxHeldPerHolder", "maxWaitingPerHolder", "maxHeldPerNamespace", "maxWaitingPerNamespace")
# (policy, its spec; None: deleted). "narrow" governs deploy://churn/0 beside "wide" (longest prefix wins).
STEPS: list[tuple[str, dict[str, Any] | None]] = [
    ("wide", {"resourcePrefix": "deploy://churn/", "capacity": 3}),
    ("narrow", {"resourcePrefix": "deploy://churn/0", "capacity": 2, "maxHeldPerHolder": 2}),
    ("wide", {"resourcePrefix": "deploy://churn/", "capacity": 1}),
    ("wide", {"resourcePrefix": "deploy://churn/", "capacity": 2, "maxWaitingPerNamespace": 100}),
    ("narrow", None),
    ("wide", None),
]
# Own tables that may grow beside the capacity-bound ones: a few entries, not one per claim or policy.
SLACK = 3


def capacities(policies: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each resource's capacity under `policies` (the longest prefix wins; none: 1)."""
    out = {}
    for resource in RESOURCES:
        matching = sorted(
            (s for s in policies.values() if resource.startswith(s["resourcePrefix"])),
            key=lambda s: -len(s["resourcePrefix"]),
        )
        out[normalise(resource)] = int(matching[0].get("capacity", 1)) if matching else 1
    return out


class Timeline:
    """The capacities the policies gave each resource, and since when (this machine's monotonic clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes: list[tuple[float, dict[str, int]]] = [(0.0, capacities({}))]

    def changed(self, policies: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            self._changes.append((time.monotonic(), capacities(policies)))

    def allowed(self, resource: str, at: float) -> int:
        """The most any capacity in force within `LAG` before `at` gave the resource."""
        with self._lock:
            changes = list(self._changes)
        in_force = [c for i, (since, c) in enumerate(changes)
                    if since <= at and (i + 1 == len(changes) or changes[i + 1][0] >= at - LAG)]
        return max(c[resource] for c in in_force)


class CapacityMonitor(HolderMonitor):
    """The claims' watch: at each new Held, the holders of its resource fit the capacity allowed."""

    def __init__(self, api: ApiClient, namespace: str, timeline: Timeline) -> None:
        super().__init__(api, namespace)
        self._timeline = timeline
        self.peak: dict[str, int] = {}

    def _observe(self, kind: str, obj: dict[str, Any]) -> None:
        self.events += 1
        name, spec, status = obj["metadata"]["name"], obj["spec"], obj.get("status") or {}
        self._seen[name] = max(self._seen.get(name, 0), int(obj["metadata"]["resourceVersion"]))
        resource = normalise(spec["resource"])
        held = self._held[resource]
        if kind != "DELETED" and status.get("phase") == "Held":
            if name not in held:
                held[name] = Need(Mode(spec.get("mode", "Exclusive")), int(spec.get("permits", 1)))
                allowed = self._timeline.allowed(resource, time.monotonic())
                self.peak[resource] = max(self.peak.get(resource, 0), len(held))
                if not compatible(held.values(), allowed):
                    self.violations.append(f"{resource} held by {sorted(held)} at once (capacity {allowed})")
        else:
            held.pop(name, None)


def put_policy(api: CustomObjectsApi, ns: str, name: str, spec: dict[str, Any]) -> str:
    """Create the policy, or change it to `spec` (quotas it does not name removed); its uid."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockPolicy", "metadata": {"name": name}, "spec": spec}
    try:
        return str(api.create_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies", body)["metadata"]["uid"])
    except ApiException as error:
        if error.status != 409:
            raise
    patch = {"spec": {**{f: None for f in QUOTA_FIELDS}, **spec}}
    return str(api.patch_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies", name, patch)["metadata"]["uid"])


def churn_policies(api: ApiClient, ns: str, timeline: Timeline, stop: threading.Event) -> list[str]:
    """Go through STEPS until `stop`, then delete what is left; the uids of the policies deleted."""
    objects, policies, deleted = CustomObjectsApi(api), {}, []
    uids: dict[str, str] = {}
    step = 0
    while not stop.is_set() or policies:
        name, spec = STEPS[step % len(STEPS)]
        step += 1
        # Entered in the timeline before the write: the operators may grant under it before the write's
        # answer reaches this thread.
        if spec is None or stop.is_set():
            if name in policies:
                del policies[name]
                timeline.changed(policies)
                objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies", name)
                deleted.append(uids.pop(name))
        else:
            policies[name] = spec
            timeline.changed(policies)
            uids[name] = put_policy(objects, ns, name, spec)
        time.sleep(STEP_SECONDS)
    return deleted


def agent(locks: Locks, number: int, outcomes: dict[str, tuple[str, float]]) -> None:
    """CLAIMS_EACH claims one after another, each waited on until it ends or is Held, then released."""
    rng = random.Random(number)
    for i in range(CLAIMS_EACH):
        name = f"a{number}-{i}"
        mode = "Shared" if i % 5 == 4 else "Exclusive"
        started = time.monotonic()
        locks.claim(name, rng.choice(RESOURCES), f"agent-{number}", wait=True, ttl=60, wait_timeout=60, mode=mode)
        body = locks.wait_for(name, lambda c: phase_of(c) not in (None, "Pending"), timeout=90, what="an answer")
        outcomes[name] = (f"{phase_of(body)} {(body.get('status') or {}).get('reason')}", time.monotonic() - started)
        time.sleep(0.05)
        locks.delete(name)


def removed_events(api: ApiClient, ns: str, uid: str) -> int:
    events = CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.uid={uid}").items
    return sum(e.count or 1 for e in events if e.reason == "PolicyRemoved")


def own_growth(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {
        key: (before["sizes"].get(key, 0), size)
        for key, size in after["sizes"].items()
        if size - before["sizes"].get(key, 0) > SLACK and key not in BOUNDED
    }


@pytest.mark.timeout(600)
@pytest.mark.parametrize("replicas", [1, 2])
def test_policies_changing_under_a_flow_of_claims(  # type: ignore[no-untyped-def]
    control_plane, admin_api: ApiClient, tmp_path: Path, replicas: int
) -> None:
    with temporary_namespace(admin_api, PREFIX) as ns, contextlib.ExitStack() as stack:
        operators = []
        for i in range(replicas):
            facts = tmp_path / f"facts{i}"
            facts.mkdir()
            op = _FactsOperator(facts, control_plane.kubeconfig, tmp_path / f"operator{i}.log", namespaces=(ns,))
            operators.append(stack.enter_context(op))
        locks = Locks(admin_api, ns)
        # Warm-up: one claim and one policy each way, so the baseline has what any use makes once.
        put_policy(CustomObjectsApi(admin_api), ns, "warm", {"resourcePrefix": "deploy://warm/", "capacity": 2})
        locks.claim("warm", "deploy://warm/0", "agent-warm")
        locks.wait_phase("warm", "Held", timeout=60)
        locks.delete("warm")
        CustomObjectsApi(admin_api).delete_namespaced_custom_object(GROUP, VERSION, ns, "lockpolicies", "warm")
        wait_until(lambda: not locks.claims() and not locks.locks(), "the warm-up gone", 60)
        time.sleep(3)
        baseline = [op.dump(f"churn-start-{i}-collect") for i, op in enumerate(operators)]

        timeline, stop, outcomes = Timeline(), threading.Event(), {}
        deleted: list[str] = []
        started = time.monotonic()
        with CapacityMonitor(admin_api, ns, timeline) as monitor:
            churner = threading.Thread(target=lambda: deleted.extend(churn_policies(admin_api, ns, timeline, stop)))
            churner.start()
            agents = [threading.Thread(target=agent, args=(locks, n, outcomes)) for n in range(AGENTS)]
            for thread in agents:
                thread.start()
            for thread in agents:
                thread.join()
            stop.set()
            churner.join()
        took = time.monotonic() - started

        print(f"\n{replicas} replica(s): {len(outcomes)} claims in {took:.0f} s, {len(deleted)} policies deleted,"
              f" longest wait {max(w for _, w in outcomes.values()):.1f} s, peak holders {monitor.peak},"
              f" load {Path('/proc/loadavg').read_text().strip()}")
        assert not monitor.violations, monitor.violations[:5]
        assert len(outcomes) == AGENTS * CLAIMS_EACH
        not_held = {name: what for name, (what, _) in outcomes.items() if not what.startswith("Held")}
        assert not not_held, not_held
        assert any(peak > 1 for peak in monitor.peak.values()), monitor.peak  # the raised capacities were used

        for uid in deleted:
            wait_until(lambda uid=uid: removed_events(admin_api, ns, uid) >= 1, f"PolicyRemoved of {uid}", 60)
        time.sleep(3)  # a second replica's Event, if it sent one, is there by now
        assert {uid: removed_events(admin_api, ns, uid) for uid in deleted} == dict.fromkeys(deleted, 1)

        wait_until(lambda: not locks.claims() and not locks.locks(), "the claims gone", 60)
        time.sleep(5)
        for i, op in enumerate(operators):
            grown = own_growth(baseline[i], op.dump(f"churn-end-{i}-collect"))
            assert not grown, (i, grown)
