"""A silent network partition against the real API server: connections that stay open and carry
nothing (no FIN, no RST; `tests.support.partition.Partition.blackhole`), as a path through a NAT or
firewall that drops packets looks. The operator, or an agent, reaches the API server only through the
forwarder, and learns of the partition from nothing but its own timeouts and checks. Everyone else
(the test's monitors, the other agents) talks to the API server directly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException

from kubelock.api.fencing import lock_token
from kubelock.cli.exitcodes import ExitCode
from kubelock.domain.resource import claim_name, lock_name, normalise
from kubelock.sdk import Expired, LockClient
from kubelock.testbed import ControlPlane
from tests.support.access import bind_agents
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.commands import argv_of, default_signals, environment, finish
from tests.support.monitor import HolderMonitor, LockMonitor
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition, kubeconfig_for

Cluster = Any  # ControlPlane, or conftest.ExistingCluster
R, R2 = "deploy://silent-a", "deploy://silent-b"
TTL = 4
SDK_TTL = 8  # the SDK holder's lease
SLACK = 8.0  # scheduling on two shared cores: a bound is checked with this much to spare
# How long the operator's write or GET may go unanswered (`runtime.REQUEST_TIMEOUT_SECONDS`), written
# out: a bound read from the code under test would follow the code if it regressed.
REQUEST_TIMEOUT_SECONDS = 10.0
ECHO_SECONDS = 5.0  # a dead claim watch: an own write unseen this long (`freshness.ECHO_SECONDS`)
DELETE_SECONDS = 10.0  # the SDK's release of a claim, as a whole (`sdk.client.DELETE_SECONDS`)


def moment(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def start_operator(kubeconfig: Path, namespace: str, log: Path) -> OperatorProcess:
    return OperatorProcess(kubeconfig, log, namespaces=(namespace,), extra_args=("--debug", "kubelock.view")).start()


@pytest.fixture
def cut_off_operator(control_plane: Cluster, iso_ns: str, partition: Partition, tmp_path: Path
                     ) -> Iterator[OperatorProcess]:
    """The operator, reaching the API server only through the forwarder."""
    config = kubeconfig_for(control_plane.kubeconfig, partition.address, tmp_path / "operator-kubeconfig")
    op = start_operator(config, iso_ns, tmp_path / "operator.log")
    yield op
    op.stop()


@pytest.fixture
def operator(control_plane: Cluster, iso_ns: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator, reaching the API server directly."""
    op = start_operator(control_plane.kubeconfig, iso_ns, tmp_path / "operator.log")
    yield op
    op.stop()


def lock_or_none(locks: Locks, uri: str) -> dict[str, Any] | None:
    try:
        return locks.lock(lock_name(normalise(uri)))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def assert_one_holder_and_rising_tokens(holders: HolderMonitor) -> None:
    assert not holders.violations, holders.violations
    for resource, tokens in holders.tokens_by_resource().items():
        assert tokens == sorted(set(tokens)), (resource, tokens)


# ---- the operator's side --------------------------------------------------------------------------


def test_a_half_open_claim_watch_is_replaced_and_a_claim_made_meanwhile_is_granted(
    admin_api: ApiClient, iso_ns: str, partition: Partition, cut_off_operator: OperatorProcess
) -> None:
    """Only the connections open now go silent; new ones work. The claim watch delivers nothing and
    says nothing, and so does any pooled connection a write is sent on. The lease expiry of `a` is the
    operator's own write; its echo does not come, so ECHO_SECONDS later a new stream takes over, and
    shows `c`, made meanwhile. A write on a silent pooled connection is ended by the operator's
    request timeout (before it, the 30 s default held `a`'s expiry and everything after it)."""
    locks = Locks(admin_api, iso_ns)
    with HolderMonitor(admin_api, iso_ns) as holders, LockMonitor(admin_api, iso_ns):
        locks.claim("a", R, "agent-a", ttl=TTL)
        deadline = moment(status_of(locks.wait_phase("a", "Held"))["expiresAt"])
        locks.claim("b", R, "agent-b", wait=True)
        locks.wait_phase("b", "Pending")
        partition.blackhole_open()
        silenced = time.time()
        assert partition.silent_connections >= 3  # the operator's claim, lock and policy watches at least
        locks.claim("c", R2, "agent-c")

        locks.wait_phase("b", "Held", timeout=60)
        handed_over = time.time()
        locks.wait_phase("c", "Held", timeout=60)
        granted = time.time()
        log = cut_off_operator.log_text()
        print(f"b held {handed_over - deadline:.1f} s after a's deadline; c held {granted - silenced:.1f} s after "
              "the silence began")
        assert "its connection counts as dead" in log, log[-4000:]
        # `a` expired at its deadline, late by at most one timed-out write; `c` was granted once the
        # dead watch was replaced: its expiry, a timed-out write, ECHO_SECONDS of silence.
        assert handed_over - deadline < REQUEST_TIMEOUT_SECONDS + SLACK, (handed_over - deadline, log[-4000:])
        assert granted - silenced < TTL + REQUEST_TIMEOUT_SECONDS + ECHO_SECONDS + SLACK, (granted - silenced)
        assert phase_of(locks.get("a")) == "Expired"
    assert_one_holder_and_rising_tokens(holders)


def test_an_operator_silent_past_a_lease_grants_nothing_and_hands_over_only_after_the_deadline(
    admin_api: ApiClient, iso_ns: str, partition: Partition, cut_off_operator: OperatorProcess
) -> None:
    """Every connection of the operator goes silent, new ones too, for longer than a lease, then the
    path heals (and what was sent meanwhile arrives). While silent no grant can be made (fail closed);
    its requests end with its timeouts rather than wait for ever; after healing, `b` gets the lock
    only after `a`'s deadline as the API server holds it, with a larger token, and never beside `a`."""
    locks = Locks(admin_api, iso_ns)
    with HolderMonitor(admin_api, iso_ns) as holders, LockMonitor(admin_api, iso_ns) as lockmon:
        locks.claim("a", R, "agent-a", ttl=TTL)
        deadline = moment(status_of(locks.wait_phase("a", "Held"))["expiresAt"])
        locks.claim("b", R, "agent-b", wait=True)
        locks.wait_phase("b", "Pending")
        first_lock = lock_or_none(locks, R)
        assert first_lock is not None
        partition.blackhole()
        silenced = time.time()
        locks.claim("c", R2, "agent-c")
        # `a`'s expiry is due at its deadline: the write is sent into the silence, and must end with
        # the operator's request timeout, not hang (it is tried again, and again times out).
        cut_off_operator.wait_for_log("cannot reach the API server",
                                      timeout=TTL + REQUEST_TIMEOUT_SECONDS + SLACK)
        wait_until(lambda: time.time() > deadline + TTL, what="a lease's length past the deadline", timeout=30)
        # Fail closed: no grant while silent, and the lock `a` held is still there as it was.
        assert phase_of(locks.get("b")) == "Pending"
        assert phase_of(locks.get("c")) is None
        assert lockmon.claims_locked() == {first_lock["spec"]["claimRef"]["uid"]}
        still = lock_or_none(locks, R)  # past its deadline, but only the operator may take it away
        assert still is not None and still["metadata"]["uid"] == first_lock["metadata"]["uid"]
        assert lock_or_none(locks, R2) is None
        assert cut_off_operator.alive
        partition.heal()
        healed = time.time()

        handed = locks.wait_phase("b", "Held", timeout=60)
        locks.wait_phase("c", "Held", timeout=60)
        print(f"silent {healed - silenced:.1f} s; b held {time.time() - healed:.1f} s after healing")
        assert phase_of(locks.get("a")) == "Expired"
        second_lock = lock_or_none(locks, R)
        assert second_lock is not None
        assert second_lock["metadata"]["uid"] != first_lock["metadata"]["uid"]
        # Created after `a`'s deadline (creationTimestamp has whole seconds).
        assert moment(second_lock["metadata"]["creationTimestamp"]) >= int(deadline)
        assert lock_token(second_lock) > lock_token(first_lock)
        assert status_of(handed)["fencingToken"] == lock_token(second_lock)
    assert_one_holder_and_rising_tokens(holders)
    assert [claim for resource, claim, _ in holders.grants if resource == normalise(R)] == ["a", "b"]


# ---- an agent's side ------------------------------------------------------------------------------


@pytest.fixture
def agents(control_plane: Cluster, admin_api: ApiClient, iso_ns: str) -> None:
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("needs the test bed's static users")
    bind_agents(admin_api, iso_ns)


def test_an_sdk_holder_cut_off_silently_learns_of_the_loss_by_its_deadline(
    control_plane: ControlPlane, admin_api: ApiClient, iso_ns: str, partition: Partition,
    operator: OperatorProcess, agents: None, tmp_path: Path,
) -> None:
    """alice's heartbeat goes into the silence: no error comes back, only nothing. Her lease must call
    itself lost at the latest when the last expiry the operator confirmed passes, and the `with` block
    must end (its release times out) rather than hang; bob gets the lock after that."""
    config = kubeconfig_for(control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "alice")
    alice = LockClient(kubeconfig=str(config), namespace=iso_ns, instance="w1")
    bob = LockClient(kubeconfig=str(control_plane.user_kubeconfig("bob")), namespace=iso_ns, instance="w1")
    try:
        with HolderMonitor(admin_api, iso_ns) as holders:
            # Lost at the renew deadline (two thirds of the TTL): a third of it, plus 0.5 s, is what a
            # loaded machine may take to say so before the bound below; 8 s leaves it 3.2 s.
            with alice.lock(R, ttl=SDK_TTL) as lease:
                time.sleep(1.5)  # a renewal went through
                partition.blackhole()
                assert lease.lost.wait(SDK_TTL + SLACK)
                lost_at = time.time()
                assert isinstance(lease.error, Expired), lease.error
                assert lease.expires_at is not None
                print(f"lost {lease.expires_at.timestamp() - lost_at:.2f} s before the confirmed expiry")
                assert lost_at <= lease.expires_at.timestamp() + 0.5
                leaving = time.time()
            left = time.time() - leaving
            print(f"the with block ended {left:.1f} s after the loss")
            # Its release went into the silence too: bounded as a whole (before, each of the client's
            # five tries waited out its 30 s request timeout: 154 s).
            assert left < DELETE_SECONDS + SLACK, left
            wait_until(lambda: bob.try_acquire(R).ok, what="bob to get the expired lock", timeout=60)
        assert_one_holder_and_rising_tokens(holders)
    finally:
        partition.heal()
        alice.close()
        bob.close()


# Its files are written whole (a temporary file, then a rename): the test reads one as soon as it
# exists, and a plain write_text can be seen empty in between.
CHILD = r"""
import os, pathlib, signal, sys, time
d = pathlib.Path(sys.argv[1])
def note(name):
    (d / (name + ".tmp")).write_text(repr(time.time()))
    os.replace(d / (name + ".tmp"), d / name)
def on_term(*_):
    note("term")
    sys.exit(7)
signal.signal(signal.SIGTERM, on_term)
note("started")
time.sleep(600)
"""


def test_kubelock_run_cut_off_silently_stops_its_command_before_the_lease_ends(
    control_plane: ControlPlane, admin_api: ApiClient, iso_ns: str, partition: Partition,
    operator: OperatorProcess, agents: None, tmp_path: Path,
) -> None:
    """`kubelock run` (renew deadline: two thirds of the TTL by default) whose path to the API server
    goes silent stops its command while the lease the operator confirmed still runs, and exits
    LOST with LeaseExpired, as documented for a lost lease (docs/SKILL.md, docs/sdk.md)."""
    config = kubeconfig_for(control_plane.user_kubeconfig("alice"), partition.address, tmp_path / "alice")
    child = tmp_path / "child"
    child.mkdir()
    (child / "child.py").write_text(CHILD)
    ttl = 6
    process = subprocess.Popen(
        [*argv_of("kubelock"), "run", R, "-o", "json", "--ttl", str(ttl), "--grace", "2", "--",
         sys.executable, str(child / "child.py"), str(child)],
        env=environment(config, iso_ns, "w1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )
    locks = Locks(admin_api, iso_ns)
    name = claim_name("user:alice/w1", normalise(R))
    try:
        wait_until(lambda: (child / "started").exists(), what="the command to start", timeout=60)
        time.sleep(1.5)  # a renewal went through
        before = status_of(locks.get(name))
        partition.blackhole()
        wait_until(lambda: (child / "term").exists(), what="the command to be told to stop", timeout=ttl + SLACK)
        stopped = float((child / "term").read_text())
        # The last expiry the operator confirmed: it cannot have moved since (no renewal reached it).
        confirmed = moment(status_of(locks.get(name))["expiresAt"])
        assert confirmed >= moment(before["expiresAt"])
        assert stopped < confirmed, (stopped, confirmed)
        done = finish(process, timeout=DELETE_SECONDS + 2 + SLACK)  # the grace, then a release that times out
        assert done.code == ExitCode.LOST, done.stderr
        got = json.loads(done.stdout.splitlines()[-1])
        assert got["endedBy"] == "LockLost" and got["error"] == "LeaseExpired", got
        print(f"stopped {confirmed - stopped:.2f} s before the lease's end; exited "
              f"{time.time() - stopped:.1f} s after stopping the command")
    finally:
        partition.heal()
        if process.poll() is None:
            process.kill()
            process.wait()
