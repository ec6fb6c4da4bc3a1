"""While a watch relists claims (in name order), grants wait, so an older waiter that has not arrived
yet is not overtaken by a younger one."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from kubelock.domain.clock import ManualClock
from kubelock.domain.model import Policy
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Reconciler
from kubelock.operator.runtime import _starts_a_relist

R = "github://acme/app/issues/42"


class NoApi:
    """Any request fails the test: a held-back grant must not reach the API server."""

    def __getattr__(self, name: str) -> Any:
        async def call(*_: object, **__: object) -> NoReturn:
            raise AssertionError(f"unexpected API call: {name}")

        return call


def test_the_first_listing_of_a_namespace_is_not_a_relist() -> None:
    assert not _starts_a_relist(None, 100.0)


def test_a_listed_claim_after_a_watch_event_starts_a_relist() -> None:
    assert _starts_a_relist((False, 100.0), 100.1)


def test_listed_claims_back_to_back_are_one_listing_and_a_pause_starts_another() -> None:
    assert not _starts_a_relist((True, 100.0), 100.5)
    assert _starts_a_relist((True, 100.0), 105.0)


def test_a_grant_waits_while_grants_are_held_and_is_decided_again_on_release() -> None:
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
        reconciler = Reconciler(client, cache, Policy(), clock, EventRecorder(client, clock, "test"))
        reconciler.hold_grants()
        await reconciler.reconcile(("a", R))  # would create the lock: held back instead, no request made
        assert ("a", R) in reconciler._held_back
        reconciler.enabled = True
        reconciler.release_grants()
        assert reconciler._held_back == set()
        assert ("a", R) in reconciler._dirty  # decided again, now free to grant
        await reconciler.stop()

    asyncio.run(scenario())
