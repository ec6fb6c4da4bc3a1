"""The field at once: what the other end-to-end tests check one at a time, together, on a busy node.

The operator runs from its image with two replicas (the chart). Agents (tests/e2e/agent.py, the SDK)
work in three namespaces, several processes per pod, each its own holder by its KUBELOCK_INSTANCE
(`pod:<ns>/<pod>/<uid prefix>.w<i>`), on fewer items than processes, so they queue. Beside them
busy loops keep the machine loaded. Meanwhile the operator Deployment is restarted twice
(`kubectl rollout restart`), an agent pod is deleted (its shell, the container's main process,
passes no SIGTERM on: its processes work on until the kubelet kills them at the grace's end), and
one operator pod is deleted with a 5 s grace, overlapping the second restart.

Checked, each from its own evidence:

* no item worked by two processes at once, and fencing tokens only grow (the agents' own logs; a
  process killed while working counts as working until its last "tick" line);
* no two holders seen Held at once on a resource (a watch of every claim, HolderMonitor);
* the deleted pod's locks handed over, with greater tokens; every item worked on after the last
  disruption, by every surviving process;
* no claim left without an answer (a phase) beyond ANSWER_BOUND, sampled throughout;
* no agent saw its lock lost or an error;
* no error loop in the operator pods' logs (followed from each pod's start to its end);
* the operator's Events in the agents' namespaces: no Warning, and few enough (the routine limit).

The agents' projected ServiceAccount tokens are not rotated here by default: the kubelet renews one
at 80 % of its lifetime, at least 600 s (eight minutes), longer than this test may take. Set
KUBELOCK_FIELD_TOKEN_SECONDS=600 to run the long variant by hand (docs/reliability.md, "The field at
once"): the agents' tokens are projected with that lifetime and the work after the last disruption
lasts until past the first tokens' expiry, so the agents must have gone on with rotated tokens.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agents import Agents, agent_pod, agents_namespace, poll
from tests.e2e.conftest import E2ECluster, helm_install_args
from tests.e2e.test_agents import Interval, overlaps_and_token_order
from tests.e2e.test_operator_restarts import OPERATOR_PODS, operator_pods
from tests.e2e.tools import E2E_DIR, RELEASE_NAMESPACE, REPORT, Tools
from tests.support.monitor import HolderMonitor

Obj = dict[str, Any]
NAMESPACES = 3
PROCESSES = 3  # agent processes per pod, each its own holder
ITEMS = 2  # per namespace: fewer than the processes working on them, so that they queue
HOLD_SECONDS = 1.5
TICK_SECONDS = 0.25
BURNERS = 4  # busy loops beside the node, on a 2-core machine
SETTLE_SECONDS = 20  # work between disruptions
FINAL_SECONDS = 40  # work after the last disruption
#: The longest a claim may stay without a phase. A restarted operator answers the claims made while
#: no replica was Ready within seconds; 60 s leaves the margin a loaded machine needs.
ANSWER_BOUND = 60.0
#: The agents' projected token lifetime (0: the kubelet's default token) for the long variant.
TOKEN_SECONDS = int(os.environ.get("KUBELOCK_FIELD_TOKEN_SECONDS", "0"))
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The same message in one operator pod's log more often than this is an error loop.
REPEATS = 20
#: The operator's Events one process may send one namespace here: its burst (25), then summaries.
EVENTS_PER_PROCESS = 40


def field_pod(namespace: str, name: str, image: str) -> Obj:
    """An agent pod whose shell runs PROCESSES agents, each with its own KUBELOCK_INSTANCE."""
    script = "\n".join(
        [*(f"KUBELOCK_INSTANCE=w{i} python /agent/agent.py &" for i in range(PROCESSES)), "wait"]
    )
    pod = agent_pod(namespace, name, image, script)
    spec = pod["spec"]
    spec["terminationGracePeriodSeconds"] = 5
    container = spec["containers"][0]
    container["env"] += [
        {"name": "ITEMS", "value": str(ITEMS)},
        {"name": "HOLD_SECONDS", "value": str(HOLD_SECONDS)},
        {"name": "TICK_SECONDS", "value": str(TICK_SECONDS)},
    ]
    container["volumeMounts"] = [{"name": "agent", "mountPath": "/agent"}]
    # docs/sdk.md: a holder that renews needs CPU it can count on, on a busy node too.
    container["resources"] = {"requests": {"cpu": "100m", "memory": "96Mi"}}
    spec["volumes"] = [{"name": "agent", "configMap": {"name": "agent"}}]
    if TOKEN_SECONDS:
        # The API server extends only the token it mounts itself: a projected one keeps its lifetime.
        spec["automountServiceAccountToken"] = False
        container["volumeMounts"].append({"name": "token", "mountPath": TOKEN, "readOnly": True})
        spec["volumes"].append({"name": "token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}})  # fmt: skip
    return pod


def token_claims(tools: Tools, namespace: str, pod: str) -> Obj:
    """iat and exp of the token the pod has now."""
    jwt = tools.kubectl("exec", "-n", namespace, pod, "--", "cat", f"{TOKEN}/token")
    payload = jwt.split(".")[1]
    claims: Obj = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


class Follower:
    """`kubectl logs -f` of pods, each into a file of its own, from when it is first followed."""

    def __init__(self, tools: Tools, out: Path) -> None:
        self.tools = tools
        self.out = out
        self.files: dict[tuple[str, str], Path] = {}
        self._procs: list[subprocess.Popen[bytes]] = []

    def follow(self, namespace: str, pod: str) -> None:
        if (namespace, pod) in self.files:
            return
        path = self.out / f"{namespace}_{pod}.log"
        self.files[namespace, pod] = path
        argv = [str(self.tools.bin_dir / "kubectl"), "--kubeconfig", str(self.tools.kubeconfig), "logs", "-f",
                pod, "-n", namespace]  # fmt: skip
        with path.open("wb") as sink:
            self._procs.append(subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT))

    def lines(self, namespace: str, pod: str) -> list[str]:
        return self.files[namespace, pod].read_text(errors="replace").splitlines()

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


@dataclass
class Sampler:
    """Looks every few seconds at the operator pods (following each new one's log) and at the claims
    of the agents' namespaces (how long each has gone without a phase)."""

    tools: Tools
    follower: Follower
    namespaces: list[str]
    unanswered: dict[str, float] = field(default_factory=dict)  # claim -> first seen without a phase
    longest: dict[str, float] = field(default_factory=dict)  # claim -> seconds seen without a phase
    looks: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(2):
            with contextlib.suppress(AssertionError, json.JSONDecodeError):
                self.look()

    def look(self) -> None:
        for pod in operator_pods_all(self.tools):
            self.follower.follow(RELEASE_NAMESPACE, pod)
        now = time.monotonic()
        claims = json.loads(self.tools.kubectl("get", "lockclaims", "-A", "-o", "json"))["items"]
        seen = set()
        for claim in claims:
            if claim["metadata"]["namespace"] not in self.namespaces:
                continue
            key = f"{claim['metadata']['namespace']}/{claim['metadata']['name']}"
            if (claim.get("status") or {}).get("phase") or claim["metadata"].get("deletionTimestamp"):
                continue
            seen.add(key)
            first = self.unanswered.setdefault(key, now)
            self.longest[key] = now - first
        for key in set(self.unanswered) - seen:
            del self.unanswered[key]
        self.looks += 1


def operator_pods_all(tools: Tools) -> list[str]:
    """Every operator pod whose containers have started (its log can be followed), terminating or not."""
    pods = json.loads(tools.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-l", OPERATOR_PODS, "-o", "json"))
    return [
        p["metadata"]["name"]
        for p in pods["items"]
        if any("running" in (c.get("state") or {}) for c in p["status"].get("containerStatuses", []))
    ]


@contextlib.contextmanager
def burners(count: int) -> Iterator[None]:
    """Busy loops on the machine, as other work on a node would be."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def agent_events(lines: list[str]) -> list[Obj]:
    return [json.loads(line) for line in lines if line.startswith('{"event"')]


def work_intervals(events: list[Obj], namespace: str, cutoff: float, still_running: bool) -> list[Interval]:
    """The work intervals of one pod's processes, begun before `cutoff`. One without an "end": still
    running (infinity) if its pod runs on, else ended at its last "tick" (a process killed at work)."""
    out: list[Interval] = []
    open_: dict[tuple[str, str], tuple[Obj, float]] = {}
    for ev in events:
        who = (f"{namespace}/{ev['pod']}", ev["process"])
        item = f"{namespace}:{ev.get('item')}"
        if ev["event"] == "start" and ev["time"] < cutoff:
            open_[who] = ({**ev, "item": item}, ev["time"])
        elif ev["event"] == "tick" and who in open_:
            open_[who] = (open_[who][0], ev["time"])
        elif ev["event"] in ("end", "lost") and who in open_:
            start, _ = open_.pop(who)
            out.append(Interval(item, f"{who[0]}/{who[1]}", start["token"], start["time"], ev["time"]))
    for (pod, process), (start, last) in open_.items():
        end = math.inf if still_running else last
        out.append(Interval(start["item"], f"{pod}/{process}", start["token"], start["time"], end))
    return out


def error_loops(lines: list[str]) -> list[str]:
    """Messages of level ERROR or WARNING repeated more than REPEATS times in one log."""
    counts: Counter[str] = Counter()
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if "Traceback" in line or "ERROR" in line:
                counts[line[:120]] += 1
            continue
        if not isinstance(record, dict):
            continue
        level = str(record.get("level") or record.get("levelname") or "").upper()
        if level in ("ERROR", "CRITICAL", "WARNING"):
            counts[f"{level} {str(record.get('message') or record.get('msg'))[:120]}"] += 1
    return [f"{n}x {message}" for message, n in counts.items() if n > REPEATS]


def restart_operator(tools: Tools) -> None:
    tools.kubectl("rollout", "restart", "deployment/kubelock-operator", "-n", RELEASE_NAMESPACE)


def wait_rollout(tools: Tools) -> None:
    tools.kubectl("rollout", "status", "deployment/kubelock-operator", "-n", RELEASE_NAMESPACE, "--timeout=300s")


def locks_of(tools: Tools, namespace: str) -> dict[str, Obj]:
    """resource -> the lock's spec, with the fencing token as the lock reads it."""
    from kubelock.api.fencing import lock_token

    items = json.loads(tools.kubectl("get", "resourcelocks", "-n", namespace, "-o", "json"))["items"]
    return {lk["spec"]["resource"]: {**lk["spec"], "fencingToken": lock_token(lk)} for lk in items}


@pytest.mark.timeout(1800)
def test_the_field_at_once(cluster: E2ECluster, kubelock: str, image: str, tmp_path: Path) -> None:
    tools = cluster.tools
    began = time.monotonic()
    tools.helm(*helm_install_args(cluster, "replicaCount=2"))
    poll(lambda: (p := operator_pods(tools)) and len(p) == 2 and all(p.values()) and p, "2 Ready operator pods", 300)
    follower = Follower(tools, tmp_path)
    loads: list[float] = []
    timeline: list[str] = []

    def mark(what: str) -> None:
        load = float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else 0.0
        loads.append(load)
        timeline.append(f"{time.monotonic() - began:6.1f} s  load {load:5.2f}  {what}")

    with contextlib.ExitStack() as stack:
        stack.callback(lambda: tools.helm(*helm_install_args(cluster)))  # back to the chart's defaults
        stack.callback(follower.stop)
        spaces = [stack.enter_context(agents_namespace(tools, image, f"field{i}")) for i in range(NAMESPACES)]
        names = [a.namespace for a in spaces]
        stack.enter_context(burners(BURNERS))
        monitors = [stack.enter_context(HolderMonitor(cluster.api(), a.namespace)) for a in spaces]
        sampler = stack.enter_context(Sampler(tools, follower, names))
        configmap = {"agent.py": (E2E_DIR / "agent.py").read_text()}
        pods: list[tuple[Agents, str]] = []
        for agents in spaces:
            tools.kubectl("create", "configmap", "agent", "-n", agents.namespace,
                          *(f"--from-literal={k}={v}" for k, v in configmap.items()))  # fmt: skip
            for p in range(2 if agents is spaces[0] else 1):
                pods.append((agents, agents.start_pod(field_pod(agents.namespace, f"agent-{p}", agents.image))))
        victim_space, victim = pods[1]  # the second pod of the first namespace
        for agents, pod in pods:
            poll(lambda a=agents, p=pod: a.phase(p) == "Running", f"{pod} to run", 300)
            follower.follow(agents.namespace, pod)
        for agents, pod in pods:
            poll(lambda a=agents, p=pod: len({e["process"] for e in agent_events(follower.lines(a.namespace, p))
                                              if e["event"] == "ready"}) == PROCESSES,
                 f"the {PROCESSES} agents of {pod} to start", 300)  # fmt: skip
        mark("agents ready")
        time.sleep(SETTLE_SECONDS)

        mark("rollout restart 1")
        restart_operator(tools)
        wait_rollout(tools)
        mark("rollout 1 done")
        time.sleep(SETTLE_SECONDS)

        # The victim's locks now, to see them handed over.
        def victims_locks() -> dict[str, Obj]:
            return {r: lk for r, lk in locks_of(tools, victim_space.namespace).items()
                    if (lk.get("podRef") or {}).get("name") == victim}  # fmt: skip

        held = poll(victims_locks, f"{victim} to hold a lock", 120)
        mark(f"agent pod {victim} deleted (grace 5 s), holding {sorted(held)}; rollout restart 2")
        victim_deleted = time.time()
        tools.kubectl("delete", "pod", victim, "-n", victim_space.namespace, "--grace-period=5", "--wait=false")
        restart_operator(tools)
        time.sleep(3)
        current = sorted(operator_pods(tools))
        one = current[0]
        mark(f"operator pod {one} deleted (grace 5 s) during the rollout")
        tools.run("kubectl", "delete", "pod", one, "-n", RELEASE_NAMESPACE, "--grace-period=5", "--wait=false")
        wait_rollout(tools)
        poll(lambda: (p := operator_pods(tools)) and len(p) == 2 and all(p.values()) and p, "2 Ready pods", 300)
        mark("rollout 2 done, 2 operator pods Ready")

        def handed_over() -> bool:
            now = locks_of(tools, victim_space.namespace)
            return all(r in now and (now[r].get("podRef") or {}).get("name") != victim
                       and now[r]["fencingToken"] > lk["fencingToken"] for r, lk in held.items())  # fmt: skip

        poll(handed_over, f"the deleted pod's locks {sorted(held)} to be handed over", 180)
        mark("the deleted pod's locks handed over")
        last_disruption = time.time()
        first_tokens = {}
        if TOKEN_SECONDS:
            first_tokens = {(a.namespace, p): token_claims(tools, a.namespace, p) for a, p in pods if p != victim}
            mark(f"first tokens: {sorted({(t['iat'], t['exp']) for t in first_tokens.values()})}")
            # Until a minute past the latest first token's expiry: work after it used a rotated token.
            time.sleep(max(FINAL_SECONDS, max(t["exp"] for t in first_tokens.values()) + 60 - time.time()))
        else:
            time.sleep(FINAL_SECONDS)
        cutoff = time.time()
        mark("end of work")
        rotated = {key: token_claims(tools, *key) for key in first_tokens}
        if rotated:
            mark(f"tokens now: {sorted({(t['iat'], t['exp']) for t in rotated.values()})}")
        sampler.look()
        for monitor in monitors:
            monitor.settle()

    # Every pod's whole log: `kubectl logs` for those still running, the followed log for the deleted.
    survivors = [(a, p) for a, p in pods if p != victim]
    work: list[Interval] = []
    events_by_pod: dict[str, list[Obj]] = {}
    for agents, pod in pods:
        lines = follower.lines(agents.namespace, pod)
        events_by_pod[f"{agents.namespace}/{pod}"] = evs = agent_events(lines)
        work += work_intervals(evs, agents.namespace, cutoff, still_running=pod != victim)
    operator_logs = {pod: follower.lines(ns, pod) for (ns, pod) in follower.files if ns == RELEASE_NAMESPACE}
    warnings = []
    event_count = 0
    for ns in names:
        for ev in json.loads(tools.kubectl("get", "events", "-n", ns, "-o", "json"))["items"]:
            source = ev.get("reportingComponent") or (ev.get("source") or {}).get("component")
            if source == "kubelock-operator":
                event_count += 1
                # The deleted pod's refused claims are the Warnings expected (HolderPodTerminated).
                expected = ns == victim_space.namespace and ev.get("reason") == "HolderPodTerminated" and (
                    f"pod {victim} is terminating" in str(ev.get("message") or ev.get("note")))
                if ev.get("type") == "Warning" and not expected:
                    warnings.append(f"{ns} {ev.get('reason')}: {ev.get('message') or ev.get('note')}")

    per_item = Counter(w.item for w in work)
    REPORT.append(
        f"field day: {len(work)} work intervals on {len(per_item)} items by "
        f"{len({w.pod for w in work})} processes; {sum(len(m.grants) for m in monitors)} grants watched; "
        f"{len(operator_logs)} operator pods followed; longest unanswered claim "
        f"{max(sampler.longest.values(), default=0):.1f} s ({sampler.looks} looks); {event_count} operator Events; "
        f"load {min(loads):.1f}-{max(loads):.1f}; {time.monotonic() - began:.0f} s"
    )
    REPORT.extend(f"field day: {line}" for line in timeline)
    print("\n".join(REPORT[-len(timeline) - 1 :]))

    assert overlaps_and_token_order(work) == []
    assert [v for m in monitors for v in m.violations] == []
    for m in monitors:
        for resource, tokens in m.tokens_by_resource().items():
            assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), (resource, tokens)
    # No agent lost a lock or met an error, but the deleted pod's processes, refused once their pod
    # was being deleted (they still run until the grace's end): `Rejected`, never `Revoked` (they
    # waited and lost nothing; their holds ran to their end).
    refused = f"Rejected: pod {victim} is terminating"
    deleted_pod = f"{victim_space.namespace}/{victim}"
    assert not [
        e for pod, evs in events_by_pod.items() for e in evs
        if e["event"] in ("lost", "error") and e["time"] < cutoff
        and not (pod == deleted_pod and e["time"] >= victim_deleted and e.get("error") == refused)
    ]  # fmt: skip
    # Work went on after the last disruption: on every item, by every surviving process.
    after = [w for w in work if w.start > last_disruption]
    assert {w.item for w in after} == {f"{a.namespace}:work://e2e/item-{i}" for a in spaces for i in range(ITEMS)}
    assert {w.pod for w in after} == {f"{a.namespace}/{p}/w{i}" for a, p in survivors for i in range(PROCESSES)}
    assert max(sampler.longest.values(), default=0) < ANSWER_BOUND, sampler.longest
    for key, first in first_tokens.items():
        assert rotated[key]["iat"] > first["iat"] and first["exp"] < cutoff, (key, first, rotated[key])
        # Work went on in that pod past its first token's expiry.
        assert any(w.start > first["exp"] for w in after if w.pod.startswith(f"{key[0]}/{key[1]}/")), key
    assert len(operator_logs) >= 6, f"operator pods followed: {sorted(operator_logs)}"  # 2 + 2 + 2 (+1)
    assert {pod: loops for pod, lines in operator_logs.items() if (loops := error_loops(lines))} == {}
    assert warnings == []
    # Each operator process sends a namespace at most a burst of 25 routine Events, then a summary per
    # reason a minute (operator/events.py); the 3-4 minutes here leave a few summaries per reason.
    assert 0 < event_count <= len(operator_logs) * NAMESPACES * EVENTS_PER_PROCESS, event_count
