"""Names of the API and the labels and annotations kubelock reads or writes."""

GROUP = "kubelock.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

CLAIM_KIND = "LockClaim"
CLAIM_PLURAL = "lockclaims"
CLAIM_SHORT = "lc"
LOCK_KIND = "ResourceLock"
LOCK_PLURAL = "resourcelocks"
LOCK_SHORT = "rl"
POLICY_KIND = "LockPolicy"
POLICY_PLURAL = "lockpolicies"
POLICY_SHORT = "lp"
CATEGORY = "locks"

# A holder renews its lease by writing any new value here (the SDK writes a timestamp for humans;
# the operator only compares it with the last value it acted on and never trusts it as a time).
RENEW_ANNOTATION = "kubelock.dev/renew"
# A random mark the SDK puts on each claim it creates, so that an acquire interrupted before the
# create's answer arrived can tell the claim it made from an older one of the same name.
REQUEST_ANNOTATION = "kubelock.dev/request"
# Which OS process created a claim (`<boot id>/<pid namespace>/<pid>/<start time>`, see
# kubelock.sdk.process): the SDK refuses to adopt a claim that another live process of the same
# instance made, instead of letting both hold the lock.
PROCESS_ANNOTATION = "kubelock.dev/process"
# Pods whose termination releases their claims carry this label (the operator watches only them).
POD_LABEL = "kubelock.dev/lock-holder"
POD_LABEL_VALUE = "true"
# Who broke a lock and why, recorded by `kubelock unlock` on the ResourceLock before deleting it.
BREAK_ACTOR_ANNOTATION = "kubelock.dev/broken-by"
BREAK_REASON_ANNOTATION = "kubelock.dev/break-reason"
# Breaking some of a lock's grants, not the lock: the uids of their claims, comma-separated, set with
# the two above instead of deleting the lock; the operator removes those grants and the annotations.
BREAK_CLAIMS_ANNOTATION = "kubelock.dev/break-claims"
# A lock admin's request that a holder give its lock back, recorded on the holder's claim by
# `kubelock revoke --request` (the kubelock-revocation-request admission policy checks who may, and
# that requested-by is the requester); the operator copies it into status.revocation.
REVOKE_BY_ANNOTATION = "kubelock.dev/revoke-requested-by"
REVOKE_GRACE_ANNOTATION = "kubelock.dev/revoke-grace-seconds"
REVOKE_REASON_ANNOTATION = "kubelock.dev/revoke-reason"
DEFAULT_REVOKE_GRACE_SECONDS = 30
# Labels on claims, for selection by holder.
HOLDER_HASH_LABEL = "kubelock.dev/holder-hash"
