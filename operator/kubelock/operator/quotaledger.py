"""The quota ledgers' store: what this operator knows of each ledger (its version and reservations),
and the conditional writes that add reservations to them (`kubelock.domain.quotaledger` says why).

The store keeps the last version of each ledger it wrote or read, and nothing watches them: a write
on an older version fails with 409, and the ledger is read again for the caller to decide again. A
ledger never seen counts as empty and is created by the first reservation; if another replica
created it meanwhile, that create fails the same way. A ledger with nothing left that counts (every
entry past its bound or known to be over), found gone, or of a policy deleted, is forgotten: it is then one
never seen, and its next reservation's create meets the Lease left in the API, reads it and decides
again. So the store keeps only the ledgers in use, not one for every policy, namespace and shard
that ever had a reservation. Transient errors (the API server unreachable,
5xx, a missing permission) are raised: the caller grants nothing and its reconcile is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubelock.domain.lockpolicy import LockPolicy
from kubelock.domain.quotaledger import (
    Ended,
    Entry,
    LedgerKey,
    counted,
    recorded,
    unrecorded,
    written,
)
from kubelock.domain.quotas import Reservation
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import Conflict, NotFound
from kubelock.kube.quotaledger import entries_of, lease_name, ledger_body, ledger_patch

log = logging.getLogger("kubelock.quotas")

SWEEP_SECONDS = 5.0


@dataclass(slots=True)
class _Known:
    version: str | None  # None: no ledger object, as far as this operator knows
    entries: dict[str, Entry] = field(default_factory=dict)


class QuotaLedgers:
    def __init__(self, client: KubeClient, ended: Ended) -> None:
        """`ended`: whether a reservation of a claim (by uid), held or waiting, is known to be over."""
        self.client = client
        self.ended = ended
        self._known: dict[LedgerKey, _Known] = {}
        self.conflicts = 0  # writes that met another writer's (each made a decision run again)
        self._next_sweep = 0.0

    def reservations(
        self, namespace: str, policy: LockPolicy, now: float, *, exclude: Iterable[str] = ()
    ) -> list[Reservation]:
        """The reservations the known ledgers of `policy` in `namespace` hold that count now, but
        those of the claims in `exclude` (the ones being decided)."""
        self._sweep(now)
        skip = set(exclude)
        out: list[Reservation] = []
        for key, known in self._known.items():
            if key.namespace == namespace and key.policy == policy.name:
                out += counted(key, known.entries, now, ended=self.ended, exclude=skip)
        return out

    async def record(self, policy: LockPolicy, reservations: Iterable[Reservation], now: float) -> bool:
        """Write the reservations a limit of `policy` counts into their ledgers, each on the version
        the decision counted; False when one met a newer version (re-read: decide again). Ledgers
        already written keep their new entries; deciding again stamps them anew."""
        for key, wanted in recorded(policy, reservations).items():
            known = self._known.get(key) or _Known(None)
            if not unrecorded(known.entries, wanted, now):
                continue  # already recorded, and still counting
            entries = written(known.entries, wanted, now, self.ended)
            try:
                if known.version is None:
                    body = await self.client.create(paths.leases(key.namespace), ledger_body(key, entries))
                else:
                    body = await self.client.patch(
                        paths.leases(key.namespace, lease_name(key)), ledger_patch(entries, known.version)
                    )
            except (Conflict, NotFound) as error:
                self.conflicts += 1
                log.debug("quota ledger %s in %s changed (%s): reading it again", lease_name(key), key.namespace, error)
                await self.reread(key)
                return False
            self._remember(key, body)
        return True

    async def reread(self, key: LedgerKey) -> None:
        try:
            body = await self.client.get(paths.leases(key.namespace, lease_name(key)))
        except NotFound:
            self._known.pop(key, None)  # gone: one never seen, created by its next reservation
            return
        self._remember(key, body)

    def forget_policy(self, namespace: str, policy: str) -> None:
        """A policy deleted: nothing counts under it here any more. If it comes back, its ledgers are
        ones never seen (read again at their first write)."""
        for key in [k for k in self._known if k.namespace == namespace and k.policy == policy]:
            del self._known[key]

    def _sweep(self, now: float) -> None:
        """Forget the ledgers nothing in counts any more (at most every `SWEEP_SECONDS`: a sweep looks
        at every entry of every ledger kept, as much as a count of them all)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        for key in [k for k, known in self._known.items() if not counted(k, known.entries, now, ended=self.ended)]:
            del self._known[key]

    def _remember(self, key: LedgerKey, body: dict[str, object]) -> None:
        meta = body.get("metadata")
        version = str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""
        self._known[key] = _Known(version or None, entries_of(body))
