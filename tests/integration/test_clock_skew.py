"""An operator whose wall clock is not the API server's, against the real API server.

The operator runs as a real process whose `time.time` reads `SKEW` seconds off
(`tests/support/skewclock`), as on a node whose NTP is broken. A holder counts a lease's end (the
operator's `expiresAt` stamp) against the latest the API server's clock can read (`ServerClock`,
from the `Date` of an answer), which is the SDK's rule (`ClaimInfo.held_at`, `Lease`'s deadline).
The holders here never renew: cut off from the API server, the end they were told is all they have.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, VersionApi

from kubelock.kube.serverclock import ServerClock
from kubelock.sdk.model import ClaimInfo
from tests.support.claims import Locks, phase_of, status_of, wait_until
from tests.support.operator import REPO, OperatorProcess

Cluster = Any  # ControlPlane, or conftest.ExistingCluster
SKEW = 120.0  # a node minutes off, well past the second the `Date` header's bounds are wide
R = "deploy://clock-skew"
SKEW_DIR = REPO / "tests" / "support" / "skewclock"


@contextmanager
def skewed_operator(cluster: Cluster, namespace: str, log: Path, offset: float) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster.kubeconfig, log, namespaces=(namespace,), metrics=True,
                         env={"KUBELOCK_TEST_CLOCK_OFFSET": str(offset)}, path=(SKEW_DIR,))
    with op:
        yield op


def server_clock(api: ApiClient) -> ServerClock:
    """The API server's clock as a holder bounds it, from one answer read now."""
    clock = ServerClock()
    sent = time.monotonic()
    _, _, headers = VersionApi(api).get_code_with_http_info()
    clock.record(headers.get("Date"), sent, time.monotonic())
    return clock


def moment(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def held(locks: Locks, name: str) -> dict[str, Any]:
    wait_until(lambda: phase_of(locks.get(name)) == "Held", f"claim {name} Held")
    return locks.get(name)


def metric(op: OperatorProcess, name: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not among the operator's metrics")


def test_operator_ahead_never_outlasts_what_the_holder_believes(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, tmp_path: Path
) -> None:
    """The dangerous side: an operator clock ahead stamps ends later than the server's clock reads,
    so a holder believes it holds for `SKEW` seconds after the operator ended its lease and granted
    the next claim. Once the next claim is Held, the first holder's own count must say it is over."""
    ttl = 6
    locks = Locks(admin_api, iso_ns)
    with skewed_operator(control_plane, iso_ns, tmp_path / "operator.log", SKEW) as op:
        locks.claim("first", R, "alice", ttl=ttl)
        told = held(locks, "first")  # all the first holder ever learns: it never renews
        locks.claim("second", R, "bob", wait=True, ttl=ttl)
        held(locks, "second")
        now = server_clock(admin_api).latest_now()
        believed = moment(status_of(told)["expiresAt"]) - now
        assert not ClaimInfo.from_body(told).held_at(now), (
            f"the first holder still believes it holds the lock for {believed:.1f} s while the second "
            f"claim is Held (operator clock {SKEW:+.0f} s)"
        )
        # The operator saw its clock off and says so.
        assert metric(op, "kubelock_clock_offset_seconds") > SKEW - 5
        assert "s ahead of the API server's" in op.log_text()


def test_operator_behind_grants_a_lease_its_holder_can_hold(
    control_plane: Cluster, admin_api: ApiClient, iso_ns: str, tmp_path: Path
) -> None:
    """The other side: an operator clock behind stamps ends earlier than the server's clock reads; a
    lease shorter than the skew ended, by the holder's count, before it was granted. A holder told
    Held must find time left on the lease it was told of (the TTL, less the time the telling took)."""
    ttl = 60
    locks = Locks(admin_api, iso_ns)
    with skewed_operator(control_plane, iso_ns, tmp_path / "operator.log", -SKEW) as op:
        locks.claim("first", R, "alice", ttl=ttl)
        told = held(locks, "first")
        now = server_clock(admin_api).latest_now()
        left = moment(status_of(told)["expiresAt"]) - now
        assert ClaimInfo.from_body(told).held_at(now), (
            f"the holder told Held counts its {ttl} s lease over {-left:.1f} s ago (operator clock {-SKEW:+.0f} s)"
        )
        assert metric(op, "kubelock_clock_offset_seconds") < -(SKEW - 5)
        assert "s behind the API server's" in op.log_text()
