"""A naive kopf lock operator, the comparator of benchmarks #1-#3: what one writes first with kopf.

Default kopf settings (progress annotations, Event posting, the consistency wait), one `on.create`
handler, the synchronous official client. A grant creates the ResourceLock (its deterministic name
makes the API server arbitrate) and patches the claim's status to Held. There is no queue: a claim
that finds the lock taken is retried by kopf, client-go style, every 2 s with jitter up to 1.2x.
Release is left to the garbage collector through the lock's ownerReference to the claim.

Run: `kopf run --standalone --namespace NS bench/naive_operator.py` (KUBECONFIG in the environment).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kubelock.domain.resource import lock_name, normalise

GROUP, VERSION = "kubelock.dev", "v1alpha1"
RETRY_SECONDS = 2.0
RETRY_JITTER = 1.2
DEFAULT_TTL = 1800

k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
_api = k8s.CustomObjectsApi()


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@kopf.on.startup()
def started(logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    logger.info("naive operator started")


@kopf.on.create(GROUP, VERSION, "lockclaims")
def grant(spec: kopf.Spec, name: str, namespace: str | None, uid: str, patch: kopf.Patch, **_: Any) -> None:
    if namespace is None:
        raise kopf.PermanentError("LockClaims are namespaced")
    resource = normalise(str(spec["resource"]))
    lock = lock_name(resource)
    now = time.time()
    ttl = int(spec.get("ttlSeconds") or DEFAULT_TTL)
    token = time.time_ns()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResourceLock",
        "metadata": {
            "name": lock,
            "ownerReferences": [
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "name": name, "uid": uid}
            ],
        },
        "spec": {
            "resource": resource,
            "holder": spec["holder"],
            "claimRef": {"name": name, "uid": uid},
            "leaseDurationSeconds": ttl,
            "acquireTime": _rfc3339(now),
            "renewTime": _rfc3339(now),
            "fencingToken": token,
        },
    }
    try:
        _api.create_namespaced_custom_object(GROUP, VERSION, namespace, "resourcelocks", body)
    except k8s.ApiException as error:
        if error.status == 409:
            raise kopf.TemporaryError(
                f"{resource} is held", delay=RETRY_SECONDS * random.uniform(1.0, RETRY_JITTER)
            ) from error
        raise
    patch.status["phase"] = "Held"
    patch.status["holder"] = spec["holder"]
    patch.status["lockName"] = lock
    patch.status["fencingToken"] = token
    patch.status["acquiredAt"] = _rfc3339(now)
    patch.status["expiresAt"] = _rfc3339(now + ttl)
