"""A restarted operator grants a new claim before its priming is in (`kubelock.operator.early`), and
only where the whole view would grant it too: a try-lock on a held resource, a claim behind an older
waiter and a claim of a resource that a claim of several resources names are left to the normal
path. The priming is held open by the test (the runtime's `_prime` waits on a gate after its LISTs),
so "before the priming is in" is a state the test controls, not a race it hopes to win."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from kubelock.domain.clock import SystemClock
from kubelock.kube import config
from kubelock.kube.paths import field_selector
from kubelock.operator.early import EarlyGrants, Listed
from kubelock.operator.metrics import Metrics
from kubelock.operator.runtime import Runtime
from kubelock.operator.settings import Settings
from kubelock.testbed import wait_until
from tests.support.claims import GROUP, VERSION, Locks, phase_of, wait_until_async

FREE = "github://acme/app/issues/7?q=a,b=c"  # a field selector's special characters, escaped
HELD = "github://acme/app/issues/42"
QUEUE = "deploy://early-queue"
MULTI_A, MULTI_B = "deploy://early-multi-a", "deploy://early-multi-b"
LATE = "deploy://early-late"


def _claim_all(locks: Locks, name: str, resources: list[str], holder: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": {"name": name},
        "spec": {"resources": resources, "holder": holder},
    }
    locks.api.create_namespaced_custom_object(GROUP, VERSION, locks.namespace, "lockclaims", body)


async def _runtime(kubeconfig: Path, namespace: str, gate: asyncio.Event | None,
                   metrics: Metrics | None = None) -> Runtime:
    settings = Settings(namespaces=(namespace,), kubeconfig=str(kubeconfig))
    runtime = Runtime(settings, config.load(str(kubeconfig)), SystemClock(), metrics=metrics)
    if gate is not None:
        primed = runtime._prime

        async def held_open() -> Any:
            result = await primed()
            await gate.wait()  # the priming is "under way" until the test opens the gate
            return result

        runtime._prime = held_open  # type: ignore[method-assign]
    return runtime


def test_a_new_claim_is_granted_before_the_priming_and_only_where_the_whole_view_would(
    control_plane, admin_api: ApiClient, iso_ns: str  # type: ignore[no-untyped-def]
) -> None:
    locks = Locks(admin_api, iso_ns)
    kubeconfig = control_plane.kubeconfig

    def phase(name: str) -> str | None:
        return phase_of(locks.get(name))

    async def scenario() -> dict[str, str | None]:
        # An operator grants a holder and a claim of several resources, then stops.
        first = await _runtime(kubeconfig, iso_ns, None)
        await first.start()
        try:
            await asyncio.to_thread(locks.claim, "holder", HELD, "agent-h")
            await asyncio.to_thread(_claim_all, locks, "multi", [MULTI_A, MULTI_B], "agent-m")
            await wait_until_async(lambda: phase("holder") == "Held" and phase("multi") == "Held", "the first grants")
        finally:
            await first.stop()
        # While no operator runs: new claims.
        locks.claim("fresh", FREE, "agent-f")
        locks.claim("try", HELD, "agent-t")  # a try-lock on a held resource
        locks.claim("queued-old", QUEUE, "agent-q1", wait=True)
        locks.claim("queued-new", QUEUE, "agent-q2", wait=True)
        locks.claim("behind-multi", MULTI_A, "agent-b", wait=True)
        gate = asyncio.Event()
        second = await _runtime(kubeconfig, iso_ns, gate, metrics)
        starting = asyncio.create_task(second.start())
        try:
            await wait_until_async(lambda: phase("fresh") == "Held" and phase("queued-old") == "Held",
                                   "the early grants")
            # Created after the start: the early path's watch sees it.
            await asyncio.to_thread(locks.claim, "late", LATE, "agent-l")
            await wait_until_async(lambda: phase("late") == "Held", "the late claim's early grant")
            await asyncio.sleep(1.0)  # time for a wrong early answer to show
            early = {name: phase(name) for name in ("try", "queued-new", "behind-multi")}
            assert not starting.done(), "the priming ended before the gate was opened"
            gate.set()
            await starting
            await wait_until_async(lambda: phase("try") == "Rejected" and phase("queued-new") == "Pending"
                         and phase("behind-multi") == "Pending", "the normal path's answers")
        finally:
            gate.set()
            if not starting.done():
                starting.cancel()
            await second.stop()
        return early

    metrics = Metrics()
    early = asyncio.run(scenario())
    assert early == {"try": None, "queued-new": None, "behind-multi": None}
    # The priming's LISTs predate the early grants (the gate holds it open after them): what the
    # early path wrote is handed to the normal path, which neither creates those locks again (a
    # create that fails with 409) nor writes their claims' status on a version the early write moved.
    conflicts = {verb: metrics.registry.get_sample_value("kubelock_api_requests_total", {"verb": verb, "code": "409"})
                 for verb in ("create", "update")}
    assert conflicts == {"create": None, "update": None}
    fresh = locks.get("fresh")
    assert fresh["status"]["fencingToken"] > 0
    assert locks.lock(fresh["status"]["lockName"])["spec"]["claimRef"]["name"] == "fresh"


def test_selectable_fields_select_resource_uris_and_unanswered_claims(
    admin_api: ApiClient, iso_ns: str
) -> None:
    """`spec.resource` with `://`, `/`, `,` and `=` in it (escaped), `spec.resource=` for the claims of
    several resources, `status.phase=` for the claims no operator answered, and the lock's own."""
    locks = Locks(admin_api, iso_ns)
    locks.claim("one", FREE, "h1")
    locks.claim("two", HELD, "h2")
    _claim_all(locks, "several", [MULTI_A, MULTI_B], "h3")

    def names(selector: str, plural: str = "lockclaims") -> list[str]:
        listing = locks.api.list_namespaced_custom_object(GROUP, VERSION, iso_ns, plural, field_selector=selector)
        return sorted(item["metadata"]["name"] for item in listing["items"])

    assert names(field_selector("spec.resource", FREE)) == ["one"]
    assert names(field_selector("spec.resource", HELD)) == ["two"]
    assert names("spec.resource=") == ["several"]
    assert names("status.phase=") == ["one", "several", "two"]
    assert names("status.phase=Held") == []
    assert names(field_selector("spec.resource", HELD), "resourcelocks") == []


def test_a_claim_found_unanswered_and_deleted_before_its_view_is_read_is_not_granted_again(
    control_plane, admin_api: ApiClient, iso_ns: str  # type: ignore[no-untyped-def]
) -> None:
    """The early path finds C unanswered in a LIST; before it reads C's view, another replica grants
    C, C's holder releases it and C is deleted. The later reads no longer hold C, but the view keeps it
    unanswered from the LIST, beside a lock without its grant: a decision on that view grants C again,
    a grant nobody holds (chaos `semaphore`, two replicas). The early path leaves C alone instead."""
    locks = Locks(admin_api, iso_ns)
    resource = "deploy://early-gone"
    locks.claim("gone", resource, "agent-g")
    stale = locks.get("gone")  # as the early path's LIST saw it: unanswered
    assert phase_of(stale) is None
    locks.delete("gone")
    wait_until(lambda: not locks.claims(), what="the claim deleted", timeout=30)

    async def decide() -> str | None:
        runtime = await _runtime(control_plane.kubeconfig, iso_ns, None)
        early = EarlyGrants(runtime.client, runtime.settings.policy, runtime.clock, runtime.events,
                            runtime.policies, [iso_ns], lambda _: True)
        early.policies_listed()
        try:
            listed = Listed([stale], int(stale["metadata"]["resourceVersion"]))
            return await early._grant(iso_ns, stale["metadata"]["uid"], resource, listed)
        finally:
            await runtime.client.close()

    assert asyncio.run(decide()) == "the claim is gone"
    assert locks.locks() == [], "a lock was created for a claim that no longer exists"
