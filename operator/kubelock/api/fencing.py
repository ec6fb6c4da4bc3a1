"""The fencing token of a ResourceLock, as every reader must take it.

A grant's token is the resourceVersion at which its lock was created. The operator tells the claim
that number straight from the create's response and does not spend a write to copy it into the lock:
the lock records it in `spec.fencingToken` at its first write (a renewal, a break record), and until
then it has never been written, so its resourceVersion still is its creation's. Admission keeps it so
(config/admission/lock-token.yaml): an update of a lock without a token must record exactly its
current resourceVersion, and a recorded token never changes. So "spec.fencingToken, or else the
resourceVersion" gives the same number at every version of a lock, to the operator, the SDK, the CLI
and the chaos monitor alike.

A lock records every grant on its resource (Shared holders, semaphore permits): the first in its
top-level fields, every further one in `spec.grants`. The rule is the same per grant: a grant's token
is the resourceVersion of the write that made it; the write that adds a grant leaves its token 0 and
records the current resourceVersion in every grant that still had 0 (the lock's next write fills in
the new one). So each grant's token is "its fencingToken, or else the lock's resourceVersion", and
tokens increase per resource with every grant, whatever its mode.

The same holds when the operator hands a lock to the next holder (the last grant goes and a new one
comes in one update): the new first grant is added with 0, so its token is that update's
resourceVersion. A lock object thus carries one grant after another; a grant is named by its claim's
uid, never by the lock's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubelock.api.objects import integer, revision


def lock_token(body: Mapping[str, Any]) -> int:
    """The token of the lock `body` (a ResourceLock as the API server returned it; 0 for a body with
    neither a recorded token nor a numeric resourceVersion)."""
    spec = body.get("spec")
    return grant_token(body, spec if isinstance(spec, dict) else {})


def grant_token(body: Mapping[str, Any], grant: Mapping[str, Any]) -> int:
    """The token of one grant of the lock `body`: `grant` is its top-level spec (the first grant) or
    an entry of its spec.grants."""
    return integer(grant.get("fencingToken")) or revision(body)


def grant_tokens(body: Mapping[str, Any]) -> dict[str, int]:
    """The token of every grant of the lock `body`, by the uid of the grant's claim."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return {}
    grants = spec.get("grants")
    every = [spec, *(g for g in grants if isinstance(g, dict))] if isinstance(grants, list) else [spec]
    tokens: dict[str, int] = {}
    for grant in every:
        ref = grant.get("claimRef")
        if isinstance(ref, dict) and isinstance(ref.get("uid"), str):
            tokens[ref["uid"]] = grant_token(body, grant)
    return tokens


def recorded(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a lock's spec that records every grant's token, for a write of the lock by someone
    other than the operator (a break record): the top-level token and, when the lock has further
    grants, the whole list with each 0 filled in (a merge patch replaces a list)."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return {"fencingToken": revision(body)}
    out: dict[str, Any] = {"fencingToken": grant_token(body, spec)}
    grants = spec.get("grants")
    if isinstance(grants, list) and grants:
        out["grants"] = [
            {**g, "fencingToken": grant_token(body, g)} if isinstance(g, dict) else g for g in grants
        ]
    return out
