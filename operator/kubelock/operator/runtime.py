"""Everything the operator holds while it runs, built once from the settings and passed explicitly."""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

from kubelock.api.constants import POD_LABEL, POD_LABEL_VALUE
from kubelock.domain.clock import Clock
from kubelock.kube import paths
from kubelock.kube.client import KubeClient, RequestHook
from kubelock.kube.config import Credentials
from kubelock.operator.cache import Cache
from kubelock.operator.events import EventRecorder
from kubelock.operator.reconciler import Observer, Reconciler
from kubelock.operator.settings import Settings

log = logging.getLogger("kubelock.operator")
Body = dict[str, Any]


class Runtime:
    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        clock: Clock,
        *,
        observer: Observer | None = None,
        on_request: RequestHook | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.clock = clock
        self.client = KubeClient(credentials, on_request=on_request, user_agent="kubelock-operator")
        self.cache = Cache()
        self.events = EventRecorder(self.client, clock, settings.instance)
        self.reconciler = Reconciler(self.client, self.cache, settings.policy, clock, self.events, observer)

    def in_scope(self, namespace: str) -> bool:
        return self.settings.all_namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self.settings.namespaces)

    async def start(self) -> None:
        self.events.start()
        await self._prime()
        self.reconciler.start()
        where = "all namespaces" if self.settings.all_namespaces else ", ".join(self.settings.namespaces)
        log.info(
            "kubelock operator watching LockClaims in %s (%d claims, %d locks, %d holder pods known)",
            where, len(self.cache.claims), len(self.cache.locks), len(self.cache.pods),
        )

    async def stop(self) -> None:
        await self.reconciler.stop()
        await self.events.stop()
        await self.client.close()

    async def _prime(self) -> None:
        """Load every claim, lock and holder pod before deciding anything, so that a restarted
        operator never grants from an empty view (the API would refuse it anyway, at a cost)."""
        exact = [n for n in self.settings.namespaces if not any(ch in n for ch in "*?[")]
        scopes: list[str | None] = (
            list(exact) if exact and len(exact) == len(self.settings.namespaces) else [None]
        )
        for scope in scopes:
            locks, _ = await self.client.list_all(paths.locks(scope))
            claims, _ = await self.client.list_all(paths.claims(scope))
            pods, _ = await self.client.list_all(paths.pods(scope), labelSelector=f"{POD_LABEL}={POD_LABEL_VALUE}")
            for body in locks:
                if self.in_scope(_namespace(body)):
                    self.cache.upsert_lock(body)
            for body in claims:
                if self.in_scope(_namespace(body)):
                    self.cache.upsert_claim(body)
            for body in pods:
                if self.in_scope(_namespace(body)):
                    self.cache.upsert_pod(body)

    # ---- watch events -----------------------------------------------------------------------

    def on_claim(self, kind: str | None, body: Body) -> None:
        if kind == "DELETED":
            self.reconciler.schedule(self.cache.delete_claim(body))
        else:
            self.reconciler.schedule(self.cache.upsert_claim(body))

    def on_lock(self, kind: str | None, body: Body) -> None:
        if kind == "DELETED":
            self.reconciler.schedule(self.cache.delete_lock(body))
        else:
            self.reconciler.schedule(self.cache.upsert_lock(body))

    def on_pod(self, kind: str | None, body: Body) -> None:
        keys = self.cache.delete_pod(body) if kind == "DELETED" else self.cache.upsert_pod(body)
        for key in keys:
            self.reconciler.schedule(key)


def _namespace(body: Body) -> str:
    return str((body.get("metadata") or {}).get("namespace", ""))
