"""kubelock over a three-member etcd, as production control planes run it, while etcd misbehaves: the
leader is killed (-9) and comes back, two members stop for longer than a lease (no quorum: every
write fails), a member hangs (SIGSTOP) and goes on; then the store fills to its quota (NOSPACE: etcd
refuses writes) and is reclaimed (compaction, defragmentation, the alarm disarmed).

Agents run meanwhile as processes of their own (`tests.support.lockworkers`: SDK waiters, SDK
try-locks and `kubelock run`, all renewing) and write down every hold. What must hold throughout:
no two holds of a resource overlap, tokens grow with the holds, no holder works past the lease end it
last saw (fail closed), every attempt is answered, a claim made once quorum is back is granted
within a bound, and the operator survives without an error loop.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException

from kubelock.sdk import LockClient, LockError
from kubelock.testbed import ControlPlane
from tests.support.claims import MIN_WAIT_SECONDS, Locks, phase_of, status_of, wait_until
from tests.support.operator import REPO, OperatorProcess
from tests.support.planes import own_plane, own_plane_fixtures

PREFIX = "kl-etcd-"
TTL = 6  # every agent's lease
QUOTA = 16 * 1024 * 1024  # --quota-backend-bytes of every member: the bed itself uses well under 1 MiB
SLACK = 10.0  # scheduling on two shared, loaded cores: a bound is checked with this much to spare
# A claim made once quorum is back is answered within this: the API server's etcd client must find
# the members again, the operator's watches resume; on a loaded machine that takes a while.
ANSWER_BOUND = 45.0
ERROR_WORDS = ("Traceback", " ERROR ", "[ERROR")
RETRY_WORDS = (" failed", "retrying in")  # a reconcile that failed, as the operator logs it


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with own_plane(tmp_path_factory.mktemp("etcd3-plane"), "the test bed's own etcd members",
                   controller_manager=False, kwok=False, etcd_members=3, etcd_quota_bytes=QUOTA) as plane:  # fmt: skip
        yield plane


admin, ns, operator = own_plane_fixtures(PREFIX)


@pytest.fixture(autouse=True)
def _members_back(plane: ControlPlane) -> Iterator[None]:
    """Every member runs again after a test, whatever it did to them, for the next test."""
    yield
    for member in plane.etcd.members:
        if member.running:
            plane.etcd.resume_member(member.name)
        else:
            plane.etcd.start_member(member.name)


def start_workers(plane: ControlPlane, ns: str, until: float, out: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBELOCK_"))}
    env.update(KUBECONFIG=str(plane.kubeconfig), KUBELOCK_NAMESPACE=ns,
               PYTHONPATH=os.pathsep.join([str(REPO / "operator"), str(REPO)]))  # fmt: skip
    kinds = ("wait", "wait", "try", "run")
    workers = []
    for index, kind in enumerate(kinds):
        record = out / f"{kind}-{index}.jsonl"
        argv = [sys.executable, "-m", "tests.support.lockworkers", "--kind", kind, "--resources",
                "deploy://etcd-a,deploy://etcd-b", "--until", f"{until:.3f}", "--ttl", str(TTL), "--out",
                str(record), "--instance", f"w{index}", "--seed", str(index)]  # fmt: skip
        log = (out / f"{kind}-{index}.log").open("wb")
        workers.append((subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), record))
        log.close()
    return workers


def read_records(workers: list[tuple[subprocess.Popen[bytes], Path]]) -> list[dict[str, Any]]:
    records = []
    for _, path in workers:
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def check_holds(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """No overlap of work intervals per resource, tokens strictly growing with the starts, and no
    SDK holder past the last lease end it saw. Returns the holds per resource."""
    holds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("outcome") == "held":
            holds[record["resource"]].append(record)
    for resource, held in holds.items():
        held.sort(key=lambda h: h["start"])
        for before, after in itertools.pairwise(held):
            assert after["start"] >= before["end"], f"two holders of {resource} at once: {before} and {after}"
            assert after["token"] > before["token"], f"token of {resource} did not grow: {before} then {after}"
        for hold in held:
            if hold.get("expires") is not None:
                assert hold["end"] <= hold["expires"], f"a holder of {resource} worked past its lease: {hold}"
    return holds


def error_lines(op: OperatorProcess) -> list[str]:
    return [line for line in op.log_text().splitlines() if any(word in line for word in ERROR_WORDS)
            or all(word in line for word in RETRY_WORDS)]  # fmt: skip


def probe(locks: Locks, name: str, resource: str) -> float:
    """Seconds from a claim's creation to its grant; the creation itself is retried while the API server
    cannot write (it answers 5xx until etcd has quorum and room again)."""
    began = time.monotonic()
    while True:
        try:
            locks.claim(name, resource, f"probe-{name}", ttl=TTL)
            break
        except ApiException as error:
            if error.status < 500 or time.monotonic() - began > MIN_WAIT_SECONDS:
                raise
            time.sleep(0.5)
    locks.wait_phase(name, "Held", timeout=MIN_WAIT_SECONDS)
    return time.monotonic() - began


def wait_quorum(plane: ControlPlane) -> float:
    began = time.monotonic()
    wait_until(lambda: plane.etcd.leader() is not None, what="an etcd leader", timeout=60)
    return time.monotonic() - began


def test_holders_waiters_and_the_operator_through_a_lost_leader_a_lost_quorum_and_a_hung_member(
    plane: ControlPlane, admin: ApiClient, ns: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    etcd = plane.etcd
    locks = Locks(admin, ns)
    began = time.time()
    workers = start_workers(plane, ns, began + 75, tmp_path)
    timeline: list[str] = []
    try:
        time.sleep(10)
        # 1. The leader dies (-9) and comes back.
        leader = etcd.leader()
        assert leader is not None
        etcd.kill_member(leader)
        # `make run` goes on with one member of three lost (`serving`), not with every process (`running`).
        assert plane.serving and not plane.running and plane.stopped_etcd_members() == [leader]
        elected = wait_quorum(plane)
        timeline.append(f"leader {leader} killed at {time.time() - began:.1f} s; new leader after {elected:.1f} s")
        time.sleep(4)
        etcd.start_member(leader)
        timeline.append(f"{leader} back at {time.time() - began:.1f} s")
        time.sleep(4)
        # 2. Two members stop: no quorum, every write fails, for longer than two leases.
        stopped = [m.name for m in etcd.members][:2]
        for name in stopped:
            etcd.kill_member(name)
        lost_at = time.time()
        assert not plane.serving and sorted(plane.stopped_etcd_members()) == sorted(stopped)
        time.sleep(2 * TTL + 3)
        for name in stopped:
            etcd.start_member(name, wait=False)
        wait_quorum(plane)
        back = time.time()
        assert plane.serving and plane.running
        timeline.append(f"no quorum from {lost_at - began:.1f} s for {back - lost_at:.1f} s")
        answered = probe(locks, "after-quorum", "deploy://etcd-probe")
        timeline.append(f"a claim made once quorum was back held after {answered:.1f} s")
        assert answered < ANSWER_BOUND, timeline
        # 3. A member hangs (the leader: its followers must elect another) and goes on.
        hung = etcd.leader()
        assert hung is not None
        etcd.pause_member(hung)
        time.sleep(8)
        etcd.resume_member(hung)
        timeline.append(f"{hung} paused 8 s at {time.time() - began - 8:.1f} s")
        probe_hung = probe(locks, "after-pause", "deploy://etcd-probe-2")
        timeline.append(f"a claim made after the pause held after {probe_hung:.1f} s")
        assert probe_hung < ANSWER_BOUND, timeline
        settled = len(error_lines(operator))
        # Every attempt is answered: the workers end by themselves, their last attempt bounded by
        # its wait timeout and a lease.
        for process, _ in workers:
            process.wait(timeout=max(MIN_WAIT_SECONDS, 75 + 40 + 4 * TTL + SLACK - (time.time() - began)))
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
    records = read_records(workers)
    holds = check_holds(records)
    outcomes: dict[str, int] = defaultdict(int)
    for record in records:
        outcomes[record["outcome"]] += 1
    lost = [r for r in records if r.get("lost")]
    print("\n".join(timeline))
    print(f"attempts {len(records)}: {dict(outcomes)}; holds per resource "
          f"{ {r: len(h) for r, h in holds.items()} }; lost leases {len(lost)}")  # fmt: skip
    assert all(process.returncode == 0 for process, _ in workers), [p.returncode for p, _ in workers]
    # An attempt ends held, refused (busy) or timed out, never in a failure the SDK did not type.
    assert outcomes.get("error", 0) == 0, [r for r in records if r["outcome"] == "error"][:5]
    # Holds were made after quorum came back, not only before the outage.
    assert any(h["start"] > back for held in holds.values() for h in held), timeline
    assert sum(len(h) for h in holds.values()) >= 8, outcomes
    # Every claim left in the namespace is answered (the agents' own are released or expired).
    wait_until(lambda: all(phase_of(c) for c in locks.claims()), what="every claim to have a phase", timeout=60)
    assert operator.alive
    # The operator says what failed while etcd could not write, and stops saying it once it can: at
    # most a few lines since the last probe was granted (the workers ran on for a while after it).
    errors = error_lines(operator)
    print(f"operator error lines: {len(errors)}, {len(errors) - settled} after the last probe")
    assert len(errors) - settled <= 4, errors[settled:][-20:]
    assert len(errors) < 200, errors[-20:]


def fill(plane: ControlPlane) -> int:
    """Puts 1 MiB values until etcd refuses (NOSPACE); returns how many went in, as etcd counts them:
    the put that takes the store past its quota can be applied and still be answered NOSPACE (etcd's
    quota check at apply time), and one whose answer came too late on a busy machine may be in too."""
    count = 0
    with contextlib.suppress(OSError):
        while count < 2 * QUOTA // (1024 * 1024):
            plane.etcd.put(b"/fill/%d" % count, b"x" * (1024 * 1024))
            count += 1
    stored = plane.etcd.count_prefix(b"/fill/")
    assert count <= stored <= count + 1, (count, stored)
    return stored


def test_a_full_etcd_holds_the_lock_still_and_grants_after_it_is_reclaimed(
    plane: ControlPlane, admin: ApiClient, ns: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    etcd = plane.etcd
    locks = Locks(admin, ns)
    locks.claim("a", "deploy://full", "agent-a", ttl=TTL)
    first = locks.wait_phase("a", "Held")
    locks.claim("b", "deploy://full", "agent-b", wait=True)
    locks.wait_phase("b", "Pending")
    # An SDK holder renewing in the background: its renewals fail once etcd is full.
    client = LockClient(kubeconfig=str(plane.kubeconfig), namespace=ns, instance="full")
    lease = client.lock("deploy://full-sdk", ttl=TTL, renew_deadline=TTL * 2 / 3)
    lost_at: list[float] = []
    lease.add_listener(lambda error: lost_at.append(time.time()))
    lease.__enter__()
    time.sleep(1.5)  # a renewal went through
    filled = fill(plane)
    assert etcd.alarms() == ["NOSPACE"]
    full_at = time.time()
    with pytest.raises(ApiException) as refused:
        locks.claim("c", "deploy://full-c", "agent-c")
    assert refused.value.status >= 500 and "space exceeded" in str(refused.value.body), refused.value
    time.sleep(2 * TTL)  # a's lease ends meanwhile: no write can record it, so nothing is granted
    # Fail closed: the SDK holder called its lease lost before the last lease end it was told of.
    assert lease.error is not None and lost_at, "the SDK holder did not learn that it could not renew"
    assert lease.expires_at is not None and lost_at[0] < lease.expires_at.timestamp(), (lost_at, lease.expires_at)
    assert phase_of(locks.get("b")) == "Pending"
    assert phase_of(locks.get("a")) == "Held"
    assert operator.alive
    # The operator retries a's expiry all along (every second once backed off), but says so in a few
    # lines, not one a retry: an etcd may stay full for hours.
    retries = error_lines(operator)
    per_resource: dict[str, int] = defaultdict(int)
    for line in retries:
        per_resource[line.split("reconcile of ", 1)[-1].split(" in ", 1)[0]] += 1
    assert per_resource["deploy://full"] >= 1, retries
    assert max(per_resource.values()) <= 8, retries
    assert etcd.delete_prefix(b"/fill/") == filled
    etcd.reclaim()
    assert etcd.alarms() == []
    reclaimed = time.time()
    handed = locks.wait_phase("b", "Held", timeout=ANSWER_BOUND)
    granted = time.time() - reclaimed
    print(f"{filled} MiB filled; full for {reclaimed - full_at:.1f} s; b held {granted:.1f} s after the reclaim; "
          f"lines of failed reconciles meanwhile: {dict(per_resource)}")
    assert granted < ANSWER_BOUND
    assert phase_of(locks.get("a")) == "Expired"
    assert status_of(handed)["fencingToken"] > status_of(first)["fencingToken"]
    assert probe(locks, "c", "deploy://full-c") < ANSWER_BOUND
    with contextlib.suppress(LockError):
        lease.__exit__(None, None, None)
    client.close()
    assert operator.alive
