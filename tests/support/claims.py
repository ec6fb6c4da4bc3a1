"""Creating LockClaims and waiting for their state through the official client (as a user would)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

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

    def history(self) -> ClaimHistory:
        """Every version of this namespace's claims from now on (`with locks.history() as seen:`): for
        a phase that may be over before a poll looks (a lease of a few seconds on a loaded machine)."""
        return ClaimHistory(self.api.api_client, self.namespace)


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


class ClaimHistory:
    """Every version of a namespace's claims, as a watch delivers them (each write is one event), from
    the moment the `with` block is entered.

    For a state the operator writes and soon leaves (a revocation request with a grace of 2 s, then
    the lock broken): a poll can miss it when a loaded machine holds this test up for longer than the
    state lasts; a watch from a LIST's version is sent every write made after that LIST, however
    late it is read."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self._api = k8s.CustomObjectsApi(api)
        self._namespace = namespace
        self._watch = watch.Watch()
        self._versions: dict[str, list[Body]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._since = ""

    def __enter__(self) -> ClaimHistory:
        # The LIST is made here, before the test goes on: the watch starts from its version even when
        # its thread connects later, so nothing written after `with` is missed.
        listed = self._api.list_namespaced_custom_object(GROUP, VERSION, self._namespace, "lockclaims")
        for item in listed["items"]:
            self._keep(item)
        self._since = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._watch.stop()
        self._thread.join(10)

    def versions(self, name: str) -> list[Body]:
        with self._lock:
            return list(self._versions.get(name, ()))

    def wait_for(self, name: str, predicate: Callable[[Body], bool], timeout: float = 30, what: str = "") -> Body:
        """The first version of the claim seen for which `predicate` holds, waiting for it as
        `wait_until` does (at least MIN_WAIT_SECONDS, a last look after the deadline)."""
        found: list[Body] = []

        def seen() -> bool:
            found[:] = [body for body in self.versions(name) if predicate(body)][:1]
            return bool(found)

        try:
            wait_until(seen, what=f"claim {name} to be {what or predicate}", timeout=timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; every version seen: {self.versions(name)}") from None
        return found[0]

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> Body:
        """The first version of the claim seen in `phase`, though it may have left it since."""
        return self.wait_for(name, lambda b: phase_of(b) == phase, timeout, phase)

    def _keep(self, body: Body) -> None:
        with self._lock:
            self._versions.setdefault(body["metadata"]["name"], []).append(body)

    def _run(self) -> None:
        version = self._since
        while not self._stopped.is_set():
            try:
                stream = self._watch.stream(
                    self._api.list_namespaced_custom_object, GROUP, VERSION, self._namespace, "lockclaims",
                    resource_version=version, timeout_seconds=60,
                )
                for event in stream:
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                        continue
                    body: Body = event["object"]
                    version = body["metadata"]["resourceVersion"]
                    self._keep(body)
            except Exception:  # a dropped watch: resume from the last version seen
                if self._stopped.is_set():
                    return
                time.sleep(0.1)
