"""Benchmark of ranking one long queue (no cluster): what priority aging costs the grant decision and
the wait-for graph's "queued ahead" edges.

    PYTHONPATH=operator python bench/pure_queue_rank.py [N ...]

One resource held shared, N waiters behind it, every tenth exclusive (the first too) (so later shared waiters wait
for the queue ahead, the ranked edges), priorities 0..2, creation stamps 10 ms apart with a second of
jitter, aging on (10 s). Times `decide` of the resource (it sorts the queue by `queue_order`) and the
graph's `blockers` of the last waiter after a change to the queue (its ranking is rebuilt), as
medians. Run it with the PYTHONPATH of two trees to compare them.
"""

from __future__ import annotations

import random
import sys

from pure_waitfor import timed

from kubelock.domain.arbiter import decide, queue_place
from kubelock.domain.grants import Mode, Need
from kubelock.domain.model import Claim, ClaimStatus, Lock, Policy
from kubelock.domain.reasons import Phase, Reason
from kubelock.domain.waitfor import Order, WaitForGraph

T0 = 1_800_000_000.0
RES = "deploy://queue"
POLICY = Policy(priority_aging_seconds=10)
NOW = T0 + 45.5


def queue(n: int) -> list[Claim]:
    rng = random.Random(7)
    claims = []
    for i in range(n):
        mode = Mode.EXCLUSIVE if i % 10 == 0 else Mode.SHARED
        status = ClaimStatus(phase=Phase.PENDING, reason=Reason.QUEUED, message="", sequence=100 + i, waiting_since=T0)
        claims.append(
            Claim(
                name=f"w{i}", uid=f"uid-w{i}", resource=RES, holder=f"agent-{i}", sequence=100 + i,
                created_at=T0 + 0.01 * i + rng.uniform(-1, 1), wait=True, mode=mode,
                priority=rng.randint(0, 2), status=status,
            )
        )
    return claims


def held() -> tuple[Claim, Lock]:
    """The shared holder of the resource and its grant."""
    status = ClaimStatus(phase=Phase.HELD, reason=Reason.GRANTED, message="", sequence=1, lock_name="l",
                         fencing_token=5, acquired_at=T0, renewed_at=T0, expires_at=T0 + 1800)
    holder = Claim(name="s", uid="uid-s", resource=RES, holder="agent-s", sequence=1, created_at=T0,
                   mode=Mode.SHARED, status=status)
    grant = Lock(name="l", uid="lu", resource=RES, holder="agent-s", claim_name="s", claim_uid="uid-s",
                 fencing_token=5, acquired_at=T0, renewed_at=T0, lease_seconds=1800, mode=Mode.SHARED)
    return holder, grant


def measure(n: int) -> tuple[float, float]:
    """Medians of the last waiter's `blockers` after a change to the queue, and of `decide`."""
    holder, grant = held()
    claims = queue(n)
    graph = WaitForGraph()
    graph.set_grants(RES, (("agent-s", Need(Mode.SHARED)),))
    for c in claims:
        graph.add_wait(c.holder, RES, c.sequence, c.need, queue_place(c))
    last = claims[-1]
    order = Order(NOW, POLICY.priority_aging_seconds)

    def changed_then_ranked() -> object:
        graph.remove_wait(last.holder, RES, last.sequence)
        graph.add_wait(last.holder, RES, last.sequence, last.need, queue_place(last))
        return graph.blockers(last.holder, RES, last.sequence, last.need, order)

    def decided() -> object:
        return decide(RES, [holder, *claims], [grant], now=NOW, policy=POLICY, graph=graph)

    return timed(changed_then_ranked, repeat=15), timed(decided, repeat=3)


def main(sizes: list[int]) -> None:
    for n in sizes:
        rank, whole = measure(n)
        print(f"N={n:6d}  blockers after a change {rank * 1e3:8.2f} ms  decide {whole * 1e3:9.1f} ms")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [500, 1_000])
