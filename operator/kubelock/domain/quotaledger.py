"""The quota ledger: reservations recorded in the API server, so that quotas hold across operator
replicas the way grants do.

Each replica counts a LockPolicy's quotas from its own view plus its own in-flight reservations
(`kubelock.domain.quotas`). Two replicas deciding grants for one holder on *different* resources
would each see the other's grant only once it reached their watch, and could each fill the limit.
So before a grant (or a first wait) that a limit governs, the deciding replica adds a reservation
to a ledger object with a write conditional on the ledger's version, and writes the grant only
after that succeeded. Two decisions on one ledger are thereby ordered by the API server: the second
write fails (409), its replica reads the ledger, and decides again counting the first reservation.

A reservation is needed only until the claim's own state reaches every replica's view (its lock,
its Pending status): after `RESERVATION_SECONDS` it no longer counts, and the next write to the
ledger drops it, as it drops the reservations the writer knows to be over (`Ended`). So the ledger is a
cache that rebuilds itself: an entry left by a replica that stopped between the ledger write and
the grant write (or whose grant write failed) counts for at most `RESERVATION_SECONDS`, never
for ever, and a ledger deleted outright loses only what the views already show.

Which ledger: a policy with a per-namespace limit keeps one ledger for the namespace (every
reservation under it must be ordered against every other); a policy with only per-holder limits
spreads holders over `SHARDS` ledgers by a hash of the holder's identity (the quotas count all
instances of an identity together: `kubelock.domain.holder.identity_in`), so one identity's
reservations always meet in one ledger while holders that share nothing rarely contend, and the number of ledger objects
stays bounded however many holder instances come and go.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kubelock.domain.holder import identity_in
from kubelock.domain.lockpolicy import LockPolicy
from kubelock.domain.quotas import Count, Reservation

# Whether a reservation of a claim (by uid), counting as held or waiting, is known to be over: the
# operator's view says (`kubelock.operator.cache.Cache.reservation_ended`).
Ended = Callable[[str, Count], bool]

# How long a reservation counts on its own: far longer than a grant write takes and a watch takes to
# deliver it, short enough that a reservation nobody completed stops counting soon.
RESERVATION_SECONDS = 30.0
# Per-holder ledgers of one policy in one namespace.
SHARDS = 16


@dataclass(frozen=True, slots=True)
class Entry:
    """A reservation as the ledger keeps it: the claim's holder, what it counts as, and when it was
    reserved (the reserving operator's clock, seconds since the epoch)."""

    holder: str
    count: Count
    at: float

    def live(self, now: float) -> bool:
        """Counts on its own. An entry stamped in the future beyond the same bound (a skewed clock, or
        a forged entry) does not: no entry can count for longer than twice the bound."""
        return now - RESERVATION_SECONDS < self.at <= now + RESERVATION_SECONDS


@dataclass(frozen=True, slots=True)
class LedgerKey:
    """Which ledger: a policy's in a namespace, and the shard of its holders (None: the one ledger of
    a policy with a per-namespace limit)."""

    namespace: str
    policy: str
    shard: int | None


def needs_ledger(policy: LockPolicy, count: Count) -> bool:
    """Whether a reservation of `count` under `policy` must be recorded: only when a limit counts it."""
    q = policy.quotas
    if count is Count.HELD:
        return q.max_held_per_holder is not None or q.max_held_per_namespace is not None
    return q.max_waiting_per_holder is not None or q.max_waiting_per_namespace is not None


def ledger_of(policy: LockPolicy, namespace: str, holder: str) -> LedgerKey:
    q = policy.quotas
    if q.max_held_per_namespace is not None or q.max_waiting_per_namespace is not None:
        return LedgerKey(namespace, policy.name, None)
    digest = hashlib.sha256(identity_in(holder).encode()).digest()
    return LedgerKey(namespace, policy.name, int.from_bytes(digest[:4], "big") % SHARDS)


def recorded(policy: LockPolicy, reservations: Iterable[Reservation]) -> dict[LedgerKey, list[Reservation]]:
    """The reservations of a decision that must be recorded, by ledger (in a stable order, so two
    decisions write shared ledgers in the same order)."""
    out: dict[LedgerKey, list[Reservation]] = {}
    for reservation in reservations:
        if needs_ledger(policy, reservation.count):
            out.setdefault(ledger_of(policy, reservation.namespace, reservation.holder), []).append(reservation)
    return dict(sorted(out.items(), key=lambda kv: (kv[0].shard if kv[0].shard is not None else -1)))


def unrecorded(entries: Mapping[str, Entry], reservations: Iterable[Reservation], now: float) -> list[Reservation]:
    """The reservations a ledger does not hold yet: a claim whose reservation of the same count is
    still live there needs no new write (a claim of several resources is granted one resource per
    write, and every such decision reserves it again), nor does a wait of a claim held there
    (`written` keeps the hold)."""
    out = []
    for reservation in reservations:
        entry = entries.get(reservation.uid)
        if entry is None or not entry.live(now) or not _covers(entry, reservation.count):
            out.append(reservation)
    return out


def _covers(entry: Entry, count: Count) -> bool:
    return entry.count is count or entry.count is Count.HELD


def written(
    entries: Mapping[str, Entry], reservations: Iterable[Reservation], now: float, ended: Ended
) -> dict[str, Entry]:
    """The ledger after recording `reservations` at `now`: its live entries not known to be over, with
    the new ones (a claim reserved again is stamped again).

    A live held entry is never replaced by a waiting one: it gives way only to its end (its bound,
    or its claim known to be over). The replica that wrote it may be creating the claim's lock while
    another replica, its view behind (the resource still held by a claim since released), queues the
    same claim and records its first wait; that write is conditional on the ledger's version, but the
    waiting replica re-reads and decides again leaving its own claim's entry out of the count, so it
    would record the wait over the hold. The grant would then count nowhere but in the granting
    replica's memory and, once its lock exists, in the views that have seen it; a replica behind
    both could grant the holder one claim over `maxHeld*`. Kept held, the claim counts as held, and
    as waiting too while it is seen waiting (`quotas.usage`)."""
    kept = {uid: e for uid, e in entries.items() if e.live(now) and not ended(uid, e.count)}
    for reservation in reservations:
        entry = kept.get(reservation.uid)
        if reservation.count is Count.WAITING and entry is not None and entry.count is Count.HELD:
            continue
        kept[reservation.uid] = Entry(reservation.holder, reservation.count, now)
    return kept


def counted(
    ledger: LedgerKey,
    entries: Mapping[str, Entry],
    now: float,
    *,
    ended: Ended,
    exclude: Iterable[str] = (),
) -> list[Reservation]:
    """The entries of a ledger that count towards its policy's usage, as reservations (merged with
    the view like the operator's own: a held one adds a hold to an observed wait, a waiting one
    counts only while the view does not show the claim). Not counted: entries past their bound,
    entries known to be over (`Ended`), and the claims being decided (`exclude`: the decision sees their own
    state, and counting their reservation too would count them twice)."""
    skip = set(exclude)
    return [
        Reservation(ledger.namespace, ledger.policy, e.holder, uid, e.count)
        for uid, e in sorted(entries.items())
        if uid not in skip and e.live(now) and not ended(uid, e.count)
    ]
