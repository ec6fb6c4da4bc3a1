"""The reconciler: grants held back until the view is fresh (and nothing else with them), writes
conditional on the versions the decision saw, tokens never written twice, queue positions written
once the queue is still. (Which key runs when is the work queue's: tests/unit/test_workqueue.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NoReturn

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import ClaimStatus, Policy, SetStatus
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.timefmt import to_rfc3339
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import POSITION_DELAY, Reconciler, Seen

R = "github://acme/app/issues/42"


class NoApi:
    """Any request fails the test: a held-back grant must not reach the API server."""

    def __getattr__(self, name: str) -> Any:
        async def call(*_: object, **__: object) -> NoReturn:
            raise AssertionError(f"unexpected API call: {name}")

        return call


class ClosedGate:
    """No grant may be made (the view is not fresh enough)."""

    epoch = 0

    def may_grant(self, namespace: str, sequence: int) -> bool:
        return False


def test_a_grant_waits_for_a_fresh_view_and_is_decided_again_on_release() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cache = Cache()
        cache.upsert_claim(
            {
                "metadata": {"name": "c1", "uid": "u1", "namespace": "a", "resourceVersion": "7"},
                "spec": {"resource": R, "holder": "agent"},
            }
        )
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"), gate=ClosedGate())
        await reconciler.reconcile(("a", R))  # would create the lock: held back instead, no request made
        assert reconciler.holding and ("a", R) in reconciler._held_back
        reconciler.queue.start()
        reconciler.release_grants()
        assert not reconciler.holding
        assert reconciler.queue.pending(("a", R))  # decided again
        await reconciler.stop()

    asyncio.run(scenario())


def test_what_a_held_back_grant_was_decided_with_goes_ahead() -> None:
    """A waiter timing out does not wait for the view a grant needs."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        cache.upsert_claim({
            "metadata": {"name": "late", "uid": "u1", "namespace": "a", "resourceVersion": "7",
                         "creationTimestamp": to_rfc3339(clock.now() - 60)},
            "spec": {"resource": R, "holder": "agent-1", "wait": True, "waitTimeoutSeconds": 30},
            "status": {"phase": "Pending", "reason": "Queued", "sequence": 7, "queuePosition": 1},
        })
        cache.upsert_claim({
            "metadata": {"name": "next", "uid": "u2", "namespace": "a", "resourceVersion": "8"},
            "spec": {"resource": R, "holder": "agent-2", "wait": True},
        })
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"), gate=ClosedGate())
        try:
            await reconciler.reconcile(("a", R))
        except AssertionError as error:
            assert "unexpected API call: patch" in str(error)  # the TimedOut status, not the create
        else:
            raise AssertionError("the waiter's timeout was held back with the grant")
        assert reconciler.holding
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_token_already_written_is_never_written_again() -> None:
    """A replica decided to complete a reservation; by the time it applies the decision the other
    replica has written the token (and may have told the holder). Writing again, on the lock's new
    version, would replace the token the holder was told."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        reservation = _held_lock()
        reservation["spec"]["fencingToken"] = 0
        cache.upsert_lock(reservation)
        stale_view = cache.locks[("a", R)][0]
        granted = _held_lock()
        granted["metadata"]["resourceVersion"] = "25"  # the other replica's token write
        cache.upsert_lock(granted)
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"))
        await reconciler._write_token("a", stale_view)  # no request: NoApi would fail the test
        assert cache.locks[("a", R)][0].fencing_token == 20
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_status_is_written_on_the_version_the_decision_saw() -> None:
    """A renewal that reaches the cache while an expiry is being applied must make the expiry's
    write fail, not be overwritten by it."""

    class Recording(NoApi):
        def __init__(self) -> None:
            self.patches: list[dict[str, Any]] = []

        async def patch(self, path: str, body: dict[str, Any]) -> NoReturn:
            self.patches.append(body)
            raise AssertionError("recorded")

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        cache = Cache()
        cache.upsert_claim({
            "metadata": {"name": "c1", "uid": "u1", "namespace": "a", "resourceVersion": "7"},
            "spec": {"resource": R, "holder": "agent"},
        })
        seen = Seen({"u1": cache.claims["u1"]}, None)
        cache.upsert_claim({  # the holder's renewal arrives meanwhile
            "metadata": {"name": "c1", "uid": "u1", "namespace": "a", "resourceVersion": "9",
                         "annotations": {"kubelock.dev/renew": "r2"}},
            "spec": {"resource": R, "holder": "agent"},
        })
        client = Recording()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"))
        status = ClaimStatus(Phase.REJECTED, Reason.HELD_BY_ANOTHER, "x", sequence=7)
        with contextlib.suppress(AssertionError):
            action = SetStatus(cache.claims["u1"].claim, status)
            await reconciler._set_status("a", action, clock.now(), seen.claims["u1"])
        assert client.patches[0]["metadata"]["resourceVersion"] == "7"
        await reconciler.stop()

    asyncio.run(scenario())


def test_a_reservation_is_not_completed_while_the_view_is_stale() -> None:
    """A lock without its token (its creator stopped before writing it) is completed only on a
    fresh view: completing it is the grant."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        stamp = to_rfc3339(clock.now())
        cache = Cache()
        reservation = _held_lock()
        reservation["spec"].update(fencingToken=0, acquireTime=stamp, renewTime=stamp)
        cache.upsert_lock(reservation)
        cache.upsert_claim({
            "metadata": {"name": "ca", "uid": "ua", "namespace": "a", "resourceVersion": "19"},
            "spec": {"resource": R, "holder": "agent-a"},
        })
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"), gate=ClosedGate())
        await reconciler.reconcile(("a", R))  # no token write, no Held status
        assert reconciler.holding
        await reconciler.stop()

    asyncio.run(scenario())


def _held_lock() -> dict[str, Any]:
    return {
        "metadata": {"name": "lock-1", "uid": "l1", "namespace": "a", "resourceVersion": "20"},
        "spec": {
            "resource": R, "holder": "agent-a", "claimRef": {"name": "ca", "uid": "ua"}, "fencingToken": 20,
            "acquireTime": "2027-01-15T08:00:00Z", "renewTime": "2027-01-15T08:00:00Z", "leaseDurationSeconds": 3600,
        },
    }


def test_renumbering_waiters_waits_until_the_queue_has_been_still() -> None:
    """Each grant shifts every waiter; while grants follow each other, positions are written once
    the queue has been still for POSITION_DELAY, not once per grant."""

    async def scenario() -> None:
        clock = ManualClock(1_800_000_000.0)
        stamp = to_rfc3339(clock.now())
        cache = Cache()
        lock = _held_lock()
        lock["spec"]["acquireTime"] = lock["spec"]["renewTime"] = stamp
        cache.upsert_lock(lock)
        cache.upsert_claim({
            "metadata": {"name": "ca", "uid": "ua", "namespace": "a", "resourceVersion": "21"},
            "spec": {"resource": R, "holder": "agent-a"},
            "status": {"phase": "Held", "sequence": 5, "holder": "agent-a", "lockName": "lock-1", "fencingToken": 20,
                       "acquiredAt": stamp, "renewedAt": stamp, "expiresAt": to_rfc3339(clock.now() + 3600),
                       "reason": "Granted", "message": "agent-a holds github://acme/app/issues/42 (fencing token 20)"},
        })
        cache.upsert_claim({  # says position 2, but it is first in line now
            "metadata": {"name": "cb", "uid": "ub", "namespace": "a", "resourceVersion": "22"},
            "spec": {"resource": R, "holder": "agent-b", "wait": True},
            "status": {"phase": "Pending", "sequence": 6, "holder": "agent-a", "queuePosition": 2,
                       "reason": "Queued", "message": "old"},
        })
        client: Any = NoApi()
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"))
        key = ("a", R)
        reconciler._granted_at[key] = clock.now()  # the lock was just granted
        await reconciler.reconcile(key)  # the renumbering waits: no request
        assert reconciler.queue.next_deadline() == clock.now() + POSITION_DELAY
        clock.advance(POSITION_DELAY)
        try:
            await reconciler.reconcile(key)
        except AssertionError as error:
            assert "unexpected API call: patch" in str(error)  # now it is written
        else:
            raise AssertionError("the queue position was never written")

    asyncio.run(scenario())
