"""The API types of kubelock.dev/v1alpha1 as pydantic models.

They are the single source of the CRD schemas (see `crdgen`): descriptions become what
`kubectl explain` prints, and `x-kubernetes-validations` carry the rules the API server enforces.
The SDK validates with the same models before sending anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kubelock.api.spellingrules import resource_rules, resources_rules
from kubelock.domain.model import MAX_GRANTS, OnBusy
from kubelock.domain.reasons import Phase
from kubelock.domain.resource import (
    HOLDER_PATTERN,
    MAX_HOLDER_LENGTH,
    MAX_RESOURCE_LENGTH,
    RESOURCE_PATTERN,
    validate_holder,
    validate_resource,
)
from kubelock.domain.spelling import other_spelling

MAX_PRIORITY = 1000
MAX_TTL_CEILING = 86400
"""The hard ceiling for ttlSeconds and waitTimeoutSeconds in the CRD schema (the operator setting
maxTtlSeconds can only lower it)."""


def _cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


def _rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


CLAIM_CHANGE_ADVICE = (
    "; only ttlSeconds may change: to ask for something else, delete the claim and create it anew with the "
    "new spec (kubectl replace --force -f FILE does both; deleting releases what the claim holds)"
)
"""Said with every immutable field of a claim: a Rejected claim's message advises `wait: true`, and
editing the claim is refused, so the refusal says what works instead, and the one command that does it
(`kubectl apply` of the edited file is what was refused)."""


def _between(low: int, high: int, what: str) -> AfterValidator:
    """The bounds the CEL rule of the field states, for the SDK (kept out of the schema, so the API
    server answers with the rule's message alone)."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{what} must be between {low} and {high}, not {value}")
        return value

    return AfterValidator(check)


def _range(name: str, low: int, high: int, advice: str) -> dict[str, str]:
    """The CEL rule of an integer field's bounds: its message names the field, the bounds and what to
    do, where the schema's own `minimum`/`maximum` would answer "should be less than or equal to"
    (neither is shown by `kubectl explain`: each field's description states its range)."""
    return _cel(f"self >= {low} && self <= {high}", f"{name} must be between {low} and {high}: {advice}")


def _immutable(what: str, advice: str = "") -> dict[str, Any]:
    return _rules(_cel("self == oldSelf", f"{what} is immutable{advice}"))


def _claim_immutable(what: str) -> dict[str, Any]:
    return _immutable(what, CLAIM_CHANGE_ADVICE)


def _one_spelling(uri: str) -> str:
    """A new claim's URI in the one spelling RFC 3986 leaves as it is (`domain.spelling`)."""
    problem = other_spelling(uri)
    if problem is not None:
        raise ValueError(problem)
    return uri


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


URI_RULE_MESSAGE = (
    "must be a URI scheme://rest such as github://acme/app/issues/42 or deploy://api-prod: the scheme starts "
    "with a letter and holds only letters, digits, '+', '.' or '-', and the URI has no whitespace or control "
    "characters"
)

ResourceURI = Annotated[
    str,
    AfterValidator(validate_resource),
    AfterValidator(_one_spelling),
    Field(
        max_length=MAX_RESOURCE_LENGTH,
        description=(
            "The resource to lock, as a URI `scheme://rest`, e.g. `github://acme/app/issues/42` or "
            "`deploy://api-prod`. The scheme starts with a letter and holds letters, digits, `+`, `.` "
            "and `-`; no whitespace or control characters; at most 1024 bytes in UTF-8. Compared after "
            "normalisation (scheme lower-cased, one trailing `/` removed); otherwise byte-exact. A spelling "
            "RFC 3986 would rewrite is refused, with the spelling to use: a `.` or `..` path segment, upper-case "
            "letters in the host, a %-escape of a letter, digit, `-`, `.`, `_` or `~`, lower-case hex in a "
            "%-escape, an empty port, `:80` on http and `:443` on https. Immutable."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"size(bytes(self)) <= {MAX_RESOURCE_LENGTH}", f"must be at most {MAX_RESOURCE_LENGTH} bytes"
                     " (UTF-8)"),
                _cel(
                    f"self.matches(r'{RESOURCE_PATTERN}')",
                    URI_RULE_MESSAGE,
                ),
                _cel("self == oldSelf", "resource is immutable" + CLAIM_CHANGE_ADVICE),
                *resource_rules(),
            ]
        },
    ),
]

MAX_RESOURCES = 16
"""The most resources one claim may ask for at once (`spec.resources`)."""
MAX_PERMITS = 1000
"""The most permits one claim may ask of a resource."""

ResourceItem = Annotated[
    str,
    AfterValidator(validate_resource),
    AfterValidator(_one_spelling),
    Field(
        max_length=MAX_RESOURCE_LENGTH,
        description="A resource URI, with the rules of `resource`.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(f"size(bytes(self)) <= {MAX_RESOURCE_LENGTH}", f"must be at most {MAX_RESOURCE_LENGTH} bytes"
                     " (UTF-8)"),
                _cel(
                    f"self.matches(r'{RESOURCE_PATTERN}')",
                    URI_RULE_MESSAGE,
                ),
            ]
        },
    ),
]

Mode = Literal["Exclusive", "Shared"]

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
                _cel(f"self.matches(r'{HOLDER_PATTERN}')", "must be <identity>/<instance>, e.g. user:alice/laptop, "
                     "without whitespace or control characters"),
                _cel("self == oldSelf", "holder is immutable" + CLAIM_CHANGE_ADVICE),
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
    name: str = Field(description="Name of the LockClaim, in the lock's namespace.")
    uid: str = Field(description="UID of the LockClaim: a later claim of the same name is another claim and holds "
                     "nothing of this grant.")


class LockClaimSpec(_Model):
    """What a holder asks for. Only `ttlSeconds` may change after creation."""

    resource: ResourceURI | None = None
    resources: list[ResourceItem] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_RESOURCES,
        description=(
            "Instead of `resource`: several resources, granted all together or not at all (1-16 URIs, no "
            "repeats, each with the rules of `resource`). While waiting the claim holds none of them. "
            "Mode and permits apply to every one. Immutable."
        ),
        json_schema_extra=_rules(
            _cel("self.all(r, self.exists_one(s, s == r))", "resources must not name a resource twice"),
            _cel("self == oldSelf", "resources is immutable" + CLAIM_CHANGE_ADVICE),
            *resources_rules(),
        ),
    )
    mode: Mode = Field(
        default="Exclusive",
        description=(
            "Exclusive (default): the claim's permits are taken from the resource's capacity (capacity 1: "
            "one holder at a time). Shared: holds the resource together with every other Shared holder and "
            "no Exclusive one (readers and a writer). Immutable."
        ),
        json_schema_extra=_claim_immutable("mode"),
    )
    permits: Annotated[int, _between(1, MAX_PERMITS, "permits")] = Field(
        default=1,
        description=(
            "How many of the resource's permits an Exclusive claim takes (default 1, at most 1000): holders "
            "coexist while their permits fit in the resource's capacity (a counted semaphore). The capacity is "
            "1 unless a LockPolicy sets it. Must be 1 with mode: Shared. Immutable."
        ),
        json_schema_extra=_rules(
            _range("permits", 1, MAX_PERMITS, "the permits of the resource's capacity this claim takes, at most "
                   "that capacity (1 unless a LockPolicy gives the resource more); leave it out for 1"),
            _cel("self == oldSelf", "permits is immutable" + CLAIM_CHANGE_ADVICE),
        ),
    )

    @model_validator(mode="after")
    def _one_shape(self) -> LockClaimSpec:
        """The rules of LOCK_CLAIM_SPEC_RULES that the SDK checks before sending."""
        if (self.resource is None) == (self.resources is None):
            raise ValueError("set exactly one of resource (one URI) and resources (a list of URIs locked all together)")
        if self.resources is not None and len(set(self.resources)) != len(self.resources):
            raise ValueError("resources must not name a resource twice")
        if self.mode == "Shared" and self.permits != 1:
            raise ValueError("a Shared claim takes no permits: with mode: Shared, permits must be 1 (or unset)")
        return self
    holder: Holder
    pod_ref: PodRef | None = Field(
        default=None,
        description=(
            "Ties the claim to a pod of the claim's namespace (`name`, and `uid` to name one incarnation of "
            "it; a pod's own token must name that pod here, and none elsewhere): when the pod is removed or "
            "replaced, or reaches phase Succeeded or Failed, the "
            "claim becomes Revoked (reason HolderPodTerminated) and its lock is released within seconds. "
            "A pod being deleted keeps what it holds until then or until the lease runs out, past its grace "
            "period (on a node that cannot report, the holder's renewals decide), and its claims not yet "
            "granted are Rejected. "
            "The pod must carry the label `kubelock.dev/lock-holder: \"true\"`. Immutable."
        ),
    )
    ttl_seconds: Annotated[int, _between(1, MAX_TTL_CEILING, "ttlSeconds")] | None = Field(
        default=None,
        description=(
            "Lease duration in seconds. Each renewal (heartbeat) extends the lease to ttlSeconds from the "
            "moment the operator observes it; renew by writing a new value into the annotation "
            "kubelock.dev/renew (the SDK's and CLI's heartbeat do), or the claim ends Expired. Default: the "
            "operator setting resourceLockTimeout (1800). At least 1, at most the operator setting "
            "maxTtlSeconds (default and ceiling 86400); the one field that may change after creation."
        ),
        json_schema_extra=_rules(
            _range("ttlSeconds", 1, MAX_TTL_CEILING, "a lease in seconds (the cluster's maxTtlSeconds may "
                   "allow less); for longer work take a shorter lease and renew it while the work lasts "
                   "(a new value in the annotation kubelock.dev/renew), or leave it out for the operator's default"),
        ),
    )
    wait: bool = Field(
        default=False,
        description=(
            "false (default): try once; if another holder has the resource the claim ends Rejected and "
            "status.holder names that holder. true: queue until granted, served by priority and then in order "
            "of arrival (first come, first served while every priority is 0). Immutable."
        ),
    )
    wait_timeout_seconds: Annotated[int, _between(1, MAX_TTL_CEILING, "waitTimeoutSeconds")] | None = Field(
        default=None,
        description=(
            "With wait: true, give up after this many seconds of waiting (phase TimedOut, or see onBusy); "
            "1-86400. Unset: wait until granted. Immutable."
        ),
        json_schema_extra=_rules(
            _range("waitTimeoutSeconds", 1, MAX_TTL_CEILING, "the longest wait in seconds; leave it out to "
                   "wait until granted, or add onBusy: Requeue to wait again after each timeout"),
        ),
    )
    priority: Annotated[int, _between(-MAX_PRIORITY, MAX_PRIORITY, "priority")] = Field(
        default=0,
        description=(
            "Queue order: waiters are served by effective priority (this value plus one point per "
            "priorityAgingSeconds since the claim arrived, an operator setting, default 10), then by arrival, so no "
            "waiter starves. -1000..1000, default 0. A value above 0 needs the RBAC verb `prioritize` on "
            "lockclaims (lock admins have it). Immutable."
        ),
        json_schema_extra=_rules(
            _range("priority", -MAX_PRIORITY, MAX_PRIORITY, "higher is served first (default 0), and every "
                   "waiter gains a point per priorityAgingSeconds while it waits, so no larger value is needed"),
            _cel("self == oldSelf", "priority is immutable" + CLAIM_CHANGE_ADVICE),
        ),
    )
    on_busy: OnBusy = Field(
        default=OnBusy.FAIL,
        description=(
            "What a queued claim does when its waitTimeoutSeconds runs out: Fail (default) ends it TimedOut; "
            "Requeue puts it back at the end of the queue with a fresh wait (status.requeues counts how often). "
            "A deadlock victim ends Deadlocked either way: going back to the queue would not break the cycle. "
            "Requeue needs wait: true and waitTimeoutSeconds. Immutable."
        ),
        json_schema_extra=_claim_immutable("onBusy"),
    )


LOCK_CLAIM_SPEC_RULES = [
    _cel(
        "has(self.resource) != has(self.resources)",
        "set exactly one of resource (one URI) and resources (a list of URIs locked all together)",
    ),
    _cel(
        "!has(self.mode) || self.mode != 'Shared' || !has(self.permits) || self.permits == 1",
        "a Shared claim takes no permits: with mode: Shared, permits must be 1 (or unset)",
        fieldPath=".permits",
    ),
    _cel(
        "has(self.resource) == has(oldSelf.resource) && has(self.resources) == has(oldSelf.resources)",
        "resource and resources are immutable" + CLAIM_CHANGE_ADVICE,
    ),
    _cel(
        "has(self.podRef) == has(oldSelf.podRef) && (!has(self.podRef) || self.podRef == oldSelf.podRef)",
        "podRef is immutable" + CLAIM_CHANGE_ADVICE,
        fieldPath=".podRef",
    ),
    _cel(
        "!has(self.waitTimeoutSeconds) || self.wait",
        "waitTimeoutSeconds requires wait: true",
        fieldPath=".waitTimeoutSeconds",
    ),
    _cel("self.wait == oldSelf.wait", "wait is immutable" + CLAIM_CHANGE_ADVICE, fieldPath=".wait"),
    _cel(
        "!has(self.onBusy) || self.onBusy != 'Requeue' || (self.wait && has(self.waitTimeoutSeconds))",
        "onBusy: Requeue needs wait: true and waitTimeoutSeconds (it says what happens when the wait times out)",
        fieldPath=".onBusy",
    ),
    _cel(
        "has(self.waitTimeoutSeconds) == has(oldSelf.waitTimeoutSeconds)"
        " && (!has(self.waitTimeoutSeconds) || self.waitTimeoutSeconds == oldSelf.waitTimeoutSeconds)",
        "waitTimeoutSeconds is immutable" + CLAIM_CHANGE_ADVICE,
        fieldPath=".waitTimeoutSeconds",
    ),
]



# A grant's mode and permits, described alike in a claim's status.grants and a lock's spec.grants.
_GRANT_MODE_DESCRIPTION = (
    "Exclusive (one holder, or holders whose permits fit the capacity) or Shared (any number "
    "of Shared holders, never beside an Exclusive one); default Exclusive."
)
_GRANT_PERMITS_DESCRIPTION = (
    "Permits taken from the resource's capacity: the claim's spec.permits (1-1000, default 1; "
    "always 1 in Shared mode)."
)


class ClaimGrant(_Model):
    """One resource a Held claim holds."""

    resource: str = Field(description="The normalised resource URI.")
    lock_name: str = Field(description="Name of the ResourceLock that records the grant.")
    fencing_token: int = Field(
        description="The grant's fencing token: strictly greater than every earlier grant's on this resource."
    )
    mode: Mode = Field(
        default="Exclusive",
        description=_GRANT_MODE_DESCRIPTION,
    )
    permits: int = Field(
        default=1,
        description=_GRANT_PERMITS_DESCRIPTION,
    )


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str = Field(description="Condition type: Held or Stale.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Machine-readable CamelCase reason.")
    message: str = Field(default="", description="Human-readable explanation (default empty).")
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(default=None, description="The generation it was computed from.")


class Revocation(_Model):
    """A request that the holder give its lock back."""

    requested_at: datetime = Field(description="When the operator recorded the request.")
    requested_by: str = Field(
        description="Who asked: the administrator's user name, or kubelock-operator (preemption by a waiter of "
        "higher priority)."
    )
    grace_seconds: int = Field(
        ge=0,
        description="How long the holder has to release, in seconds; at least 0 (`kubelock revoke --request "
        "--grace`, default 30; for a preemption the operator setting preemptionGraceSeconds).",
    )
    deadline: datetime = Field(
        description="requestedAt + graceSeconds: if the claim still holds then, the operator breaks the lock "
        "(phase Revoked, reason RevocationGraceExpired)."
    )
    reason: str | None = Field(default=None, description="Why, as the requester said.")


class LockClaimStatus(_Model):
    """Written by the operator only: phase, reason and message say where the claim stands; while Held,
    fencingToken (send it with every write) and expiresAt (renew before it)."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "Pending (queued), Held, Rejected (try-once and held by another or resting after a lost lock, or "
            "refused: over a LockPolicy quota, beyond the operator's limits, a bad podRef; reason says which), "
            "TimedOut, Expired (lease ran "
            "out), Deadlocked (waiting would close a wait-for cycle) or Revoked (an admin broke the lock, the "
            "owning pod terminated, a revocation request's grace ran out, or the namespace is being deleted). "
            "The last five are terminal: the claim holds nothing."
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
    grants: list[ClaimGrant] | None = Field(
        default=None,
        description=(
            "While Held: one entry per resource of the claim, each with its lock and its own fencing token "
            "(for a claim of one resource, the same as lockName and fencingToken)."
        ),
    )
    acquired_at: datetime | None = Field(default=None, description="When the current lease was granted.")
    renewed_at: datetime | None = Field(default=None, description="When the operator last observed a renewal.")
    expires_at: datetime | None = Field(default=None, description="When the lease ends unless renewed.")
    queue_position: int | None = Field(
        default=None,
        description=(
            "1-based position in the queue while Pending. Exact for the first waiter; behind it, rewritten only "
            "when the actual position halves or doubles, so a written p means the actual one lies between p/2 "
            "and 2p."
        ),
    )
    cycle: list[str] | None = Field(
        default=None,
        description=(
            "While Deadlocked: the wait-for cycle, holders and resources alternating, starting and ending "
            "with this claim's holder. Of a cycle of more than 16 holders, only the first 8 and the last "
            "8 waits (each a holder and the resource it waits for): cycleLength counts them all."
        ),
    )
    cycle_length: int | None = Field(
        default=None,
        ge=1,
        description=(
            "While Deadlocked: the number of holders in the whole wait-for cycle (at least 1). When it is larger than "
            "the holders listed in cycle, the waits left out follow the first 8 listed."
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
    available_at: datetime | None = Field(
        default=None,
        description=(
            "Lock-delay (LockPolicy lockDelaySeconds). While Pending with reason LockDelay: the resource "
            "rests after a grant ended abnormally and is granted to nobody before this time (the message "
            "says why). On a claim whose grant ended abnormally (Expired, or Revoked by a break, its pod's "
            "end or a revocation's grace running out): when its resource may be granted to someone else; stop "
            "working on it before then."
        ),
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


_TOKEN_DESCRIPTION = (
    "The grant's fencing token, as on the claim: the resourceVersion of the write that made the grant "
    "(for the first grant, the lock's creation or the update that handed the lock over). 0 until the "
    "lock's next write records it: a grant with token 0 was made by the write that produced the lock's "
    "current resourceVersion, so read the token as this field or, when it is 0, "
    "metadata.resourceVersion. Admission keeps that true: every write records the current "
    "resourceVersion in the grants that have 0, and a recorded token never changes."
)


class _Grant(_Model):
    """The fields of one grant: the first grant of a lock is its top-level spec, every further one an
    item of `spec.grants`, so both read the same way."""

    holder: str = Field(description="Who holds this grant, `<identity>/<instance>`: spec.holder of the claim "
                        "in claimRef.")
    claim_ref: ObjectRef = Field(description="The LockClaim that holds the grant.")
    pod_ref: PodRef | None = Field(default=None, description="The holder's pod, when the claim names one.")
    lease_duration_seconds: int = Field(
        ge=1,
        description="Lease duration in seconds, as in coordination.k8s.io/v1 Lease: the holder's claim's "
        "spec.ttlSeconds, or the operator setting resourceLockTimeout (default 1800) when the claim sets none. "
        "At least 1, at most the operator setting maxTtlSeconds (default and ceiling 86400).",
    )
    acquire_time: datetime = Field(description="When the grant was made.")
    renew_time: datetime = Field(description="When the operator last observed a renewal.")
    expire_time: datetime | None = Field(
        default=None,
        description="When the lease ends unless renewed: renewTime + leaseDurationSeconds, and not before "
        "acquireTime + leaseDurationSeconds + min(leaseDurationSeconds, 30s), the latest end the holder's "
        "first Held status tells when it is written within that allowance. The lease in force is the "
        "holder's LockClaim status.expiresAt.",
    )
    fencing_token: int = Field(ge=0, description=_TOKEN_DESCRIPTION)
    mode: Mode = Field(
        default="Exclusive",
        description=_GRANT_MODE_DESCRIPTION,
    )
    permits: int = Field(
        default=1,
        ge=1,
        description=_GRANT_PERMITS_DESCRIPTION,
    )


class LockGrant(_Grant):
    """A further grant on the resource (the first is the lock's top-level fields)."""


class ResourceLockSpec(_Grant):
    """The grants on one resource: the first in the top-level fields, every further one in `grants`.
    Written by the operator only: do not edit it; to free a stuck lock, break it with `kubectl lock unlock`."""

    resource: str = Field(
        description="The normalised resource URI.",
        json_schema_extra=_immutable("resource"),
    )
    grants: list[LockGrant] | None = Field(
        default=None,
        max_length=MAX_GRANTS - 1,
        description="Every further grant on the resource (Shared holders, or semaphore permits).",
    )
    holders: int = Field(
        default=1, ge=1, description="How many grants hold the resource (1 + len(grants)); at least 1, default 1."
    )


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    namespace: str | None = None


class LockClaim(_Model):
    """A request for a lock on one resource or several. Deleting it releases the lock or leaves the queue."""

    api_version: Literal["kubelock.dev/v1alpha1"] = "kubelock.dev/v1alpha1"
    kind: Literal["LockClaim"] = "LockClaim"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LockClaimSpec
    status: LockClaimStatus | None = None


class ResourceLock(_Model):
    """The grants held on a resource. Created and renewed by the operator; lock admins break it with
    `kubectl lock unlock`, which records who broke it and why before it deletes it."""

    api_version: Literal["kubelock.dev/v1alpha1"] = "kubelock.dev/v1alpha1"
    kind: Literal["ResourceLock"] = "ResourceLock"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ResourceLockSpec


MAX_CAPACITY = 10000
MAX_LOCK_DELAY_SECONDS = 60
# A prefix may be empty (it then governs every resource); otherwise the resource URI's own rule.
PREFIX_PATTERN = r"^[^\p{C}\p{Z}]*$"


def _at_least_one(name: str) -> AfterValidator:
    """The rule of a quota's CEL message, for the SDK (as `_between`)."""

    def check(value: int) -> int:
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}; {QUOTA_UNSET_ADVICE}")
        return value

    return AfterValidator(check)


QUOTA_UNSET_ADVICE = "leave the field out for no limit"
"""A quota of 0 reads as "no limit" to some and as "nothing" to others; the API has neither."""


def _quota(what: str, name: str) -> Any:
    return Field(
        default=None,
        description=(
            f"The most claims {what}, counted over the claims this policy governs (at least 1). A claim "
            "that would go over it ends Rejected with reason QuotaExceeded and a message naming this limit "
            "and the policy. Unset: no limit."
        ),
        json_schema_extra=_rules(_cel("self >= 1", f"{name} must be at least 1; {QUOTA_UNSET_ADVICE}")),
    )


class LockPolicySpec(_Model):
    """How the resources whose URI begins with `resourcePrefix` are locked in this namespace."""

    resource_prefix: str = Field(
        max_length=MAX_RESOURCE_LENGTH,
        description=(
            "The resources this policy governs: every resource of the namespace whose normalised URI "
            "(scheme lower-cased, one trailing `/` removed) begins with this string, e.g. `deploy://` or "
            "`github://acme/app/`. `\"\"` governs every resource. When several policies of the namespace match "
            "a resource, the longest prefix wins, and of equal prefixes the policy whose name sorts first."
        ),
        json_schema_extra=_rules(
            _cel(
                f"self.matches(r'{PREFIX_PATTERN}')",
                "must not contain whitespace or control characters (it is compared with resource URIs)",
            ),
            _cel(
                "!self.matches(r'^[^:/]*[A-Z]')",
                "the URI scheme must be lower-case: resources are compared after normalisation, which "
                "lower-cases the scheme, so this prefix would match nothing",
            ),
        ),
    )
    capacity: Annotated[int, _between(1, MAX_CAPACITY, "capacity")] = Field(
        default=1,
        description=(
            "The permits each governed resource has (1-10000, default 1). An exclusive claim takes its "
            "permits from it: with 1, one holder at a time; with N, a counted semaphore of N permits. "
            "A claim asking for more permits than this is Rejected. Raising it lets waiters that now fit "
            "be granted at once; lowering it revokes nobody."
        ),
        json_schema_extra=_rules(
            _cel(
                f"self >= 1 && self <= {MAX_CAPACITY}",
                f"capacity must be between 1 and {MAX_CAPACITY}: the number of permits a resource has "
                "(1 lets one holder at a time)",
            ),
        ),
    )
    lock_delay_seconds: Annotated[int, _between(0, MAX_LOCK_DELAY_SECONDS, "lockDelaySeconds")] = Field(
        default=0,
        description=(
            "After a grant ends abnormally (its lease expired, its holder's pod terminated, an admin "
            "broke the lock, or a revocation request's grace ran out), the resource stays unavailable for "
            "this many seconds, so a holder that has "
            "not noticed its loss cannot overlap the next one. A release (the holder deleting its claim) "
            f"has no delay. 0-{MAX_LOCK_DELAY_SECONDS}, default 0 (no delay). Waiters show the end of the "
            "delay in status.availableAt."
        ),
        json_schema_extra=_rules(
            _cel(
                f"self >= 0 && self <= {MAX_LOCK_DELAY_SECONDS}",
                f"lockDelaySeconds must be between 0 and {MAX_LOCK_DELAY_SECONDS}: a longer pause would "
                "keep resources idle after every lost lease",
            ),
        ),
    )
    max_held_per_holder: Annotated[int, _at_least_one("maxHeldPerHolder")] | None = _quota(
        "one holder may hold at once", "maxHeldPerHolder")
    max_waiting_per_holder: Annotated[int, _at_least_one("maxWaitingPerHolder")] | None = _quota(
        "one holder may have waiting in queues at once", "maxWaitingPerHolder")
    max_held_per_namespace: Annotated[int, _at_least_one("maxHeldPerNamespace")] | None = _quota(
        "held at once in the namespace", "maxHeldPerNamespace")
    max_waiting_per_namespace: Annotated[int, _at_least_one("maxWaitingPerNamespace")] | None = _quota(
        "waiting in queues at once in the namespace", "maxWaitingPerNamespace")


class LockPolicyStatus(_Model):
    """Written by the operator only."""

    observed_generation: int | None = Field(
        default=None,
        description=(
            "The generation of this policy the operator governs with. Written once the operator has taken "
            "that generation in: claims created after it equals metadata.generation are decided under this "
            "spec; claims created before may have been decided without it (the operator sees policies and "
            "claims on separate watches). Wait for it before making claims this policy must govern, e.g. "
            "kubectl wait --for=jsonpath='{.status.observedGeneration}'=1 lockpolicy/NAME."
        ),
    )


class LockPolicy(_Model):
    """Capacity, lock-delay and quotas for the resources of its namespace whose URI has a prefix."""

    api_version: Literal["kubelock.dev/v1alpha1"] = "kubelock.dev/v1alpha1"
    kind: Literal["LockPolicy"] = "LockPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LockPolicySpec
    status: LockPolicyStatus | None = None
