"""One holder's claims in a namespace, selected by the API server (`list()` with an instance).

A holder's claims are found by the claim's own `spec.holder`, not by the SDK's holder-hash label: a
claim written as YAML (`kubectl apply`) has no such label and is its holder's all the same. The
LockClaim CRD makes `spec.holder` a selectable field, so the API server sends back that holder's
claims alone: with 10 000 claims in the namespace the answer is a handful of objects, not 20 pages
of every claim (bench/README.md, "`kubelock list` at 10 000 claims").

A cluster whose CRD predates the field (the SDK upgraded before the CRDs), or an API server without
the CRDs' `selectableFields` (docs/api.md: Kubernetes 1.32 and later), refuses the selector with a
400; the claims are then listed whole and filtered here, as before. The answer is filtered here
either way.
"""

from __future__ import annotations

import builtins

from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import Body, KubeClient

HOLDER_FIELD = "spec.holder"


async def holder_claims(kube: KubeClient, namespace: str, holder: str) -> builtins.list[Body]:
    """Every claim of `holder` in `namespace` (raw bodies), whatever wrote it."""
    path = paths.claims(namespace)
    try:
        items, _ = await kube.list_all(path, fieldSelector=paths.field_selector(HOLDER_FIELD, holder))
    except kube_errors.Invalid as error:
        if error.status != 400:  # a 400 is the selector refused ("field label not supported")
            raise
        items, _ = await kube.list_all(path)
    return [b for b in items if (b.get("spec") or {}).get("holder") == holder]
