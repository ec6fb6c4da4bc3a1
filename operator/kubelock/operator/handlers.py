"""The kopf glue: a registry whose handlers only feed the runtime's cache (locks and holder pods; the
runtime watches claims itself, see `kubelock.operator.claimwatch`).

Only `on.event` handlers are used. They have no finalizers, store no progress annotations and are
not delayed by kopf's consistency wait, so kopf adds no writes of its own to a lock's path.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubelock.api.constants import GROUP, LOCK_PLURAL, POD_LABEL, POD_LABEL_VALUE, VERSION
from kubelock.operator.runtime import Runtime


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # kubelock writes its own, meaningful Events
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        # The handlers only update the cache, so a per-object worker has nothing to wait for; kopf's
        # default keeps each one alive 5 s after its last event, which under churn means thousands
        # of idle tasks (and their memory) at once.
        settings.queueing.idle_timeout = 0.5
        settings.persistence.finalizer = "kubelock.dev/unused"  # never added: no handler needs one
        await runtime.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        creds = runtime.credentials
        return kopf.ConnectionInfo(
            server=creds.server,
            ca_path=creds.ca_file,
            insecure=creds.insecure,
            token=creds.bearer(),
            certificate_path=creds.cert_file,
            private_key_path=creds.key_file,
            default_namespace=creds.namespace,
        )

    @kopf.on.event(GROUP, VERSION, LOCK_PLURAL, registry=registry)
    async def lock_event(*, event: kopf.RawEvent, **_: Any) -> None:
        runtime.on_lock(event["type"], dict(event["object"]))

    @kopf.on.event("", "v1", "pods", labels={POD_LABEL: POD_LABEL_VALUE}, registry=registry)
    async def pod_event(*, event: kopf.RawEvent, **_: Any) -> None:
        runtime.on_pod(event["type"], dict(event["object"]))

    return registry
