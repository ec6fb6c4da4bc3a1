"""kubelock's Python SDK: exclusive, fenced, deadlock-aware locks on LockClaims.

    from kubelock.sdk import LockClient

    with LockClient() as client, client.lock("github://acme/app/issues/42", ttl=300) as lease:
        work(fencing_token=lease.fencing_token)

    with LockClient() as client, client.lock_all(["github://acme/app/issues/42", "git://acme/app/fix-42"]) as lease:
        work(fencing_tokens=lease.fencing_tokens)  # all of them or none; {uri: token}

`AsyncLockClient` is the same API for asyncio; `kubelock.sdk.tools` has LLM tool functions.
See docs/sdk.md.
"""

from kubelock.kube.config import Impersonation
from kubelock.sdk.admin import AsyncAdmin, BrokenLock, Explanation, LockStatus
from kubelock.sdk.client import AsyncLockClient
from kubelock.sdk.errors import (
    Deadlock,
    Expired,
    Forbidden,
    HeldByAnotherProcess,
    InvalidInput,
    LockError,
    Lost,
    NotFound,
    Rejected,
    Revoked,
    TimedOut,
    Unreachable,
)
from kubelock.sdk.identity import Identity
from kubelock.sdk.lease import AsyncLease
from kubelock.sdk.model import (
    AcquireResult,
    ClaimInfo,
    GrantInfo,
    LockInfo,
    ReleaseResult,
    RenewResult,
    RevocationInfo,
)
from kubelock.sdk.signals import Terminated
from kubelock.sdk.sync import Lease, LockClient

__all__ = [
    "AcquireResult",
    "AsyncAdmin",
    "AsyncLease",
    "AsyncLockClient",
    "BrokenLock",
    "ClaimInfo",
    "Deadlock",
    "Expired",
    "Explanation",
    "Forbidden",
    "GrantInfo",
    "HeldByAnotherProcess",
    "Identity",
    "Impersonation",
    "InvalidInput",
    "Lease",
    "LockClient",
    "LockError",
    "LockInfo",
    "LockStatus",
    "Lost",
    "NotFound",
    "Rejected",
    "ReleaseResult",
    "RenewResult",
    "RevocationInfo",
    "Revoked",
    "Terminated",
    "TimedOut",
    "Unreachable",
]
