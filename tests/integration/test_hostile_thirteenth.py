"""A hostile agent, a thirteenth pass (docs/security.md, "A hostile agent, a thirteenth pass (2026-11-28)").
The static users alice and bob bound to `kubelock-agent` (and `lockadmin` to `kubelock-admin`), against
the real API server and an operator of this tree: what a command under `kubelock run` leaves running
(a background job, a grandchild that left its group and session) when it ends or its lock is broken;
a semaphore whose capacity is lowered under its holders and waiters; a Shared holder renewing while an
exclusive waiter is queued and readers arrive behind it; a `podRef` that tries to name another
namespace's pod.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    ApiException,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
    V1Container,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
)

from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, normalise
from kubelock.testbed import ControlPlane
from tests.integration.conftest import ensure_service_account
from tests.integration.test_hostile_seventh import AGENT, REVOKED_SECONDS, replace_file, revoked, token_bound_to_secret
from tests.integration.test_policies import apply_policy
from tests.support.access import agents_namespace, bind, service_account_user, wait_allowed
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.commands import environment, finish, run, start
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "klh13-"
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
INSTANCE = "w13"
Body = dict[str, Any]


@pytest.fixture(scope="module")
def ns(admin_api: ApiClient, control_plane: ControlPlane, prefix_operator: OperatorProcess) -> Iterator[str]:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    with agents_namespace(admin_api, PREFIX, lock_admin=True) as name:
        yield name


def env_of(control_plane: ControlPlane, user: str, ns: str) -> dict[str, str]:
    return environment(control_plane.user_kubeconfig(user), ns, INSTANCE)


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


def last_json(stdout: str) -> Body:
    payload: Body = json.loads(stdout.splitlines()[-1])
    return payload


class Left:
    """The pid a process the command leaves behind writes of itself (whole: renamed into place), and
    the clean-up should the process outlive the test (the defect these tests look for)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pid(self) -> int:
        wait_until(self.path.exists, what=f"{self.path.name} written", timeout=DEADLINE)
        return int(self.path.read_text())

    def kill(self) -> None:
        if self.path.exists() and running(pid := int(self.path.read_text())):
            os.kill(pid, signal.SIGKILL)


# The process left behind writes a first line of work and then its own pid once it is what it will
# be (in its own session, for `setsid`), then appends a line every 0.1 s for as long as it lives: the
# work it would go on doing with the lock's token. The first line comes before the pid so that a
# process stopped as soon as its pid is seen has still written the token it was given. Its output
# goes to a file, not to the command's stdout (a pipe kept open would hold up whoever reads `kubelock
# run`'s output).
WORKER = (
    'echo "$KUBELOCK_FENCING_TOKEN" >> "$1.work"; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; '
    'while :; do sleep 0.1; echo "$KUBELOCK_FENCING_TOKEN" >> "$1.work"; done'
)


def test_a_job_the_command_left_in_the_background_is_stopped_before_the_lock_is_released(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """`kubelock run URI -- sh -c 'worker &'`: the command ends at once, its background job goes on
    with the lock's token in its environment. Before: the lock was released and bob granted it while
    the job still worked. Now the job is stopped (SIGTERM) before the release; the result says so."""
    uri = "deploy://thirteenth-background"
    left = Left(tmp_path / "bg.pid")
    script = f"sh -c '{WORKER}' sh {left.path} >/dev/null 2>&1 & while [ ! -e {left.path} ]; do sleep 0.05; done"
    try:
        done = run("kubelock", "run", uri, "--ttl", "30", "-o", "json", "--", "sh", "-c", script,
                   env=env_of(control_plane, "alice", ns), timeout=DEADLINE)
        pid = left.pid()
        alive_at_exit = running(pid)
        took = run("kubelock", "acquire", uri, "--ttl", "30", "-o", "json",
                   env=env_of(control_plane, "bob", ns), timeout=DEADLINE)
        alive_when_bob_held = running(pid)
        print(f"kubelock run: exit {done.code}, {last_json(done.stdout)}; the job alive at its exit: "
              f"{alive_at_exit}, when bob held (exit {took.code}): {alive_when_bob_held}")
        assert done.code == 0, done.stderr
        assert took.code == 0 and took.json["holder"].startswith("user:bob/"), took
        assert not alive_at_exit and not alive_when_bob_held
        got = last_json(done.stdout)
        # The worker and its `sleep` of the moment: what was left is counted, process by process.
        assert (got["endedBy"], got["released"]) == ("CommandExited", True) and got["leftBehind"] >= 1, got
        written = (tmp_path / "bg.pid.work").read_text().split()
        assert written and set(written) == {str(got["fencingToken"])}
        assert run("kubelock", "release", uri, env=env_of(control_plane, "bob", ns)).code == 0
    finally:
        left.kill()


def test_a_grandchild_that_left_its_session_is_stopped_when_the_lock_is_broken(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """The command starts a worker with `setsid` (its own session and process group: the signals to
    the command's group miss it) and works on; a lock admin breaks the lock and bob, queued, is
    granted it. `kubelock run` exits LOST. Before: the worker went on with the broken lock's token
    while bob held it. Now it is stopped with the command, within the grace."""
    uri = "deploy://thirteenth-setsid"
    left = Left(tmp_path / "sid.pid")
    script = f"setsid sh -c '{WORKER}' sh {left.path} >/dev/null 2>&1 & while :; do sleep 0.1; done"
    alice = env_of(control_plane, "alice", ns)
    try:
        process = start("kubelock", "run", uri, "--ttl", "30", "-o", "json", "--", "sh", "-c", script, env=alice)
        pid = left.pid()
        locks = Locks(admin_api, ns)
        name = claim_name(f"user:alice/{INSTANCE}", normalise(uri))
        wait_until(lambda: phase_of(locks.get(name)) == "Held", what="alice holds", timeout=DEADLINE)
        bob = start("kubelock", "acquire", uri, "--wait", "--timeout", "100", "--ttl", "30", "-o", "json",
                    env=env_of(control_plane, "bob", ns))
        broke = run("kubelock", "unlock", uri, "--reason", "a hostile pass",
                    env=environment(control_plane.user_kubeconfig("lockadmin"), ns))
        assert broke.code == 0, broke
        done = finish(process, timeout=DEADLINE)
        alive_at_exit = running(pid)
        granted = finish(bob, timeout=DEADLINE)
        alive_when_bob_held = running(pid)
        got = last_json(done.stdout)
        print(f"kubelock run: exit {done.code}, {got}; the worker alive at its exit: {alive_at_exit}, "
              f"when bob held (exit {granted.code}): {alive_when_bob_held}")
        assert done.code == ExitCode.LOST, done.stderr
        assert granted.code == 0 and granted.json["holder"].startswith("user:bob/"), granted
        assert not alive_at_exit and not alive_when_bob_held
        assert (got["endedBy"], got["lost"]) == ("LockLost", True) and got["leftBehind"] >= 1, got
        assert run("kubelock", "release", uri, env=env_of(control_plane, "bob", ns)).code == 0
    finally:
        left.kill()


def test_a_semaphore_whose_capacity_is_lowered_under_its_holders_and_waiters(
    admin_api: ApiClient, ns: str
) -> None:
    """Capacity 6: holders of 3 and 2 permits, waiters of 4 and 1 (the 1 queued behind the 4). The
    capacity lowered to 3 under them: the holders keep what they hold (5 of 3 now), the 4 can never be
    granted and is `Rejected` (it would hold back the queue), the 1 waits until the permits held fit
    under 3 again, and no grant is made while they do not."""
    locks = Locks(admin_api, ns)
    uri = "mr://thirteenth/semaphore"
    apply_policy(admin_api, ns, "sem13", resourcePrefix="mr://thirteenth/semaphore", capacity=6)
    try:
        locks.claim("s-three", uri, "user:x/three", permits=3, ttl=300)
        locks.claim("s-two", uri, "user:x/two", permits=2, ttl=300)
        locks.wait_phases(["s-three", "s-two"], "Held", timeout=DEADLINE)
        locks.claim("s-four", uri, "user:x/four", permits=4, wait=True, ttl=300)
        locks.wait_phase("s-four", "Pending", timeout=DEADLINE)
        locks.claim("s-one", uri, "user:x/one", permits=1, wait=True, ttl=300)
        locks.wait_phase("s-one", "Pending", timeout=DEADLINE)
        apply_policy(admin_api, ns, "sem13", resourcePrefix="mr://thirteenth/semaphore", capacity=3)
        four = status_of(locks.wait_phase("s-four", "Rejected", timeout=DEADLINE))
        print(f"the waiter of 4 permits: {four}")
        assert four["reason"] == "InvalidSpec" and "capacity 3" in four["message"], four
        time.sleep(3)  # the operator has decided the resource again: nothing more is granted
        assert phase_of(locks.get("s-one")) == "Pending"
        assert {phase_of(locks.get(n)) for n in ("s-three", "s-two")} == {"Held"}
        locks.delete("s-two")  # 3 held of 3: still no room for 1
        time.sleep(3)
        assert phase_of(locks.get("s-one")) == "Pending"
        locks.delete("s-three")
        one = status_of(locks.wait_phase("s-one", "Held", timeout=DEADLINE))
        print(f"the waiter of 1 permit, once the holders left: {one}")
        (record,) = [lock for lock in locks.locks() if lock["spec"].get("resource") == uri]
        assert record["spec"].get("holders", 1) == 1
    finally:
        for name in ("s-three", "s-two", "s-four", "s-one"):
            try:
                locks.delete(name)
            except ApiException as error:
                if error.status != 404:
                    raise


def test_a_shared_holder_renewing_never_lets_readers_past_a_queued_writer(admin_api: ApiClient, ns: str) -> None:
    """A reader holds (Shared) and renews every second while a writer (Exclusive) waits: a second
    reader's try-lock is refused and its wait queues behind the writer, though it would fit beside
    the reader; the renewals move nothing. Released: the writer first, then the reader."""
    locks = Locks(admin_api, ns)
    uri = "mr://thirteenth/shared"
    locks.claim("r-first", uri, "user:x/reader-1", mode="Shared", ttl=300)
    locks.wait_phase("r-first", "Held", timeout=DEADLINE)
    locks.claim("w-writer", uri, "user:x/writer", wait=True, ttl=300)
    locks.wait_phase("w-writer", "Pending", timeout=DEADLINE)
    locks.claim("r-try", uri, "user:x/reader-2", mode="Shared", ttl=300)
    tried = status_of(locks.wait_phase("r-try", "Rejected", timeout=DEADLINE))
    locks.claim("r-wait", uri, "user:x/reader-3", mode="Shared", wait=True, ttl=300)
    locks.wait_phase("r-wait", "Pending", timeout=DEADLINE)
    for i in range(4):
        locks.renew("r-first", f"thirteenth-{i}")
        time.sleep(1)
    observed = status_of(locks.get("r-first")).get("observedRenew")
    phases = {n: phase_of(locks.get(n)) for n in ("r-first", "w-writer", "r-wait")}
    print(f"the try-lock: {tried}; after four renewals (observed {observed}): {phases}")
    assert phases == {"r-first": "Held", "w-writer": "Pending", "r-wait": "Pending"}
    locks.delete("r-first")
    writer = status_of(locks.wait_phase("w-writer", "Held", timeout=DEADLINE))
    assert phase_of(locks.get("r-wait")) == "Pending"
    locks.delete("w-writer")
    reader = status_of(locks.wait_phase("r-wait", "Held", timeout=DEADLINE))
    assert reader["fencingToken"] > writer["fencingToken"]
    locks.delete("r-wait")
    locks.delete("r-try")


def test_a_pod_ref_cannot_name_another_namespaces_pod(
    admin_api: ApiClient, user_api: Any, ns: str
) -> None:
    """bob's pod `victim13` runs in another namespace. alice's claim naming it: `podRef.namespace`
    is no field (refused under strict validation, dropped otherwise), and the claim names the pod of
    that name in her own namespace, where there is none: never bound to bob's pod."""
    core = CoreV1Api(admin_api)
    with temporary_namespace(admin_api, PREFIX + "other-") as other:
        pod = V1Pod(
            metadata=V1ObjectMeta(name="victim13", labels={"kubelock.dev/lock-holder": "true"}),
            spec=V1PodSpec(containers=[V1Container(name="c", image="registry.invalid/none")],
                           automount_service_account_token=False),
        )

        def made_pod() -> bool:  # the namespace's default ServiceAccount may not be there yet
            try:
                core.create_namespaced_pod(other, pod)
            except ApiException as error:
                if error.status == 403 and "serviceaccount" in str(error.body):
                    return False
                raise
            return True

        wait_until(made_pod, what="bob's pod in the other namespace", timeout=DEADLINE)
        alice = user_api("alice")
        body: Body = {"apiVersion": "kubelock.dev/v1alpha1", "kind": "LockClaim", "metadata": {"name": "pod13"},
                      "spec": {"resource": "mr://thirteenth/pod", "holder": "user:alice/w13",
                               "podRef": {"name": "victim13", "namespace": other}}}
        objects = CustomObjectsApi(alice)
        with pytest.raises(ApiException) as strict:
            objects.create_namespaced_custom_object("kubelock.dev", "v1alpha1", ns, "lockclaims", body,
                                                    field_validation="Strict")
        made = objects.create_namespaced_custom_object("kubelock.dev", "v1alpha1", ns, "lockclaims", body,
                                                       field_validation="Ignore")
        locks = Locks(admin_api, ns)
        decided = locks.wait_for("pod13", lambda b: phase_of(b) is not None, timeout=DEADLINE, what="decided")
        print(f"strict: {strict.value.status} {strict.value.body}; made: {made['spec']}; decided: {status_of(decided)}")
        assert strict.value.status in (400, 422)
        assert made["spec"]["podRef"] == {"name": "victim13"}
        assert (phase_of(decided), status_of(decided)["reason"]) == ("Rejected", "PodNotFound"), decided
        locks.delete("pod13")


def test_a_run_whose_rights_are_withdrawn_stops_its_command_before_the_next_holder_is_granted(
    control_plane: ControlPlane, admin_api: ApiClient, prefix_operator: OperatorProcess, tmp_path: Path
) -> None:
    """alice's `kubelock run --ttl 12` holds; bob waits; alice's RoleBinding is deleted, so her
    renewals (and her release) are refused 403 while her lease still runs. Her command must be gone
    before the lease ends and bob is granted: the renew deadline (8 s) plus the grace (2 s) come
    before the TTL (12 s). The command writes the time every 0.1 s; its last line is compared with
    bob's `acquiredAt` (one machine, one clock)."""
    uri = "deploy://thirteenth-unbound"
    work = tmp_path / "work"
    script = f"while :; do date +%s.%N >> {work}; sleep 0.1; done"
    with agents_namespace(admin_api, PREFIX) as ns:
        alice = env_of(control_plane, "alice", ns)
        process = start("kubelock", "run", uri, "--ttl", "12", "-o", "json", "--", "sh", "-c", script, env=alice)
        wait_until(work.exists, what="alice's command works", timeout=DEADLINE)
        bob = start("kubelock", "acquire", uri, "--wait", "--timeout", "100", "--ttl", "30", "-o", "json",
                    env=env_of(control_plane, "bob", ns))
        locks = Locks(admin_api, ns)
        bobs = claim_name(f"user:bob/{INSTANCE}", normalise(uri))
        wait_until(lambda: any(c["metadata"]["name"] == bobs and phase_of(c) == "Pending" for c in locks.claims()),
                   what="bob queued", timeout=DEADLINE)
        rbac = RbacAuthorizationV1Api(admin_api)
        for binding in rbac.list_namespaced_role_binding(ns).items:
            if binding.metadata is not None and any(s.name == "alice" for s in binding.subjects or ()):
                rbac.delete_namespaced_role_binding(str(binding.metadata.name), ns)
        withdrawn = time.time()
        done = finish(process, timeout=DEADLINE)
        granted = finish(bob, timeout=DEADLINE)
        got = last_json(done.stdout)
        last_work = float(work.read_text().split()[-1])
        acquired = moment(status_of(locks.get(bobs))["acquiredAt"])
        print(f"kubelock run: exit {done.code}, {got}; stderr {done.stderr.strip()!r}; bob: exit {granted.code}; "
              f"rights withdrawn at 0, the command's last work {last_work - withdrawn:.1f} s, bob granted "
              f"{acquired - withdrawn:.1f} s")
        assert done.code == ExitCode.LOST and got["lost"] is True, done
        # Its release was refused too (403): the result must not say it was released.
        assert got["released"] is False and "could not release" in done.stderr, done
        assert granted.code == 0, granted
        assert last_work < acquired, (last_work, acquired)


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_token_file_rotated_while_its_holder_waits_in_the_queue(
    control_plane: ControlPlane, admin_api: ApiClient, ns: str, tmp_path: Path
) -> None:
    """An agent (a ServiceAccount, its kubeconfig's `tokenFile`) waits in the queue with `kubelock
    acquire --wait` while another holds; its token file is rotated (renamed into place) and the old
    token revoked. When the holder leaves, the waiter is granted: its wait, watch and answer go on
    with the new token, and the lock is held by it alone."""
    core = CoreV1Api(admin_api)
    ensure_service_account(core, ns, AGENT)
    user = service_account_user(ns, AGENT)
    bind(admin_api, ns, "kubelock-agent", user)
    wait_allowed(admin_api, user, ns, "create", "lockclaims")
    token_path = tmp_path / "token"
    replace_file(token_path, token_bound_to_secret(core, ns, "waiting-1"))
    config = control_plane.token_kubeconfig("unused", tmp_path / "file.kubeconfig", ns)
    parsed = yaml.safe_load(config.read_text())
    parsed["users"][0]["user"] = {"tokenFile": str(token_path)}
    replace_file(config, yaml.safe_dump(parsed))
    old = token_path.read_text()
    uri = "deploy://thirteenth-rotated-wait"
    locks = Locks(admin_api, ns)
    locks.claim("rot-holder", uri, "user:x/holder", ttl=300)
    locks.wait_phase("rot-holder", "Held", timeout=DEADLINE)
    waiter = start("kubelock", "acquire", uri, "--wait", "--timeout", "110", "--ttl", "60", "-o", "json",
                   env=environment(config, ns, "rot"))
    mine = claim_name(f"sa:{ns}/{AGENT}/rot", normalise(uri))
    wait_until(lambda: any(c["metadata"]["name"] == mine and phase_of(c) == "Pending" for c in locks.claims()),
               what="the agent queued", timeout=DEADLINE)
    replace_file(token_path, token_bound_to_secret(core, ns, "waiting-2"))
    core.delete_namespaced_secret("waiting-1", ns)
    wait_until(lambda: revoked(config, old), what="the old token is refused", timeout=REVOKED_SECONDS)
    locks.delete("rot-holder")
    done = finish(waiter, timeout=DEADLINE)
    print(f"the waiter after its token was rotated: exit {done.code}, {done.stdout.strip()} {done.stderr.strip()}")
    assert done.code == 0, done
    assert done.json["holder"] == f"sa:{ns}/{AGENT}/rot"
    held = [c for c in locks.claims() if phase_of(c) == "Held" and c["spec"].get("resource") == uri]
    assert [c["metadata"]["name"] for c in held] == [mine]
    gone = run("kubelock", "release", uri, env=environment(config, ns, "rot"))
    assert gone.code == 0, gone
