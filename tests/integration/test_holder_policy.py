"""Holder policy against the real control plane and operator: revocation requests honoured (a
`kubelock run` command told with SIGTERM, or killed before the deadline) and forced (the lock broken
when the grace ends), preemption by priority, the queue ordered by priority with aging under a
stream of claims, onBusy, who may ask for priority or revocation (admission), and a frozen
`kubelock run` whose command dies before the next holder's grant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi

from kubelock.api.constants import REVOKE_BY_ANNOTATION, REVOKE_GRACE_ANNOTATION
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, lock_name, normalise
from kubelock.testbed import ControlPlane, wait_until
from tests.integration.conftest import client_from_kubeconfig
from tests.integration.test_multi import claim_all, held_grants
from tests.support.access import bind, bind_agents, wait_allowed
from tests.support.claims import GROUP, VERSION, ClaimHistory, Locks, phase_of, status_of
from tests.support.commands import Run, argv_of, environment, finish, run
from tests.support.operator import OperatorProcess

Cluster = Any
DEADLINE = 60.0
INSTANCE = "w1"
URI = "deploy://api-prod"
AGING = 1  # the operator's priorityAgingSeconds here: one point per second of waiting
PREEMPTION_DELTA = 500
PREEMPTION_GRACE = 2


def holder(user: str) -> str:
    return f"user:{user}/{INSTANCE}"


@dataclass
class Shell:
    plane: ControlPlane
    namespace: str
    admin: Locks
    api: ApiClient

    def env(self, user: str) -> dict[str, str]:
        return environment(self.plane.user_kubeconfig(user), self.namespace, INSTANCE)

    def __call__(self, user: str, command: str, *args: str) -> Run:
        return run(command, *args, env=self.env(user))

    def claim(self, user: str, uri: str = URI) -> str:
        return claim_name(holder(user), normalise(uri))

    def events(self, reason: str) -> list[Any]:
        items = CoreV1Api(self.api).list_namespaced_event(self.namespace).items
        return [e for e in items if e.reason == reason]

    def first_event(self, reason: str) -> Any:
        """The first Event of `reason`, waited for: the operator posts it beside its status write,
        and a loaded machine may show the status first."""
        wait_until(lambda: self.events(reason), what=f"a {reason} Event", timeout=DEADLINE)
        return self.events(reason)[0]

    def lock_holder(self, uri: str = URI) -> str | None:
        try:
            return str(self.admin.lock(lock_name(normalise(uri)))["spec"]["claimRef"]["name"])
        except ApiException as error:
            if error.status == 404:
                return None
            raise


@pytest.fixture
def sh(control_plane: Cluster, admin_api: ApiClient, namespace: str, tmp_path: Path) -> Iterator[Shell]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    bind_agents(admin_api, namespace)
    bind(admin_api, namespace, "kubelock-admin", "lockadmin")
    wait_allowed(admin_api, "lockadmin", namespace, "delete", "resourcelocks")
    wait_allowed(admin_api, "lockadmin", namespace, "prioritize", "lockclaims")
    settings = ("--priority-aging-seconds", str(AGING), "--preemption-priority-delta", str(PREEMPTION_DELTA),
                "--preemption-grace-seconds", str(PREEMPTION_GRACE))
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,),
                         extra_args=settings):
        yield Shell(control_plane, namespace, Locks(admin_api, namespace), admin_api)


# ---- admission ----------------------------------------------------------------------------------


def user_client(sh: Shell, user: str) -> ApiClient:
    return client_from_kubeconfig(sh.plane.user_kubeconfig(user))


def create_as(sh: Shell, user: str, name: str, **spec: object) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name},
            "spec": {"resource": URI, "holder": holder(user), **spec}}
    CustomObjectsApi(user_client(sh, user)).create_namespaced_custom_object(
        GROUP, VERSION, sh.namespace, "lockclaims", body
    )


def test_priority_above_zero_needs_the_prioritize_verb(sh: Shell) -> None:
    with pytest.raises(ApiException) as refused:
        create_as(sh, "alice", "alice-vip", priority=5)
    assert refused.value.status == 403
    assert "needs the RBAC verb prioritize" in str(refused.value.body)
    create_as(sh, "alice", "alice-modest", priority=0)
    create_as(sh, "alice", "alice-yielding", priority=-5)
    create_as(sh, "lockadmin", "admin-vip", priority=5)  # kubelock-admin has the verb
    done = sh("alice", "kubelock", "acquire", "deploy://other", "--wait", "--priority", "3")
    assert done.code == ExitCode.FORBIDDEN, done.stderr
    assert "prioritize" in done.stderr


def test_only_lock_admins_may_ask_for_a_revocation(sh: Shell) -> None:
    assert sh("alice", "kubelock", "acquire", URI, "--ttl", "60").code == ExitCode.OK
    alice = CustomObjectsApi(user_client(sh, "alice"))
    name = sh.claim("alice")
    for marks in ({REVOKE_BY_ANNOTATION: "user:alice"}, {REVOKE_GRACE_ANNOTATION: "5"}):
        with pytest.raises(ApiException) as refused:
            alice.patch_namespaced_custom_object(GROUP, VERSION, sh.namespace, "lockclaims", name,
                                                 {"metadata": {"annotations": marks}})
        assert refused.value.status == 403 and "only those who may break locks" in str(refused.value.body)
    admin = CustomObjectsApi(user_client(sh, "lockadmin"))
    with pytest.raises(ApiException) as forged:
        admin.patch_namespaced_custom_object(GROUP, VERSION, sh.namespace, "lockclaims", name,
                                             {"metadata": {"annotations": {REVOKE_BY_ANNOTATION: "someone-else"}}})
    assert forged.value.status == 403 and "must be your own user name" in str(forged.value.body)
    denied = sh("bob", "kubelock", "revoke", "--request", URI)
    assert denied.code == ExitCode.FORBIDDEN, denied.stderr
    assert phase_of(sh.admin.get(name)) == "Held" and "revocation" not in status_of(sh.admin.get(name))


# ---- revocation -----------------------------------------------------------------------------------

CHILD = r"""
import os, pathlib, signal, sys, time
d = pathlib.Path(sys.argv[1])
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def on_term(*_):
        (d / "term").write_text(repr(time.time()))
        sys.exit(7)
    signal.signal(signal.SIGTERM, on_term)
def beat():
    (d / "beat.tmp").write_text(repr(time.time()))
    os.replace(d / "beat.tmp", d / "beat")
# A first beat before the pid: the test reads the last beat of a command that may be stopped as soon
# as its pid is seen (a loaded machine can hold it up between the two for as long as it likes).
beat()
(d / "pid.tmp").write_text(str(os.getpid()))
os.rename(d / "pid.tmp", d / "pid")
while True:
    time.sleep(0.02)
    beat()
"""


def start_run(sh: Shell, user: str, workdir: Path, mode: str, *options: str) -> tuple[subprocess.Popen[str], int]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "child.py").write_text(CHILD)
    child = [sys.executable, str(workdir / "child.py"), str(workdir), mode]
    process = subprocess.Popen([*argv_of("kubelock"), "run", URI, "-o", "json", *options, "--", *child],
                               env=sh.env(user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (workdir / "pid").exists(), what="the command to start", timeout=DEADLINE)
    return process, int((workdir / "pid").read_text())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def result(done: Run) -> dict[str, Any]:
    payload = json.loads(done.stdout.splitlines()[-1])
    assert isinstance(payload, dict)
    return payload


def test_a_revocation_request_reaches_the_command_and_the_lock_is_given_back(sh: Shell, tmp_path: Path) -> None:
    process, pid = start_run(sh, "alice", tmp_path / "run", "exit-on-term", "--ttl", "30")
    asked = sh("lockadmin", "kubelock", "revoke", "--request", URI, "--grace", "20", "--reason", "hotfix", "-o",
               "json")
    assert asked.code == ExitCode.OK, asked.stderr
    [request] = asked.json["requested"]
    assert (request["holder"], request["graceSeconds"], request["reason"]) == (holder("alice"), 20, "hotfix")
    done = finish(process)
    got = result(done)
    assert done.code == 7, done.stderr
    assert (got["endedBy"], got["exitCode"], got["killed"], got["released"]) == ("RevocationRequested", 7, False,
                                                                                True)
    assert got["revocation"]["requestedBy"] == "lockadmin" and got["revocation"]["reason"] == "hotfix"
    assert (tmp_path / "run" / "term").exists() and not alive(pid)
    wait_until(lambda: sh.lock_holder() is None, what="the lock to be released", timeout=DEADLINE)
    event = sh.first_event("RevocationRequested")
    assert len(sh.events("RevocationRequested")) == 1
    assert "lockadmin asks user:alice/w1 to give back" in event.message and "hotfix" in event.message
    assert not sh.events("RevocationGraceExpired"), "given back in time: nothing broken"


def test_a_command_ignoring_the_request_is_killed_before_the_lock_is_broken(sh: Shell, tmp_path: Path) -> None:
    process, pid = start_run(sh, "alice", tmp_path / "run", "ignore-term", "--ttl", "30")
    # 10 s: `kubelock run` must learn of the request, SIGTERM, wait and SIGKILL within the grace; 4 s
    # can be too little on a loaded machine, and the lock is then broken first.
    assert sh("lockadmin", "kubelock", "revoke", "--request", URI, "--grace", "10").code == ExitCode.OK
    done = finish(process)
    last_beat = float((tmp_path / "run" / "beat").read_text())
    got = result(done)
    assert not alive(pid) and got["killed"] is True and got["signal"] == "SIGKILL", got
    assert got["endedBy"] == "RevocationRequested"
    deadline = datetime.fromisoformat(got["revocation"]["deadline"].replace("Z", "+00:00")).timestamp()
    assert last_beat < deadline, "dead before the request's deadline"
    wait_until(lambda: sh.lock_holder() is None, what="the lock to be released", timeout=DEADLINE)
    assert not sh.events("RevocationGraceExpired"), "released before the deadline: nothing broken"


def test_the_lock_is_broken_when_the_grace_ends(sh: Shell) -> None:
    assert sh("alice", "kubelock", "acquire", URI, "--ttl", "120").code == ExitCode.OK
    waiter = sh.claim("bob")
    sh.admin.claim(waiter, URI, holder("bob"), wait=True)
    sh.admin.wait_phase(waiter, "Pending", DEADLINE)
    # The request stands in the status for its 2 s grace only: a poll that a loaded machine holds up
    # longer (the revoke command's own exit can take that) finds the lock broken already. The watch
    # shows every write.
    with ClaimHistory(sh.api, sh.namespace) as history:
        assert sh("lockadmin", "kubelock", "revoke", "--request", URI, "--grace", "2", "--reason", "stuck").code == 0
        held = history.wait_for(sh.claim("alice"), lambda b: "revocation" in status_of(b), DEADLINE, "asked")
    assert phase_of(held) == "Held"
    revocation = status_of(held)["revocation"]
    assert (revocation["requestedBy"], revocation["graceSeconds"], revocation["reason"]) == ("lockadmin", 2, "stuck")
    asked = datetime.fromisoformat(revocation["requestedAt"].replace("Z", "+00:00"))
    deadline = datetime.fromisoformat(revocation["deadline"].replace("Z", "+00:00"))
    assert (deadline - asked).total_seconds() == 2
    revoked = sh.admin.wait_phase(sh.claim("alice"), "Revoked", DEADLINE)
    assert status_of(revoked)["reason"] == "RevocationGraceExpired"
    assert "lockadmin asked user:alice/w1 to give it back" in status_of(revoked)["message"]
    assert "stuck" in status_of(revoked)["message"]
    sh.admin.wait_phase(waiter, "Held", DEADLINE)
    event = sh.first_event("RevocationGraceExpired")
    assert len(sh.events("RevocationGraceExpired")) == 1
    assert event.type == "Warning"
    gone = sh("alice", "kubelock", "heartbeat", URI)
    assert gone.code == ExitCode.LOST, gone.stderr


def test_a_waiter_far_above_the_holder_preempts_it(sh: Shell) -> None:
    sh.admin.claim("low", URI, "agent-low", ttl=120)
    sh.admin.wait_phase("low", "Held", DEADLINE)
    sh.admin.claim("near", URI, "agent-near", wait=True, priority=100)
    sh.admin.wait_phase("near", "Pending", DEADLINE)
    time.sleep(1.0)
    assert "revocation" not in status_of(sh.admin.get("low")), "below the delta: no preemption"
    # Asked for PREEMPTION_GRACE (2 s) only: seen through the watch, which a loaded machine cannot outrun.
    with ClaimHistory(sh.api, sh.namespace) as history:
        sh.admin.claim("vip", URI, "agent-vip", wait=True, priority=PREEMPTION_DELTA)
        held = history.wait_for("low", lambda b: "revocation" in status_of(b), DEADLINE, "asked to give back")
    assert phase_of(held) == "Held"
    revocation = status_of(held)["revocation"]
    assert revocation["requestedBy"] == "kubelock-operator" and "agent-vip" in revocation["reason"]
    assert revocation["graceSeconds"] == PREEMPTION_GRACE
    sh.admin.wait_phase("vip", "Held", DEADLINE)
    assert status_of(sh.admin.get("low"))["reason"] == "RevocationGraceExpired"


def test_a_claim_of_several_preempts_a_holder_and_is_preempted_as_a_whole(sh: Shell) -> None:
    other = "deploy://api-canary"
    sh.admin.claim("low", URI, "agent-low", ttl=120)
    sh.admin.wait_phase("low", "Held", DEADLINE)
    # Each request stands for PREEMPTION_GRACE (2 s) only: seen through the watch, which a loaded
    # machine cannot outrun.
    with ClaimHistory(sh.api, sh.namespace) as history:
        claim_all(sh.admin, "vip", [URI, other], "agent-vip", wait=True, priority=PREEMPTION_DELTA,
                  ttlSeconds=120)
        asked = history.wait_for("low", lambda b: "revocation" in status_of(b), DEADLINE, "asked to give back")
        assert phase_of(asked) == "Held"
        revocation = status_of(asked)["revocation"]
        assert revocation["requestedBy"] == "kubelock-operator" and "agent-vip" in revocation["reason"]
        assert set(held_grants(sh.admin.wait_phase("vip", "Held", DEADLINE))) == {URI, other}
        assert status_of(sh.admin.get("low"))["reason"] == "RevocationGraceExpired"
        # Held, it is asked to give back its whole set by a waiter far above it on one of its resources.
        sh.admin.claim("top", other, "agent-top", wait=True, priority=2 * PREEMPTION_DELTA)
        asked = history.wait_for("vip", lambda b: phase_of(b) == "Held" and "revocation" in status_of(b), DEADLINE,
                                 "asked to give back")
        assert "agent-top" in status_of(asked)["revocation"]["reason"]
    sh.admin.wait_phase("top", "Held", DEADLINE)
    assert status_of(sh.admin.get("vip"))["reason"] == "RevocationGraceExpired"
    assert sh.lock_holder(URI) is None  # the rest of its set went with it


# ---- priorities ---------------------------------------------------------------------------------


def test_priority_orders_the_queue_and_aging_lets_a_low_waiter_through_a_stream(sh: Shell) -> None:
    """A low-priority waiter behind a stream of priority-3 claims: the first grant goes to the higher
    priority, but with one point per second of waiting the low one is served while the stream still
    runs (each newcomer has waited about one hold; the low one, ever longer)."""
    sh.admin.claim("h0", URI, "agent-h0", ttl=120)
    sh.admin.wait_phase("h0", "Held", DEADLINE)
    sh.admin.claim("low", URI, "agent-low", wait=True)
    sh.admin.claim("s1", URI, "agent-s1", wait=True, priority=3)
    sh.admin.wait_phases(["low", "s1"], "Pending", DEADLINE)
    order: list[str] = []
    current = "h0"
    for k in range(2, 14):
        sh.admin.delete(current)
        released = current
        wait_until(lambda: sh.lock_holder() not in (None, released), what="the next grant",  # noqa: B023
                   timeout=DEADLINE)
        current = str(sh.lock_holder())
        order.append(current)
        if current == "low":
            break
        sh.admin.claim(f"s{k}", URI, f"agent-s{k}", wait=True, priority=3)  # the stream goes on
        time.sleep(1.0)
    assert order[0] == "s1", f"priority first: {order}"
    assert "low" in order, f"the low-priority waiter starved: {order}"
    assert len(order) <= 8, f"aging took too long: {order}"


# ---- onBusy -------------------------------------------------------------------------------------


def test_on_busy_requeue_goes_to_the_end_of_the_queue(sh: Shell) -> None:
    sh.admin.claim("h", URI, "agent-h", ttl=120)
    sh.admin.wait_phase("h", "Held", DEADLINE)
    # "other" is queued behind "patient" before patient's wait can end: created right after it, with
    # a wait long enough for a loaded machine (at 3 s patient could be requeued before other existed, and
    # other never moved ahead).
    sh.admin.claim("patient", URI, "agent-p", wait=True, wait_timeout=8, onBusy="Requeue")
    sh.admin.claim("other", URI, "agent-o", wait=True)
    sh.admin.claim("quitter", URI, "agent-q", wait=True, wait_timeout=3)
    sh.admin.wait_phase("other", "Pending", DEADLINE)
    requeued = sh.admin.wait_for("patient", lambda b: (status_of(b).get("requeues") or 0) >= 1, DEADLINE, "requeued")
    assert phase_of(requeued) == "Pending"
    assert status_of(sh.admin.wait_phase("quitter", "TimedOut", DEADLINE))["reason"] == "WaitTimedOut"
    wait_until(lambda: status_of(sh.admin.get("other")).get("queuePosition") == 1,
               what="the other waiter to move ahead", timeout=DEADLINE)
    event = sh.first_event("Requeued")
    assert "back at the end of the queue (onBusy: Requeue" in event.message
    sh.admin.delete("h")
    sh.admin.wait_phase("other", "Held", DEADLINE)
    assert phase_of(sh.admin.get("patient")) == "Pending"
    with pytest.raises(ApiException) as refused:
        sh.admin.claim("bad", URI, "agent-b", wait=True, onBusy="Requeue")
    assert refused.value.status == 422 and "needs wait: true and waitTimeoutSeconds" in str(refused.value.body)


# ---- a frozen `kubelock run` ---------------------------------------------------------------------


def test_the_command_of_a_frozen_kubelock_run_dies_before_the_next_grant(sh: Shell, tmp_path: Path) -> None:
    """SIGSTOP to `kubelock run` (not to its command): nothing renews the lease and nothing in
    kubelock run can act, yet the command is dead before the lease expires and bob is granted."""
    process, pid = start_run(sh, "alice", tmp_path / "run", "ignore-term", "--ttl", "6")
    waiter = sh.claim("bob")
    sh.admin.claim(waiter, URI, holder("bob"), wait=True)
    sh.admin.wait_phase(waiter, "Pending", DEADLINE)
    process.send_signal(signal.SIGSTOP)
    try:
        granted = sh.admin.wait_phase(waiter, "Held", DEADLINE)
        wait_until(lambda: not alive(pid), what="the command to die", timeout=DEADLINE)
        last_beat = float((tmp_path / "run" / "beat").read_text())
        acquired = datetime.fromisoformat(status_of(granted)["acquiredAt"].replace("Z", "+00:00")).timestamp()
        assert last_beat < acquired, f"the command outlived the lease: last beat {last_beat}, next grant {acquired}"
    finally:
        process.send_signal(signal.SIGCONT)
    done = finish(process)
    assert done.code == ExitCode.LOST, done.stderr


def test_the_command_of_a_killed_kubelock_run_is_stopped(sh: Shell, tmp_path: Path) -> None:
    process, pid = start_run(sh, "alice", tmp_path / "run", "exit-on-term", "--ttl", "30")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    wait_until(lambda: not alive(pid), what="the command to stop", timeout=10)
    assert (tmp_path / "run" / "term").exists(), "told with SIGTERM first"


def test_requeues_back_off_so_one_claim_cannot_keep_the_operator_writing(sh: Shell) -> None:
    """`waitTimeoutSeconds: 1` with `onBusy: Requeue` used to cost a status write and an Event every
    second for as long as the claim waited; after its n-th requeue a wait now lasts at least 2^n s
    (requeued at 1, 3, 7, 15 s, ...)."""
    sh.admin.claim("h", URI, "agent-h", ttl=120)
    sh.admin.wait_phase("h", "Held", DEADLINE)
    sh.admin.claim("churn", URI, "user:mallory/churn", wait=True, wait_timeout=1, onBusy="Requeue")

    def requeues(body: dict[str, Any]) -> int:
        return int(status_of(body).get("requeues") or 0)

    # Not a count in a fixed window (a loaded machine requeues late, and fewer): the time between the
    # first requeue seen and the fourth, which back-off makes at least 2 + 4 + 8 = 14 s from the first
    # (every second would be 3 s). Load only lengthens it; the margin is for seeing the first late.
    seen = requeues(sh.admin.wait_for("churn", lambda b: requeues(b) >= 1, DEADLINE, "a first requeue"))
    seen_at = time.monotonic()
    fourth = sh.admin.wait_for("churn", lambda b: requeues(b) >= 4, 2 * DEADLINE, "a fourth requeue")
    between = time.monotonic() - seen_at
    least = sum(2**n for n in range(seen, 4))  # the wait after the n-th requeue lasts at least 2^n s
    assert seen >= 4 or between >= least - 5, f"from requeue {seen} to 4 in {between:.1f} s: no back-off"
    assert phase_of(fourth) == "Pending"
