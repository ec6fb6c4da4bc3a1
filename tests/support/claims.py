"""Creating LockClaims and waiting for their state through the official client (as a user would)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client as k8s

GROUP, VERSION = "kubelock.dev", "v1alpha1"
Body = dict[str, Any]

# The least any wait here lasts before it fails. A wait's timeout is when to give up on a state
# that should come, not a claim about speed: on a loaded 2-core CI machine an API round trip or an
# operator's reaction can take many seconds, and a 10 s wait would fail a test that is right. A test
# that claims a bound says so with its own assertion on the time measured (and a margin).
MIN_WAIT_SECONDS = 60.0


class Locks:
    """LockClaim/ResourceLock access for one namespace and one identity."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.api = k8s.CustomObjectsApi(api)
        self.namespace = namespace

    def claim(
        self,
        name: str,
        resource: str,
        holder: str,
        *,
        wait: bool = False,
        ttl: int | None = None,
        wait_timeout: int | None = None,
        pod: tuple[str, str | None] | None = None,
        owner_pod_uid: str | None = None,
        mode: str | None = None,
        permits: int | None = None,
        **more: object,
    ) -> Body:
        """`more`: further spec fields, as the API spells them (priority=5, onBusy="Requeue")."""
        spec: Body = {"resource": resource, "holder": holder, "wait": wait, **more}
        if mode is not None:
            spec["mode"] = mode
        if permits is not None:
            spec["permits"] = permits
        if ttl is not None:
            spec["ttlSeconds"] = ttl
        if wait_timeout is not None:
            spec["waitTimeoutSeconds"] = wait_timeout
        if pod is not None:
            spec["podRef"] = {"name": pod[0], **({"uid": pod[1]} if pod[1] else {})}
        body: Body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LockClaim",
            "metadata": {"name": name},
            "spec": spec,
        }
        if owner_pod_uid and pod:
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": pod[0], "uid": owner_pod_uid}
            ]
        return dict(
            self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "lockclaims", body, field_validation="Strict"
            )
        )

    def get(self, name: str) -> Body:
        return dict(self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "lockclaims", name))

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "lockclaims", name)

    def renew(self, name: str, marker: str | None = None) -> Body:
        patch = {"metadata": {"annotations": {"kubelock.dev/renew": marker or f"{time.time():.6f}"}}}
        return dict(self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "lockclaims", name, patch))

    def claims(self) -> list[Body]:
        out = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "lockclaims")
        return list(out["items"])

    def locks(self) -> list[Body]:
        out = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "resourcelocks")
        return list(out["items"])

    def lock(self, name: str) -> Body:
        return dict(self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "resourcelocks", name))

    def delete_lock(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "resourcelocks", name)

    def wait_for(self, name: str, predicate: Callable[[Body], bool], timeout: float = 30, what: str = "") -> Body:
        """Polls the claim until `predicate` holds; fails after `timeout` s (at least MIN_WAIT_SECONDS)."""
        timeout = max(timeout, MIN_WAIT_SECONDS)
        deadline = time.monotonic() + timeout
        last: Body = {}
        while True:
            # The deadline is read before the look: a look that starts in time counts even when the
            # machine stalls this process past the deadline while it is made.
            late = time.monotonic() >= deadline
            try:
                last = self.get(name)
            except k8s.ApiException as error:
                if error.status != 404:
                    raise
            else:
                if predicate(last):
                    return last
            if late:
                raise AssertionError(f"claim {name} did not become {what or predicate} within {timeout}s; last: {last}")
            time.sleep(0.05)

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> Body:
        return self.wait_for(name, lambda b: phase_of(b) == phase, timeout, phase)

    def wait_phases(self, names: Iterable[str], phase: str, timeout: float = 30) -> list[Body]:
        return [self.wait_phase(n, phase, timeout) for n in names]


def phase_of(body: Body) -> str | None:
    return (body.get("status") or {}).get("phase")


def status_of(body: Body) -> Body:
    return dict(body.get("status") or {})


def wait_until(done: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll `done` until it is truthy; fail naming `what` after `timeout` s (at least MIN_WAIT_SECONDS),
    with one last look after the deadline."""
    timeout = max(timeout, MIN_WAIT_SECONDS)
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() >= deadline
        if done():
            return
        if late:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


async def wait_until_async(done: Callable[[], object], what: str, within: float = 30) -> None:
    """`wait_until` from a coroutine: `done` (blocking API calls) runs in a thread, so the event loop,
    with an operator on it, keeps running meanwhile."""
    deadline = time.monotonic() + max(within, MIN_WAIT_SECONDS)
    while not await asyncio.to_thread(done):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
