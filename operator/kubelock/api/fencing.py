"""The fencing token of a ResourceLock, as every reader must take it.

A grant's token is the resourceVersion at which its lock was created. The operator tells the claim
that number straight from the create's response and does not spend a write to copy it into the lock:
the lock records it in `spec.fencingToken` at its first write (a renewal, a break record), and until
then it has never been written, so its resourceVersion still is its creation's. Admission keeps it so
(config/admission/lock-token.yaml): an update of a lock without a token must record exactly its
current resourceVersion, and a recorded token never changes. So "spec.fencingToken, or else the
resourceVersion" gives the same number at every version of a lock, to the operator, the SDK, the CLI
and the chaos monitor alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubelock.api.objects import integer, revision


def lock_token(body: Mapping[str, Any]) -> int:
    """The token of the lock `body` (a ResourceLock as the API server returned it; 0 for a body with
    neither a recorded token nor a numeric resourceVersion)."""
    spec = body.get("spec")
    recorded = integer(spec.get("fencingToken")) if isinstance(spec, dict) else None
    return recorded or revision(body)
