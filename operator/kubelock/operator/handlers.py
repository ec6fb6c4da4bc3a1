"""The kopf glue: a registry whose handlers only feed the runtime's cache (holder pods; the runtime
watches claims and locks itself, see `kubelock.operator.watches`).

Only `on.event` handlers are used. They have no finalizers, store no progress annotations and are
not delayed by kopf's consistency wait, so kopf adds no writes of its own to a lock's path.
kopf watches only what it has handlers for: with no handler for claims or locks it neither lists them
nor keeps memory of its own for each.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubelock.api.constants import POD_LABEL, POD_LABEL_VALUE
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
        # kopf lists and watches every CRD (to notice new resources) and, for namespace patterns,
        # every namespace. Holder pods are a core resource, and exact namespaces need no matching: at
        # a restart those LISTs and watches only compete with the first decisions.
        settings.scanning.disabled = not runtime.settings.namespace_patterns
        await runtime.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # kopf calls this at start, after a 401 and once `expiration` has passed, and ignores an answer
        # equal to credentials it saw refused: so re-read the token file or re-run the exec plugin.
        auth = runtime.client.auth
        await auth.refresh(force=True)
        creds = runtime.credentials
        cert = auth.client_certificate()
        return kopf.ConnectionInfo(
            server=creds.server,
            ca_path=creds.ca_file,
            insecure=creds.insecure,
            token=await auth.token(),
            username=None if auth.refreshable else creds.username,
            password=None if auth.refreshable else creds.password,
            certificate_path=cert[0] if cert else None,
            private_key_path=cert[1] if cert else None,
            default_namespace=creds.namespace,
            expiration=auth.refresh_deadline(),
        )

    @kopf.on.event("", "v1", "pods", labels={POD_LABEL: POD_LABEL_VALUE}, registry=registry)
    async def pod_event(*, event: kopf.RawEvent, **_: Any) -> None:
        runtime.on_pod(event["type"], dict(event["object"]))

    return registry
