"""The quota ledger as an API object: a coordination.k8s.io Lease in the claims' namespace whose
annotation `kubelock.dev/quota-reservations` holds the reservations (`kubelock.domain.quotaledger`).

A Lease, the API's object for coordination, holding no application data. The namespace roles `edit`
and `admin` may write Leases, so the admission policy `kubelock-quota-ledger` keeps every writer but
the operator from creating or changing one named `kubelock-quota...`. Its spec is not used; the
whole ledger is the one annotation, rewritten by a merge patch conditional on the Lease's
resourceVersion.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubelock.domain.quotaledger import Entry, LedgerKey
from kubelock.domain.quotas import Count
from kubelock.domain.timefmt import from_rfc3339, to_rfc3339

Body = dict[str, Any]
RESERVATIONS = "kubelock.dev/quota-reservations"
POLICY = "kubelock.dev/policy"
LABEL = "kubelock.dev/quota-ledger"
_MAX_NAME = 253


def lease_name(key: LedgerKey) -> str:
    """`kubelock-quota.<policy>` (one ledger for the namespace) or `kubelock-quota-<shard>.<policy>`;
    a policy name too long for that is replaced by a digest of it."""
    head = "kubelock-quota" if key.shard is None else f"kubelock-quota-{key.shard:02d}"
    name = f"{head}.{key.policy}"
    if len(name) > _MAX_NAME:
        name = f"{head}.{hashlib.sha256(key.policy.encode()).hexdigest()[:40]}"
    return name


def entries_of(body: Body) -> dict[str, Entry]:
    """The reservations a ledger body records (read tolerantly: a malformed entry is left out, a
    malformed annotation reads as none)."""
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(RESERVATIONS) or "{}"
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    entries: dict[str, Entry] = {}
    if not isinstance(parsed, dict):
        return entries
    for uid, item in parsed.items():
        try:
            entries[str(uid)] = Entry(str(item["holder"]), Count(item["count"]), from_rfc3339(str(item["at"])))
        except (KeyError, TypeError, ValueError):
            continue
    return entries


def _encoded(entries: dict[str, Entry]) -> str:
    encoded = {uid: {"holder": e.holder, "count": e.count.value, "at": to_rfc3339(e.at)} for uid, e in entries.items()}
    return json.dumps(encoded, sort_keys=True, separators=(",", ":"))


def ledger_body(key: LedgerKey, entries: dict[str, Entry]) -> Body:
    """A new ledger (a create)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(key),
            "namespace": key.namespace,
            "labels": {LABEL: "true", "app.kubernetes.io/managed-by": "kubelock"},
            "annotations": {POLICY: key.policy, RESERVATIONS: _encoded(entries)},
        },
        "spec": {},
    }


def ledger_patch(entries: dict[str, Entry], version: str) -> Body:
    """The ledger's reservations rewritten, on the version they were counted on (409 otherwise)."""
    return {"metadata": {"resourceVersion": version, "annotations": {RESERVATIONS: _encoded(entries)}}}
