"""A node powered off while its pods hold locks, and the node booted again.

In the field a node dies whole: its kubelet, containerd, the runtime shims and every container go at
once, with no SIGTERM and no last status. The pods stay `Running` for the API server (then `Unknown`
once the node is `NotReady`), and the holders on it never release. kubelock's rule for such a node
(docs/architecture.md, "Pods"): nothing of the pod's state decides, its holders' leases do; a holder
gone with its node renews no more, and its lock is free at its lease's end.

The bed: a test-bed node of its own (the test kills it), the chart's operator on it (one replica,
which dies with the node) and a second replica of the same operator on the host (a process with the
cluster admin's kubeconfig: the bed has one real node, and a replica on the host is what survives,
as one on another node would). On the node, two holders with 20 s leases: `kubelock run` (the CLI)
and tests/e2e/agent.py (the SDK). On the host, a waiter for each (`kubelock run --wait`). Then
:meth:`RealNode.power_off` (SIGKILL to every process of the node at once), and later
:meth:`RealNode.boot` (containerd and kubelet again, the old containers gone).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from kubelock.testbed.node import RealNode
from tests.e2e.agents import Agents, agent_pod, agents_namespace, poll
from tests.e2e.conftest import E2ECluster, helm_install_args
from tests.e2e.tools import E2E_DIR, RELEASE_NAMESPACE, REPORT, Tools
from tests.support.commands import argv_of, default_signals, environment
from tests.support.operator import OperatorProcess

Obj = dict[str, Any]
TTL = 20
CLI_RESOURCE = "deploy://node-off/cli"
SDK_RESOURCE = "work://e2e/item-0"  # agent.py's one item with ITEMS=1
#: The waiter's grant after the power-off: the dead holder's lease ends at most TTL after it (its last
#: renewal was before), then the next decision and the grant's write; the margin is a loaded machine's.
GRANT_BOUND = TTL + 40
#: The node-lifecycle controller's grace (50 s) before NotReady, and a loaded machine's margin.
NOT_READY_BOUND = 120
BOOT_READY_BOUND = 180
AFTER_BOOT_SECONDS = 1.5 * TTL  # time enough for anything left of the old holders to act


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _time(stamp: str | None) -> float | None:
    return None if not stamp else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class ClaimWatch:
    """Samples the namespace's claims every half second: each claim's phases with when they were
    first seen, and every sample in which one resource had two Held claims."""

    def __init__(self, tools: Tools, namespace: str) -> None:
        self._tools = tools
        self._namespace = namespace
        self.seen: dict[str, list[tuple[float, str | None, Obj]]] = {}
        self.double: list[tuple[float, str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ClaimWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            result = self._tools.run("kubectl", "get", "lockclaims", "-n", self._namespace, "-o", "json")
            if result.returncode != 0:
                continue
            now = time.time()
            held: dict[str, list[str]] = {}
            for claim in json.loads(result.stdout)["items"]:
                name = claim["metadata"]["name"]
                status = claim.get("status") or {}
                history = self.seen.setdefault(name, [])
                if not history or history[-1][1] != status.get("phase"):
                    history.append((now, status.get("phase"), claim))
                else:
                    history[-1] = (history[-1][0], history[-1][1], claim)  # the latest body of that phase
                if status.get("phase") == "Held":
                    held.setdefault(claim["spec"]["resource"], []).append(name)
            self.double += [(now, r, names) for r, names in held.items() if len(names) > 1]

    def last_body(self, name: str, phase: str) -> Obj | None:
        bodies = [body for _, p, body in self.seen.get(name, []) if p == phase]
        return bodies[-1] if bodies else None


def _claim_of(tools: Tools, namespace: str, resource: str, *, pod: str | None) -> Obj | None:
    claims = json.loads(tools.kubectl("get", "lockclaims", "-n", namespace, "-o", "json"))["items"]
    return next(
        (
            c
            for c in claims
            if c["spec"]["resource"] == resource and ((c["spec"].get("podRef") or {}).get("name") == pod)
        ),
        None,
    )


def _held(tools: Tools, namespace: str, resource: str, *, pod: str | None) -> Obj | None:
    claim = _claim_of(tools, namespace, resource, pod=pod)
    return claim if _phase(claim) == "Held" else None


def _wait_held(tools: Tools, namespace: str, resource: str, *, pod: str | None, timeout: float) -> Obj:
    """The claim of `pod` (None: the host's waiter) on `resource`, once Held."""
    who = pod or "the waiter"
    claim = poll(lambda: _held(tools, namespace, resource, pod=pod), f"{who} to hold {resource}", timeout, 0.2)
    assert claim is not None
    return claim


def _phase(claim: Obj | None) -> str | None:
    return None if claim is None else (claim.get("status") or {}).get("phase")


def _pod_phase(tools: Tools, namespace: str, pod: str) -> str:
    """The pod's phase, "(deleted)" once it is gone (the booted kubelet ends a deleted pod's deletion)."""
    result = tools.run("kubectl", "get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.phase}")
    return result.stdout if result.returncode == 0 else "(deleted)"


def _node_ready(tools: Tools, node: str) -> str:
    return tools.kubectl(
        "get", "node", node, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    ).strip()


def _operator_started_since(tools: Tools, since: float) -> bool:
    """A Ready operator pod of the chart whose container started after `since` (not the status it had
    before its node died: that stays as it was until the kubelet reports again)."""
    for pod in json.loads(tools.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "json"))["items"]:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        for status in pod["status"].get("containerStatuses", []):
            started = _time((status.get("state", {}).get("running") or {}).get("startedAt"))
            if conditions.get("Ready") == "True" and started is not None and started > since:
                return True
    return False


def _sdk_holder_pod(namespace: str, image: str) -> Obj:
    pod = agent_pod(namespace, "holder-sdk", image, "exec python /agent/agent.py")
    container = pod["spec"]["containers"][0]
    container["env"] += [
        {"name": "ITEMS", "value": "1"},
        {"name": "HOLD_SECONDS", "value": "3600"},
        {"name": "TTL_SECONDS", "value": str(TTL)},
    ]
    container["volumeMounts"] = [{"name": "agent", "mountPath": "/agent"}]
    container["resources"] = {"requests": {"cpu": "100m", "memory": "96Mi"}}  # docs/sdk.md: renewals need CPU
    pod["spec"]["volumes"] = [{"name": "agent", "configMap": {"name": "agent"}}]
    return pod


@contextlib.contextmanager
def _waiter(
    kubeconfig: Path, namespace: str, resource: str, instance: str, stop: Path
) -> Iterator[subprocess.Popen[str]]:
    """`kubelock run --wait` on the host; its command holds the lock until `stop` exists."""
    command = f'echo "token=$KUBELOCK_FENCING_TOKEN"; while [ ! -e {stop} ]; do sleep 0.5; done'
    process = subprocess.Popen(
        [*argv_of("kubelock"), "run", "--wait", "--ttl", str(TTL), "--json", resource, "--", "sh", "-c", command],
        env=environment(kubeconfig, namespace, instance), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=default_signals,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_a_node_powered_off_frees_its_holders_locks_at_their_lease_end_and_its_return_takes_nothing_back(
    cluster_of_its_own: E2ECluster, tmp_path: Path
) -> None:
    cluster = cluster_of_its_own
    tools, node = cluster.tools, cluster.node
    assert isinstance(node, RealNode)
    began = time.monotonic()
    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.1f} s  load {_load():5.2f}  {what}")

    tools.helm(*helm_install_args(cluster))
    host_operator = OperatorProcess(tools.kubeconfig, tmp_path / "host-operator.log").start(timeout=120)
    mark("chart's operator Ready on the node; a second replica on the host")
    stop = tmp_path / "waiters-may-finish"
    with contextlib.ExitStack() as stack:
        stack.callback(host_operator.stop)
        agents: Agents = stack.enter_context(agents_namespace(tools, cluster.agent_image, "node-off"))
        ns = agents.namespace
        tools.kubectl("create", "configmap", "agent", "-n", ns,
                      f"--from-literal=agent.py={(E2E_DIR / 'agent.py').read_text()}")  # fmt: skip
        cli_holder = agents.start(
            "holder-cli", f"exec kubelock run --ttl {TTL} {CLI_RESOURCE} -- sh -c 'exec sleep 3600'"
        )
        sdk_holder = agents.start_pod(_sdk_holder_pod(ns, cluster.agent_image))
        holders = {CLI_RESOURCE: cli_holder, SDK_RESOURCE: sdk_holder}
        held = {r: _wait_held(tools, ns, r, pod=p, timeout=180) for r, p in holders.items()}
        mark("both holders on the node hold their locks")
        watch = stack.enter_context(ClaimWatch(tools, ns))
        waiters = {
            r: stack.enter_context(_waiter(tools.kubeconfig, ns, r, f"waiter-{i}", stop))
            for i, r in enumerate(holders)
        }
        for resource in holders:
            poll(lambda: _phase(_claim_of(tools, ns, resource, pod=None)) == "Pending",  # noqa: B023
                 f"the waiter for {resource} to queue", 120)  # fmt: skip
        mark("a waiter on the host queued for each")
        time.sleep(TTL / 2)  # at least one renewal of each holder: they are alive and renewing
        for r, p in holders.items():
            assert _phase(_claim_of(tools, ns, r, pod=p)) == "Held", f"{p} lost {r} before the power-off"

        off_at = time.time()
        killed = node.power_off()
        mark(f"node {node.name} powered off: {len(killed)} processes SIGKILLed at once")
        assert node.alive() and node.powered_off  # the bed carries on around a dead node
        # A pod deleted on a dead node stays Terminating: no kubelet reports its containers stopped
        # (as after an eviction, a drain or a user's delete). It must not keep its lock past its lease.
        tools.kubectl("delete", "pod", cli_holder, "-n", ns, "--wait=false")
        granted: dict[str, Obj] = {}
        granted_after: dict[str, float] = {}
        for r in holders:  # one after the other: the second is granted by then, if it was first
            granted[r] = _wait_held(tools, ns, r, pod=None, timeout=GRANT_BOUND + 60)
            # When the operator granted it (the API server's and this machine's clock are one).
            granted_after[r] = (_time(granted[r]["status"].get("acquiredAt")) or time.time()) - off_at
        mark(f"waiters granted (the last {max(granted_after.values()):.1f} s after the power-off)")

        for r, p in holders.items():
            # Within the lease's end plus a loaded machine's margin: nothing waited for the node.
            assert granted_after[r] <= GRANT_BOUND, (r, granted_after[r])
            # The lease decided, not the pod: the dead holder's pod is still Running for the API server
            # (nothing reported its end), and its claim ended by its lease.
            assert agents.phase(p) in ("Running", "Unknown"), agents.phase(p)
            if p == cli_holder:
                deleting = tools.kubectl("get", "pod", p, "-n", ns, "-o", "jsonpath={.metadata.deletionTimestamp}")
                assert deleting, f"{p} should be Terminating, still there"
            old = _claim_of(tools, ns, r, pod=p)
            assert old is not None and _phase(old) == "Expired", old
            assert old["status"].get("reason") == "LeaseExpired", old["status"]
            # Not before the dead holder's lease ended: its last renewal's expiresAt, as the watch saw it.
            last_held = watch.last_body(old["metadata"]["name"], "Held") or held[r]
            lease_end = _time(last_held["status"].get("expiresAt"))
            acquired = _time(granted[r]["status"].get("acquiredAt"))
            assert lease_end is not None and acquired is not None
            assert acquired >= lease_end - 1.0, (r, last_held["status"], granted[r]["status"])  # 1 s: clocks' rounding
            assert acquired >= off_at - 1.0
            assert granted[r]["status"]["fencingToken"] > held[r]["status"]["fencingToken"]
            events = tools.kubectl("get", "events", "-n", ns, "-o", "json",
                                   f"--field-selector=involvedObject.name={old['metadata']['name']}")  # fmt: skip
            reasons = {e["reason"] for e in json.loads(events)["items"]}
            assert "LeaseExpired" in reasons, reasons
        assert watch.double == [], watch.double[:5]

        # The node's pods stay as they were (Running, then Unknown/Terminating once NotReady): nothing
        # of kubelock waits for them. The node goes NotReady after the controller's grace.
        poll(lambda: _node_ready(tools, node.name) in ("Unknown", "False"), f"{node.name} to go NotReady",
             NOT_READY_BOUND, 1)  # fmt: skip
        mark(f"node NotReady ({_node_ready(tools, node.name)}); holders' pods "
             f"{[_pod_phase(tools, ns, p) for p in holders.values()]}")  # fmt: skip
        for r in holders:
            assert _phase(_claim_of(tools, ns, r, pod=None)) == "Held"

        node.boot()
        poll(lambda: _node_ready(tools, node.name) == "True", f"{node.name} to be Ready again", BOOT_READY_BOUND, 1)
        booted_at = time.monotonic()
        mark("node booted and Ready again")
        # The chart's replica on the node comes back (its container started again) beside the host's.
        poll(lambda: _operator_started_since(tools, off_at), "the node's operator replica to be Ready again",
             BOOT_READY_BOUND, 1)  # fmt: skip
        mark("the node's operator replica Ready again")
        # Whatever the kubelet does with the old pods now (their containers are gone), nothing of
        # theirs may take back or end the locks they lost: the waiters keep them, same tokens.
        time.sleep(AFTER_BOOT_SECONDS)
        mark(f"{time.monotonic() - booted_at:.0f} s after the boot; holders' pods "
             f"{[_pod_phase(tools, ns, p) for p in holders.values()]}")  # fmt: skip
        for r in holders:
            now = _claim_of(tools, ns, r, pod=None)
            assert now is not None and _phase(now) == "Held", now
            assert now["status"]["fencingToken"] == granted[r]["status"]["fencingToken"]
            assert waiters[r].poll() is None, "a waiter's `kubelock run` ended while it should hold"
            assert _phase(_claim_of(tools, ns, r, pod=holders[r])) in ("Expired", None)  # None: deleted with its pod
        assert watch.double == [], watch.double[:5]
        assert host_operator.alive

        stop.touch()
        for r, process in waiters.items():
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, (out, err)
            result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
            assert result.get("released") is True, result
            # The command ran under the token the waiter was granted.
            assert f"token={granted[r]['status']['fencingToken']}" in out, out
        mark("waiters released")
    REPORT.append("node powered off:\n  " + "\n  ".join(timeline))
    REPORT.append(f"node powered off: waiters granted {', '.join(f'{s:.1f}' for s in granted_after.values())} s "
                  f"after the power-off (lease {TTL} s)")  # fmt: skip
