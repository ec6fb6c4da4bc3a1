"""The kopf operator: watches LockClaims, ResourceLocks and holder pods, and reconciles each
resource (one idempotent decide-and-apply per resource key)."""
