"""The lease's end as the lock and the claim show it, against the real API server and operator.

The holder's lease is counted from the `Held` write (`kubelock.domain.leasestart`), which follows the
lock's create; the lock's `spec.expireTime`, written first, must never show an end earlier than the
one its holder was told (an admin reading `kubectl get resourcelocks` would take a held lock for an
expired one), and once a renewal passes the grant's allowance the two are the same. The expiry the
operator enforces is the claim's: a holder that never renews is expired at its `status.expiresAt`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from kubelock.domain.leasestart import allowance
from kubelock.domain.resource import lock_name
from kubelock.domain.timefmt import to_rfc3339
from kubelock.sdk import AsyncLockClient
from kubelock.sdk.admin import AsyncAdmin, LockStatus
from tests.support.claims import Locks, status_of, wait_until
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

PREFIX = "kls-"
TTL = 12  # short, so that a renewal past the allowance (the lease itself here) comes soon


@pytest.fixture(scope="module")
def shown_operator(control_plane, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with OperatorProcess(control_plane.kubeconfig, log, namespaces=(f"{PREFIX}*",)) as op:
        yield op


@pytest.fixture
def locks(admin_api: ApiClient, shown_operator: OperatorProcess) -> Iterator[Locks]:
    with temporary_namespace(admin_api, PREFIX) as name:
        yield Locks(admin_api, name)


def moment(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def ends(locks: Locks, claim: str, resource: str) -> tuple[float, float, float]:
    """(the claim's status.expiresAt, the lock's spec.expireTime, the lock's acquireTime)."""
    status = status_of(locks.get(claim))
    spec = locks.lock(lock_name(resource))["spec"]
    return moment(status["expiresAt"]), moment(spec["expireTime"]), moment(spec["acquireTime"])


def test_the_lock_never_shows_an_end_before_the_holders_and_a_renewal_makes_them_one(locks: Locks) -> None:
    resource = "deploy://shown-twice"
    locks.claim("a", resource, "agent-a", ttl=TTL)
    locks.wait_phase("a", "Held")
    told, shown, acquired = ends(locks, "a", resource)
    assert shown >= told, f"the lock shows {to_rfc3339(shown)}, before the holder's {to_rfc3339(told)}"
    assert shown == pytest.approx(acquired + TTL + allowance(TTL), abs=1e-3)  # the latest the first Held can be told

    # Renewals before acquireTime + allowance: neither end moves earlier, the lock's stays the later.
    told_before, shown_before = told, shown
    for number, at in enumerate((0.0, TTL / 2)):
        wait_until(lambda at=at: time.time() > acquired + at, "the renewal's moment", timeout=TTL)  # type: ignore[misc]
        told_now, shown_now = renew(locks, "a", resource, f"early-{number}")
        assert told_now >= told_before and shown_now >= shown_before and shown_now >= told_now
        told_before, shown_before = told_now, shown_now

    # A renewal past acquireTime + allowance: the lock and the claim show one end.
    wait_until(lambda: time.time() > acquired + allowance(TTL) + 0.5, "the allowance to pass", timeout=TTL + 5)
    told_now, shown_now = renew(locks, "a", resource, "late")
    assert told_now == pytest.approx(shown_now, abs=1e-3) and told_now > told_before


def renew(locks: Locks, claim: str, resource: str, marker: str) -> tuple[float, float]:
    """Asks for a renewal and waits for it: (the claim's end, the lock's end) then."""
    before = status_of(locks.get(claim))["renewedAt"]
    locks.renew(claim, marker)
    locks.wait_for(claim, lambda b: status_of(b).get("renewedAt") != before, what="renewed")
    told, shown, _ = ends(locks, claim, resource)
    return told, shown


def test_a_holder_that_never_renews_expires_at_its_own_end_not_the_locks(locks: Locks) -> None:
    resource = "deploy://shown-expiry"
    locks.claim("b", resource, "agent-b", ttl=TTL)
    locks.wait_phase("b", "Held")
    told, shown, _ = ends(locks, "b", resource)
    assert shown > told  # the allowance unused: the lock shows later until a renewal
    expired = locks.wait_phase("b", "Expired", timeout=TTL + 60)
    # What the operator enforced is named in the message: the claim's end, as its holder was told.
    assert f"expired at {to_rfc3339(told)}" in status_of(expired)["message"], status_of(expired)["message"]


def test_status_shows_the_end_the_operator_enforces_not_the_locks_later_one(control_plane, locks: Locks) -> None:  # type: ignore[no-untyped-def]
    """`kubelock status` (EXPIRES IN, and `expiresAt` of `-o json`) reads the holder's claim: before the
    first renewal the lock's own end is later than the one the operator expires the holder at, and an
    admin or a script deciding from it (waiting out a lock, judging it stuck) would misjudge it."""
    resource = "deploy://shown-status"
    locks.claim("c", resource, "agent-c", ttl=TTL)
    locks.wait_phase("c", "Held")
    told, shown, _ = ends(locks, "c", resource)
    assert shown > told

    async def status() -> list[LockStatus]:
        async with AsyncLockClient(kubeconfig=str(control_plane.kubeconfig), namespace=locks.namespace,
                                   instance="admin") as client:
            return await AsyncAdmin(client).status(locks.namespace)

    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "kubelock"), "status", "-o", "json", "--kubeconfig", str(control_plane.kubeconfig),
               "-n", locks.namespace]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [shown_json] = json.loads(done.stdout)["locks"]
    assert moment(shown_json["expiresAt"]) == pytest.approx(told, abs=1e-3), (shown_json, to_rfc3339(told))

    [item] = asyncio.run(status())
    assert item.ends_at is not None and item.ends_at.timestamp() == pytest.approx(told, abs=1e-3), (
        f"status shows {item.ends_at}, the holder's claim ends at {to_rfc3339(told)}")
    assert item.lock.expires_at is not None and item.lock.expires_at.timestamp() == pytest.approx(shown, abs=1e-3)
