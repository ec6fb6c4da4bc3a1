"""The API types of kubelock.dev/v1alpha1 as pydantic models.

They are the single source of the CRD schemas (see `crdgen`): descriptions become what
`kubectl explain` prints, and `x-kubernetes-validations` carry the rules the API server enforces.
The SDK validates with the same models before sending anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubelock.domain.model import OnBusy
from kubelock.domain.reasons import Phase
from kubelock.domain.resource import (
    HOLDER_PATTERN,
    MAX_HOLDER_LENGTH,
    MAX_RESOURCE_LENGTH,
    RESOURCE_PATTERN,
    validate_holder,
    validate_resource,
)

MAX_PRIORITY = 1000
MAX_TTL_CEILING = 86400
"""The hard ceiling for ttlSeconds and waitTimeoutSeconds in the CRD schema (the operator setting
maxTtlSeconds can only lower it)."""


def _cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


def _immutable(what: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [_cel("self == oldSelf", f"{what} is immutable")]}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


ResourceURI = Annotated[
    str,
    AfterValidator(validate_resource),
    Field(
        max_length=MAX_RESOURCE_LENGTH,
        description=(
            "The resource to lock, as a URI `scheme://rest`, e.g. `github://acme/app/issues/42` or "
            "`deploy://api-prod`. The scheme starts with a letter and holds letters, digits, `+`, `.` "
            "and `-`; no whitespace or control characters; at most 1024 bytes in UTF-8. Compared after "
            "normalisation (scheme lower-cased, one trailing `/` removed); otherwise byte-exact. Immutable."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"size(bytes(self)) <= {MAX_RESOURCE_LENGTH}", f"must be at most {MAX_RESOURCE_LENGTH} bytes"
                     " (UTF-8)"),
                _cel(
                    f"self.matches(r'{RESOURCE_PATTERN}')",
                    "must be a URI scheme://rest: the scheme starts with a letter and holds only letters, "
                    "digits, '+', '.' or '-', and the URI has no whitespace or control characters",
                ),
                _cel("self == oldSelf", "resource is immutable"),
            ]
        },
    ),
]

Holder = Annotated[
    str,
    AfterValidator(validate_holder),
    Field(
        min_length=1,
        max_length=MAX_HOLDER_LENGTH,
        description=(
            "Who holds or waits: `<identity>/<instance>`. The identity is the requester as the API server "
            "authenticated it: `pod:<namespace>/<pod>` for a pod's ServiceAccount token, "
            "`sa:<namespace>/<name>` for another ServiceAccount token, `user:<name>` for anyone else; the "
            "instance (1-63 letters, digits, '.', '_', '-'; for a pod, beginning with the first 8 characters "
            "of its uid) names one process of it. Two instances conflict like any two holders. Only lock "
            "admins may claim for someone else. 1-253 bytes in UTF-8, no whitespace or control characters. "
            "Deadlock detection links claims by holder. Immutable."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"size(bytes(self)) <= {MAX_HOLDER_LENGTH}", f"must be at most {MAX_HOLDER_LENGTH} bytes (UTF-8)"),
                _cel(f"self.matches(r'{HOLDER_PATTERN}')", "must not contain whitespace or control characters"),
                _cel("self == oldSelf", "holder is immutable"),
            ]
        },
    ),
]


class PodRef(_Model):
    """A pod in the claim's namespace whose termination releases the claim."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of the pod (in the claim's namespace).",
    )
    uid: str | None = Field(
        default=None,
        max_length=128,
        description="UID of the pod. When set, a different pod with the same name counts as terminated.",
    )


class ObjectRef(_Model):
    name: str = Field(description="Object name.")
    uid: str = Field(description="Object UID.")


class LockClaimSpec(_Model):
    """What a holder asks for. Only `ttlSeconds` may change after creation."""

    resource: ResourceURI
    holder: Holder
    pod_ref: PodRef | None = Field(
        default=None,
        description=(
            "Ties the claim to a pod: when the pod is deleted, or reaches phase Succeeded or Failed, the "
            "claim becomes Revoked (reason HolderPodTerminated) and its lock is released within seconds. "
            "The pod must carry the label `kubelock.dev/lock-holder: \"true\"`. Immutable."
        ),
    )
    ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TTL_CEILING,
        description=(
            "Lease duration in seconds. Each renewal (heartbeat) extends the lease to ttlSeconds from the "
            "moment the operator observes it. Default: the operator setting resourceLockTimeout (1800). "
            "At least 1, at most the operator setting maxTtlSeconds (default and ceiling 86400)."
        ),
    )
    wait: bool = Field(
        default=False,
        description=(
            "false (default): try once; if another holder has the resource the claim ends Rejected and "
            "status.holder names that holder. true: queue first-come-first-served until granted."
        ),
    )
    wait_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TTL_CEILING,
        description="With wait: true, give up after this many seconds of waiting (phase TimedOut, or see onBusy).",
    )
    priority: int = Field(
        default=0,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
        description=(
            "Queue order: waiters are served by effective priority (this value plus one point per "
            "priorityAgingSeconds of waiting, an operator setting, default 10), then by arrival, so no "
            "waiter starves. -1000..1000, default 0. A value above 0 needs the RBAC verb `prioritize` on "
            "lockclaims (lock admins have it). Immutable."
        ),
        json_schema_extra=_immutable("priority"),
    )
    on_busy: OnBusy = Field(
        default=OnBusy.FAIL,
        description=(
            "What a queued claim does when its waitTimeoutSeconds runs out: Fail (default) ends it TimedOut; "
            "Requeue puts it back at the end of the queue with a fresh wait (status.requeues counts how often). "
            "A deadlock victim ends Deadlocked either way: going back to the queue would not break the cycle. "
            "Requeue needs wait: true and waitTimeoutSeconds. Immutable."
        ),
        json_schema_extra=_immutable("onBusy"),
    )


LOCK_CLAIM_SPEC_RULES = [
    _cel(
        "has(self.podRef) == has(oldSelf.podRef) && (!has(self.podRef) || self.podRef == oldSelf.podRef)",
        "podRef is immutable",
    ),
    _cel(
        "!has(self.waitTimeoutSeconds) || self.wait",
        "waitTimeoutSeconds requires wait: true",
        fieldPath=".waitTimeoutSeconds",
    ),
    _cel("self.wait == oldSelf.wait", "wait is immutable"),
    _cel(
        "!has(self.onBusy) || self.onBusy != 'Requeue' || (self.wait && has(self.waitTimeoutSeconds))",
        "onBusy: Requeue needs wait: true and waitTimeoutSeconds (it says what happens when the wait times out)",
        fieldPath=".onBusy",
    ),
    _cel(
        "has(self.waitTimeoutSeconds) == has(oldSelf.waitTimeoutSeconds)"
        " && (!has(self.waitTimeoutSeconds) || self.waitTimeoutSeconds == oldSelf.waitTimeoutSeconds)",
        "waitTimeoutSeconds is immutable",
    ),
]


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str = Field(description="Condition type: Held or Stale.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Machine-readable CamelCase reason.")
    message: str = Field(default="", description="Human-readable explanation.")
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(default=None, description="The generation it was computed from.")


class Revocation(_Model):
    """A request that the holder give its lock back."""

    requested_at: datetime = Field(description="When the operator recorded the request.")
    requested_by: str = Field(
        description="Who asked: the administrator's user name, or kubelock-operator (preemption by a waiter of "
        "higher priority)."
    )
    grace_seconds: int = Field(ge=0, description="How long the holder has to release.")
    deadline: datetime = Field(
        description="requestedAt + graceSeconds: if the claim still holds then, the operator breaks the lock "
        "(phase Revoked, reason RevocationGraceExpired)."
    )
    reason: str | None = Field(default=None, description="Why, as the requester said.")


class LockClaimStatus(_Model):
    """Written by the operator only."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "Pending (queued), Held, Rejected (try-once and held by another), TimedOut, Expired (lease ran "
            "out), Deadlocked (waiting would close a wait-for cycle) or Revoked (an admin broke the lock, or "
            "the owning pod terminated). The last five are terminal: the claim holds nothing."
        ),
    )
    holder: str | None = Field(
        default=None,
        description="Who holds the resource now: this claim's holder when Held; the other holder when "
        "Pending or Rejected.",
    )
    lock_name: str | None = Field(default=None, description="Name of the ResourceLock while Held.")
    fencing_token: int | None = Field(
        default=None,
        description=(
            "While Held: a number strictly greater than every token issued before for the same resource "
            "in this namespace. Pass it with every write to the protected system and have that system "
            "refuse writes carrying a smaller token than the largest it has seen."
        ),
    )
    acquired_at: datetime | None = Field(default=None, description="When the current lease was granted.")
    renewed_at: datetime | None = Field(default=None, description="When the operator last observed a renewal.")
    expires_at: datetime | None = Field(default=None, description="When the lease ends unless renewed.")
    queue_position: int | None = Field(default=None, description="1-based position in the queue while Pending.")
    cycle: list[str] | None = Field(
        default=None,
        description=(
            "While Deadlocked: the wait-for cycle, holders and resources alternating, starting and ending "
            "with this claim's holder."
        ),
    )
    reason: str | None = Field(default=None, description="Machine reason (CamelCase) for the current phase.")
    message: str | None = Field(default=None, description="Human sentence for the current phase.")
    sequence: int | None = Field(
        default=None,
        description="The claim's place in the queue order: the resourceVersion at which the operator first "
        "saw it.",
    )
    observed_renew: str | None = Field(
        default=None, description="The value of the kubelock.dev/renew annotation the operator last acted on."
    )
    finished_at: datetime | None = Field(
        default=None,
        description=(
            "When the claim entered a terminal phase. The operator deletes terminal claims "
            "ttlSecondsAfterFinished (an operator setting, default 3600) after this time."
        ),
    )
    waiting_since: datetime | None = Field(
        default=None,
        description="While Pending: when the operator first saw the claim waiting; waitTimeoutSeconds counts "
        "from here.",
    )
    revocation: Revocation | None = Field(
        default=None,
        description=(
            "While Held: a request that the holder give the lock back (`kubelock revoke --request`, or "
            "preemption). Release by the deadline; after it the lock is broken."
        ),
    )
    requeues: int | None = Field(
        default=None, description="How often the claim went back to the end of the queue (onBusy: Requeue)."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description=(
            "Held (True while held) and, while held, Stale: True when the holder has missed its renewal "
            "schedule (no renewal for staleAfterPercent, default 50, of the lease; holders renew every "
            "third of it)."
        ),
    )
    observed_generation: int | None = Field(default=None, description="The generation last acted on.")


class ResourceLockSpec(_Model):
    """A held lock: a lease with a fencing token. Written by the operator only."""

    resource: str = Field(
        description="The normalised resource URI.",
        json_schema_extra=_immutable("resource"),
    )
    holder: str = Field(description="The holder identity.")
    claim_ref: ObjectRef = Field(description="The LockClaim that holds this lock.")
    pod_ref: PodRef | None = Field(default=None, description="The holder's pod, when the claim names one.")
    lease_duration_seconds: int = Field(ge=1, description="Lease duration, as in coordination.k8s.io/v1 Lease.")
    acquire_time: datetime = Field(description="When the lock was granted.")
    renew_time: datetime = Field(description="When the operator last observed a renewal.")
    expire_time: datetime | None = Field(default=None, description="renewTime + leaseDurationSeconds.")
    fencing_token: int = Field(
        ge=0,
        description=(
            "The grant's fencing token, as on the claim: the resourceVersion at which this lock was created. "
            "0 until the lock's first write (a renewal, a break record) records it: a lock never written since "
            "its creation still has that resourceVersion, so read the token as this field or, when it is 0, "
            "metadata.resourceVersion. Admission keeps that true: the first write must record exactly the "
            "current resourceVersion, and a recorded token never changes."
        ),
    )


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    namespace: str | None = None


class LockClaim(_Model):
    """A request for an exclusive lock on a resource. Deleting it releases the lock or leaves the queue."""

    api_version: Literal["kubelock.dev/v1alpha1"] = "kubelock.dev/v1alpha1"
    kind: Literal["LockClaim"] = "LockClaim"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LockClaimSpec
    status: LockClaimStatus | None = None


class ResourceLock(_Model):
    """A held lock. Created and renewed by the operator; cluster admins delete it to break a lock."""

    api_version: Literal["kubelock.dev/v1alpha1"] = "kubelock.dev/v1alpha1"
    kind: Literal["ResourceLock"] = "ResourceLock"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ResourceLockSpec
