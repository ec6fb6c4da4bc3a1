"""The operator's writes made slow for real: its requests reach the API server seconds late
(`tests.support.partition.Partition.delay`: every byte the operator sends is held before it goes on;
answers and watch events flow as usual), as on a busy API server. The test's own reads and writes go
to the API server directly.

- A holder's lease counts from the `Held` write, not from the grant's decision
  (`kubelock.domain.leasestart`): the lock's create and the `Held` write are two slow writes in
  sequence, and a lease counted from the decision reached its holder with both gone (the loaded chaos
  run's `lost-waiter`s: a 3 s lease told with 0.7 s left, or after its end). The expiry in force is
  rebuilt from the claim by a replica started afresh.
- A claim that enters while its resource's run waits on slow writes gets its first answer beside the
  run (`kubelock.operator.busyanswers`), not behind the run's writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from kubelock.api import objects
from kubelock.domain.resource import lock_name
from kubelock.domain.timefmt import to_rfc3339
from tests.support.claims import Locks, phase_of, status_of
from tests.support.operator import OperatorProcess
from tests.support.partition import Partition, kubeconfig_for

Cluster = Any  # ControlPlane (the forwarder needs its address)
R, R2 = "deploy://slow-a", "deploy://slow-b"
# Each of the operator's requests reaches the API server this late. The bounds below tell one slow
# write from two: the larger DELAY, the more of a loaded machine's own latency (a poll's GET, a
# scheduling delay) they leave room for.
DELAY = 4.0
TTL = 16
POLL = 0.05


def _seconds(value: object) -> float:
    moment = objects.seconds(objects.time_of(value))
    assert moment is not None, value
    return moment


def _when(locks: Locks, name: str, phases: set[str], timeout: float) -> tuple[float, dict[str, Any]]:
    """The first moment the claim is seen in one of `phases` (polled every POLL s), and its body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = locks.get(name)
        if phase_of(body) in phases:
            return time.time(), body
        time.sleep(POLL)
    raise AssertionError(f"claim {name} not {phases} within {timeout}s: {locks.get(name)}")


def test_a_holder_told_behind_two_slow_writes_gets_its_lease_from_the_held_write(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, partition: Partition, tmp_path: Path
) -> None:
    """The grant's two writes take DELAY each. Counted from the decision, the holder is told with
    about TTL - 2 DELAY left; counted from the `Held` write, with TTL less that one write's way.
    The operator expires it at the lease it was told, and so does a replica started afresh."""
    config = kubeconfig_for(control_plane.kubeconfig, partition.address, tmp_path / "operator-kubeconfig")
    locks = Locks(admin_api, iso_ns)
    with OperatorProcess(config, tmp_path / "operator.log", namespaces=(iso_ns,)) as op:
        partition.delay(DELAY)
        asked = time.time()
        locks.claim("a", R, "agent-a", wait=True, ttl=TTL)
        told, body = _when(locks, "a", {"Held"}, timeout=10 * DELAY + 20)
        status = status_of(body)
        expires = _seconds(status["expiresAt"])
        lock = locks.lock(lock_name(R))
        granted_until = _seconds(lock["spec"]["expireTime"])
        left = expires - told
        print(f"told {told - asked:.2f} s after the claim; lease left then {left:.2f} s of {TTL}; "
              f"the lock's own expireTime {granted_until - asked:.2f} s, the status's {expires - asked:.2f} s")
        # Told behind the create and the `Held` write: the lease lost at most the second (+ polling
        # and two shared cores). Counted from the decision it would have lost both (about 2 DELAY).
        assert left >= TTL - 1.5 * DELAY, (left, status, op.log_text()[-3000:])
        assert _seconds(status["renewedAt"]) >= _seconds(lock["spec"]["renewTime"])
        # A replica started afresh (its requests prompt again) rebuilds the expiry in force from the
        # claim, not the earlier one of the lock.
        op.kill()
    partition.delay(0)
    with OperatorProcess(config, tmp_path / "operator-2.log", namespaces=(iso_ns,)):
        ended, body = _when(locks, "a", {"Expired"}, timeout=TTL + 60)
    message = status_of(body)["message"]
    assert ended >= expires, (ended, expires, message)
    assert f"expired at {to_rfc3339(expires)}" in message, (message, to_rfc3339(granted_until))


def test_a_claim_entering_beside_a_run_of_slow_writes_is_answered_before_the_run_ends(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, partition: Partition, tmp_path: Path
) -> None:
    """`a` holds R2 and `w` waits for it. `a` is released: the run hands the lock to `w` and tells
    `w` (two writes of DELAY each, in sequence). `c` enters just after the release: beside the run its
    first answer (`Pending`) is one write away; behind the run it waits for the run's first write,
    then goes with the second."""
    config = kubeconfig_for(control_plane.kubeconfig, partition.address, tmp_path / "operator-kubeconfig")
    locks = Locks(admin_api, iso_ns)
    view = ("--debug", "kubelock.view", "--debug", "kubelock.reconciler")  # the run and the answer beside it
    with OperatorProcess(config, tmp_path / "operator.log", namespaces=(iso_ns,), extra_args=view) as op:
        locks.claim("a", R2, "agent-a", ttl=600)
        locks.wait_phase("a", "Held")
        locks.claim("w", R2, "agent-w", wait=True, ttl=600)
        locks.wait_phase("w", "Pending")
        partition.delay(DELAY)
        released = time.time()
        locks.delete("a")
        time.sleep(0.3)  # the run is under way: its first write waits in the slow path
        locks.claim("c", R2, "agent-c", wait=True, ttl=600)
        entered = time.time()
        answered = told = None
        deadline = time.monotonic() + 10 * DELAY + 20
        while (answered is None or told is None) and time.monotonic() < deadline:
            now = time.time()
            if answered is None and phase_of(locks.get("c")) is not None:
                answered = now
            if told is None and phase_of(locks.get("w")) == "Held":
                told = now
            time.sleep(POLL)
        assert answered is not None and told is not None, (answered, told, op.log_text()[-3000:])
        print(f"c answered {answered - entered:.2f} s after it entered; w told {told - released:.2f} s "
              f"after the release")
        assert phase_of(locks.get("c")) == "Pending"
        # Beside the run: one slow write after it entered, well before the run's second write tells
        # `w`. Behind the run: decided with `w`'s `Held` on the run's next round and written beside
        # it, two slow writes after the release.
        assert told - answered > DELAY / 2, (answered - entered, told - released, op.log_text()[-3000:])
        assert answered - entered < 1.6 * DELAY, (answered - entered, op.log_text()[-3000:])
