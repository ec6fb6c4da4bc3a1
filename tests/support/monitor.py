"""Watches every LockClaim of a namespace and checks, at each event, that the claims in phase Held on
each resource may hold it together (capacity 1: one exclusive holder, or any number of Shared ones):
the "at no observed moment two conflicting holders" property."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from kubelock.api.fencing import lock_token
from kubelock.domain.grants import Mode, Need, compatible
from kubelock.domain.resource import normalise


class HolderMonitor:
    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self._api = k8s.CustomObjectsApi(api)
        self._namespace = namespace
        self._watch = watch.Watch()
        self._held: dict[str, dict[str, Need]] = defaultdict(dict)  # resource -> claim names Held -> need
        self.violations: list[str] = []
        self.grants: list[tuple[str, str, int]] = []  # (resource, claim, fencing token) in observed order
        self._holders: dict[str, str] = {}  # claim name -> its holder, while it is Held
        self.peak_by_holder: dict[str, int] = {}  # the most claims each holder was seen Held at once
        self.events = 0
        self._seen: dict[str, int] = {}  # claim name -> the newest resourceVersion the watch showed of it
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped = threading.Event()

    def __enter__(self) -> HolderMonitor:
        self._thread.start()
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        try:
            if kind is None:
                self.settle()
        finally:
            self._stopped.set()
            self._watch.stop()
            self._thread.join(10)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the watch has shown every claim as a fresh LIST has it. A test that saw a claim
        Held by a GET may stop the monitor before the watch (another connection) delivered that
        write, and would then judge a history that misses its last grant."""
        listed = self._api.list_namespaced_custom_object("kubelock.dev", "v1alpha1", self._namespace, "lockclaims")
        wanted = {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in listed["items"]}
        deadline = time.monotonic() + timeout
        while (behind := sorted(n for n, v in wanted.items() if self._seen.get(n, 0) < v)):
            if time.monotonic() > deadline:
                raise AssertionError(f"the claim watch did not show {behind} within {timeout} s")
            time.sleep(0.05)

    def _run(self) -> None:
        version = ""
        while not self._stopped.is_set():
            try:
                stream = self._watch.stream(
                    self._api.list_namespaced_custom_object,
                    "kubelock.dev",
                    "v1alpha1",
                    self._namespace,
                    "lockclaims",
                    resource_version=version or None,
                    timeout_seconds=60,
                )
                for event in stream:
                    obj: dict[str, Any] = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self._observe(event["type"], obj)
            except Exception:  # a dropped watch: resume from the last version seen
                if self._stopped.is_set():
                    return

    def _observe(self, kind: str, obj: dict[str, Any]) -> None:
        self.events += 1
        name = obj["metadata"]["name"]
        self._seen[name] = max(self._seen.get(name, 0), int(obj["metadata"]["resourceVersion"]))
        spec = obj["spec"]
        status = obj.get("status") or {}
        holding = kind != "DELETED" and status.get("phase") == "Held"
        tokens = {g["resource"]: g["fencingToken"] for g in status.get("grants") or []}  # a claim of several
        for resource in [normalise(r) for r in spec.get("resources") or [spec["resource"]]]:
            held = self._held[resource]
            if holding and name not in held:
                held[name] = Need(Mode(spec.get("mode", "Exclusive")), int(spec.get("permits", 1)))
                token = tokens.get(resource, status.get("fencingToken"))
                self.grants.append((resource, name, int(token or 0)))
                if not compatible(held.values(), 1):
                    self.violations.append(f"{resource} held by {sorted(held)} at once")
            elif not holding:
                held.pop(name, None)
        self._count_holder(name, spec["holder"], holding)

    def _count_holder(self, name: str, holder: str, holding: bool) -> None:
        if not holding:
            self._holders.pop(name, None)
            return
        self._holders[name] = holder
        now = sum(1 for h in self._holders.values() if h == holder)
        self.peak_by_holder[holder] = max(self.peak_by_holder.get(holder, 0), now)

    def tokens_by_resource(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for resource, _, token in self.grants:
            out[resource].append(token)
        return out


class LockMonitor:
    """Watches every ResourceLock of a namespace and remembers, per lock, the claim it was created
    for, its creation's resourceVersion, its token and the watch events seen of it."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self._api = k8s.CustomObjectsApi(api)
        self._namespace = namespace
        self._watch = watch.Watch()
        self.created: dict[str, tuple[str, int]] = {}  # lock uid -> (claim uid, creation version)
        self.tokens: dict[str, int] = {}  # lock uid -> its token, as first seen
        self.changes: dict[str, list[str]] = {}  # lock uid -> the watch events seen of it, in order
        self._live: dict[str, set[str]] = defaultdict(set)  # holder -> uids of the claims it has grants of
        # The most grants each holder was seen to have at once: a claim holds from its grant's
        # write, before it is told (the quota's count), so this sees what HolderMonitor may not.
        self.peak_grants_by_holder: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped = threading.Event()

    def __enter__(self) -> LockMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._watch.stop()
        self._thread.join(10)

    def _run(self) -> None:
        version = ""
        while not self._stopped.is_set():
            try:
                stream = self._watch.stream(
                    self._api.list_namespaced_custom_object,
                    "kubelock.dev",
                    "v1alpha1",
                    self._namespace,
                    "resourcelocks",
                    resource_version=version or None,
                    timeout_seconds=60,
                )
                for event in stream:
                    obj: dict[str, Any] = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    uid = obj["metadata"]["uid"]
                    if event["type"] == "ADDED" and uid not in self.created:
                        self.created[uid] = (obj["spec"]["claimRef"]["uid"], int(version))
                    self.changes.setdefault(uid, []).append(event["type"])
                    self.tokens.setdefault(uid, lock_token(obj))
                    self._count_grants(event["type"], obj)
            except Exception:  # a dropped watch: resume from the last version seen
                if self._stopped.is_set():
                    return

    def _count_grants(self, kind: str, obj: dict[str, Any]) -> None:
        lock = obj["metadata"]["uid"]
        spec = obj["spec"]
        every = [spec, *(spec.get("grants") or [])]  # the first grant is the top level, the rest listed
        grants = {} if kind == "DELETED" else {g["claimRef"]["uid"]: g["holder"] for g in every}
        for claims in self._live.values():
            claims -= {c for c in claims if c.startswith(f"{lock}/")}
        for claim, holder in grants.items():
            self._live[holder].add(f"{lock}/{claim}")
            self.peak_grants_by_holder[holder] = max(
                self.peak_grants_by_holder.get(holder, 0), len(self._live[holder])
            )

    def claims_locked(self) -> set[str]:
        """Uids of every claim a lock was created for."""
        return {claim for claim, _ in self.created.values()}


class StatusLog:
    """Every status a namespace's claims were seen with, in order: (claim, phase, queuePosition) per
    watch event (each write of a claim is one event), to count how often the operator wrote them."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self._api = k8s.CustomObjectsApi(api)
        self._namespace = namespace
        self._watch = watch.Watch()
        self.seen: list[tuple[str, str | None, int | None]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped = threading.Event()

    def __enter__(self) -> StatusLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._watch.stop()
        self._thread.join(10)

    def of(self, name: str) -> list[tuple[str | None, int | None]]:
        """The statuses of one claim, each distinct write once (a resumed watch may repeat one)."""
        out: list[tuple[str | None, int | None]] = []
        for claim, phase, position in self.seen:
            if claim == name:
                out.append((phase, position))
        return out

    def _run(self) -> None:
        version = ""
        while not self._stopped.is_set():
            try:
                stream = self._watch.stream(
                    self._api.list_namespaced_custom_object, "kubelock.dev", "v1alpha1", self._namespace,
                    "lockclaims", resource_version=version or None, timeout_seconds=60,
                )
                for event in stream:
                    obj: dict[str, Any] = event["object"]
                    if version and obj["metadata"]["resourceVersion"] == version:
                        continue
                    version = obj["metadata"]["resourceVersion"]
                    status = obj.get("status") or {}
                    self.seen.append((obj["metadata"]["name"], status.get("phase"), status.get("queuePosition")))
            except Exception:  # a dropped watch: resume from the last version seen
                if self._stopped.is_set():
                    return
