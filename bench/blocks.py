"""The benchmark's blocks: each runs anchor and operator rounds interleaved (A B A B ...), turns the
samples into rows, and records CPU seconds and API requests. A block that fails becomes error rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anchors
import scenarios
from harness import (
    OPERATOR_SOURCE_B,
    Env,
    OperatorProcess,
    RequestTally,
    Watch,
    apiserver_refusals,
    apiserver_requests,
    children_by_name,
    cpu_seconds,
    diff,
    ensure_namespace,
    rss_mib,
    unique,
)
from report import Document, Row, Summary, Target, error_rows, median, out_of_time, percentile, summarise

from kubelock.kube import paths

log = logging.getLogger("bench")
MS = 1000.0
NS_ANCHOR, NS_KUBELOCK, NS_NAIVE, NS_BIG, NS_LEASES = (
    "bench-anchor", "bench-kubelock", "bench-naive", "bench-big", "bench-leases",
)
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kwok")
STALE_OFF = ("--stale-after-percent", "100")
LOCK_RESOURCES = frozenset({"lockclaims", "resourcelocks", "events"})


@dataclass(frozen=True)
class Plan:
    quick: bool
    acquire_rounds: int
    acquire_samples: int
    cycle_agents: tuple[int, ...]
    cycle_seconds: float
    cycle_rounds: int
    cycle_warmup: float
    floor_min_agents: int  # the bare-ResourceLock floor of #2 is run from this N up
    naive_max_agents: int  # the naive comparator of #2 is run up to this N
    handoff_rounds: int
    naive_handoff_rounds: int
    pod_rounds: int
    pod_samples: int
    chain: int
    deadlock_samples: int
    live_locks: int  # live locks during the expiry test (#4)
    expiring: int
    expiry_rate: float  # claims created per second for #4
    expiry_window: float  # seconds within which #4's leases are made to end (0: the create-paced scenario)
    held_locks: int  # for #7 and #8
    restart_rounds: int
    drain_limit: float  # seconds to wait for the operator to finish a burst's backlog
    restart_limit: float  # seconds a restarted operator may take to serve a new claim
    block_limits: dict[int, float]  # seconds each block may take before it is cut short (fail soft)
    budget: float  # seconds the whole run may take; blocks that would start later are skipped
    churn_agents: int = 1000  # #9: agents (SDK clients) ...
    churn_processes: int = 50  # ... in this many agent processes
    churn_resources: int = 100
    churn_seconds: float = 30.0
    churn_warmup: float = 30.0  # 1 000 claims created at once: the first answers and grants come in a wave
    waiters: int = 10
    warmup: int = 3
    shared_holders: int = 10  # #10: Shared holders already on the resource
    semaphore_capacity: int = 3  # #11: the LockPolicy's capacity (permits) ...
    semaphore_waiters: int = 10  # ... and the waiters queued behind its holders


QUICK = Plan(
    quick=True,
    acquire_rounds=3, acquire_samples=12,
    cycle_agents=(1, 10, 50, 200), cycle_seconds=1.0, cycle_rounds=1, cycle_warmup=0.5, floor_min_agents=50,
    naive_max_agents=50,
    handoff_rounds=2, naive_handoff_rounds=0,
    pod_rounds=2, pod_samples=5,
    chain=200, deadlock_samples=8,
    live_locks=1000, expiring=100, expiry_rate=100.0, expiry_window=1.0,
    held_locks=2000, restart_rounds=1, drain_limit=40.0, restart_limit=30.0,
    block_limits={1: 25, 2: 60, 3: 15, 5: 15, 6: 25, 7: 85, 9: 300, 10: 25, 11: 20}, budget=520.0,
    churn_processes=20, churn_seconds=20.0, churn_warmup=30.0,
)
FULL = Plan(
    quick=False,
    acquire_rounds=5, acquire_samples=60,
    cycle_agents=(1, 10, 50, 200), cycle_seconds=3.0, cycle_rounds=2, cycle_warmup=1.5, floor_min_agents=1,
    naive_max_agents=200,
    handoff_rounds=6, naive_handoff_rounds=1,
    pod_rounds=3, pod_samples=15,
    chain=1000, deadlock_samples=40,
    live_locks=10_000, expiring=1000, expiry_rate=200.0, expiry_window=5.5,
    held_locks=10_000, restart_rounds=3, drain_limit=180.0, restart_limit=90.0,
    block_limits={1: 150, 2: 420, 3: 150, 5: 90, 6: 240, 7: 600, 9: 300, 10: 120, 11: 120}, budget=1650.0,
)


@dataclass
class Account:
    """CPU seconds and API requests of one block and flavour, summed over its rounds."""

    block: str
    flavour: str
    units: int = 0
    unit: str = "samples"
    cpu: dict[str, float] = field(default_factory=dict)
    apiserver: Counter[tuple[str, ...]] = field(default_factory=Counter)
    operator: Counter[tuple[str, ...]] = field(default_factory=Counter)
    client: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        requests: Counter[str] = Counter()
        for (verb, resource, sub), n in self.apiserver.items():
            if resource:  # not /metrics, /readyz ...
                requests[f"{verb} {resource}{'/' + sub if sub else ''}"] += n
        per_unit = {k: v / self.units for k, v in sorted(requests.items())} if self.units else {}
        return {
            "block": self.block,
            "flavour": self.flavour,
            "units": self.units,
            "unit": self.unit,
            "cpu": {k: round(v, 3) for k, v in sorted(self.cpu.items())},
            "requests": dict(sorted(requests.items())),
            "requests_per_unit": {k: round(v, 3) for k, v in per_unit.items()},
            "operator_requests": {f"{v} {c}": n for (v, c), n in sorted(self.operator.items())},
            "client_requests": dict(sorted(self.client.items())),
        }


class Runner:
    def __init__(self, env: Env, plan: Plan, kubeconfig: Path, log_dir: Path) -> None:
        self.env = env
        self.plan = plan
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.doc = Document(machine={})
        self.anchor: dict[str, Summary] = {}
        self.accounts: dict[tuple[str, str], Account] = {}
        self.pids = children_by_name(CONTROL_PLANE)
        self.kubelock = OperatorProcess("kubelock", kubeconfig, NS_KUBELOCK, log_dir)
        self.naive = OperatorProcess("naive", kubeconfig, NS_NAIVE, log_dir)
        self.naive_error: str | None = None
        # What a block is doing now, so a block cut short names the figures it could not produce.
        self.step: tuple[int, str] = (0, "")

    @property
    def tally(self) -> RequestTally:
        return self.env.tally

    # ---- accounting -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def account(
        self, block: str, flavour: str, operator: OperatorProcess | None, unit: str = "samples"
    ) -> AsyncIterator[Account]:
        """Bills CPU seconds and API requests between entry and exit to (block, flavour)."""
        total = self.accounts.setdefault((block, flavour), Account(block, flavour, unit=unit))
        pids = {**self.pids, "bench client": os.getpid()}
        op_key = f"operator ({operator.flavour})" if operator else ""
        op_pid = operator.pid if operator is not None and operator.process is not None else None
        if op_pid is not None:
            pids[op_key] = op_pid
        cpu_before = {k: cpu_seconds(p) for k, p in pids.items()}
        api_before = await apiserver_requests(self.env.credentials)
        op_before = await operator.api_requests() if op_pid is not None and operator else Counter()
        client_before = self.tally.snapshot()
        this = Account(block, flavour, unit=unit)
        yield this
        if operator is not None:
            await operator.quiet()
        restarted = operator is not None and op_pid is not None and operator.pid != op_pid
        for k, p in pids.items():
            if k == op_key and restarted and operator is not None:
                # A new process: all of its CPU is this block's (the killed one's last moments are lost).
                spent = cpu_seconds(operator.pid)
            else:
                spent = cpu_seconds(p) - cpu_before[k]
            total.cpu[k] = total.cpu.get(k, 0.0) + spent
        total.apiserver.update(diff(await apiserver_requests(self.env.credentials), api_before))
        if operator is not None:
            total.operator.update(diff(await operator.api_requests(), Counter() if restarted else op_before))
        total.client.update(diff(self.tally.snapshot(), client_before))
        total.units += this.units

    # ---- the run ----------------------------------------------------------------------------

    async def run(self, only: Sequence[int] = (), deadline: float | None = None) -> Document:
        for ns in (NS_ANCHOR, NS_KUBELOCK, NS_NAIVE, NS_BIG, NS_LEASES):
            await ensure_namespace(self.env.client, ns)
        if not only or {7, 4, 8} & set(only):
            # The Leases that anchor L (#8) are made before anything is measured and while nothing else
            # runs: creating them costs a loaded machine seconds that the many-locks block lacks.
            await anchors.create_leases(self.env, NS_LEASES, self.plan.held_locks)
        await self.kubelock.start()
        try:
            await self.naive.start()
        except Exception as error:  # the comparator is optional: its rows say why it is missing
            log.warning("naive kopf operator did not start: %s", error)
            self.naive_error = f"naive operator did not start: {error}"
        # #2 last: its rows come N by N, so when a loaded machine eats the budget only the largest N
        # is lost, rather than three metrics of the many-locks block.
        blocks: list[tuple[int, Callable[[], Awaitable[None]], list[str]]] = [
            (1, self.block_acquire, ["uncontended acquire"]),
            (3, self.block_handoff, ["contended handoff"]),
            (10, self.block_shared, ["shared acquire"]),
            (11, self.block_semaphore, ["semaphore handoff"]),
            (5, self.block_pod, ["pod deleted → next waiter Held"]),
            (6, self.block_deadlock, ["deadlock reported"]),
            (7, self.block_many, ["TTL expiry / RSS / restart with many locks"]),
            (2, self.block_cycles, ["acquire+release cycles"]),
            (9, self.block_churn, ["churn with many agent processes"]),
        ]
        try:
            for id_, block, names in blocks:
                if only and id_ not in only and not (id_ == 7 and {4, 8} & set(only)):
                    continue
                began = time.monotonic()
                limit = self.plan.block_limits[id_]
                left = (deadline - began) if deadline is not None else limit
                if left < 5:
                    self.doc.rows += error_rows(id_, names, f"skipped: the {self.plan.budget:.0f} s budget is spent")
                    continue
                log.info("block %d: %s", id_, names[0])
                self.step = (id_, names[0])
                allowed = min(limit, left)
                try:
                    await asyncio.wait_for(block(), timeout=allowed)
                except Exception as error:
                    log.exception("block %d failed", id_)
                    step_id, step = self.step if self.step[0] else (id_, names[0])
                    why: BaseException | str = error
                    if isinstance(error, TimeoutError) and time.monotonic() - began >= allowed - 1:
                        why = out_of_time(allowed, budget=left < limit, load=os.getloadavg()[0])
                    self.doc.rows += error_rows(step_id, [step], why)
                log.info("block %d done in %.1f s", id_, time.monotonic() - began)
            log.info("client watches resumed after the server ended them: %d", Watch.resumed_total)
        finally:
            self.kubelock.stop()
            self.naive.stop()
        self.doc.anchors = {
            name: {"p50": s.p50, "p99": s.p99, "max": s.max, "unit": _anchor_unit(name), "samples": s.samples,
                   "rounds": s.rounds}
            for name, s in self.anchor.items()
        }
        self.doc.resources = [a.to_json() for a in self.accounts.values()]
        self.doc.rows.sort(key=lambda row: row.id)  # stable: the order within a metric stays
        return self.doc

    def naive_ok(self) -> bool:
        return self.naive_error is None and self.naive.process is not None and self.naive.process.alive()

    # ---- 1 ----------------------------------------------------------------------------------

    async def block_acquire(self) -> None:
        p, env = self.plan, self.env
        await anchors.create_seen(env, NS_ANCHOR, p.warmup)
        await scenarios.acquire(env, NS_KUBELOCK, p.warmup)
        if self.naive_ok():
            await scenarios.acquire(env, NS_NAIVE, p.warmup)
        w: list[list[float]] = []
        o: list[list[float]] = []
        held: dict[str, list[list[float]]] = {"kubelock": [], "naive-kopf": []}
        lock: dict[str, list[list[float]]] = {"kubelock": [], "naive-kopf": []}
        naive_error: str | None = self.naive_error
        for _ in range(p.acquire_rounds):
            async with self.account("1 acquire", "anchor (Lease)", None) as acc:
                a = await anchors.create_seen(env, NS_ANCHOR, p.acquire_samples)
                acc.units = p.acquire_samples
            w.append(a.w)
            o.append(a.o)
            for flavour, ns, op in (("kubelock", NS_KUBELOCK, self.kubelock), ("naive-kopf", NS_NAIVE, self.naive)):
                if flavour == "naive-kopf" and (naive_error or not self.naive_ok()):
                    continue
                try:
                    async with self.account("1 acquire", flavour, op) as acc:
                        k = await scenarios.acquire(env, ns, p.acquire_samples)
                        acc.units = p.acquire_samples
                except Exception as error:
                    if flavour == "kubelock":
                        raise
                    naive_error = f"{type(error).__name__}: {error}"
                    continue
                held[flavour].append(k.held)
                lock[flavour].append(k.lock)
            # Each round's own ratio, for the spread between runs (the row is the median of the
            # rounds' p50s over the median of O's, and O is timed before each round's kubelock samples).
            log.info("block 1 round %d: O p50 %.2f ms, kubelock Held p50 %.2f ms (%.2f x O), load %.2f",
                     len(o), percentile(a.o, 50) * MS, percentile(held["kubelock"][-1], 50) * MS,
                     percentile(held["kubelock"][-1], 50) / percentile(a.o, 50), os.getloadavg()[0])
        self.anchor["W"] = summarise(w, MS)
        self.anchor["O"] = summarise(o, MS)
        o_ = self.anchor["O"]
        for flavour in ("kubelock", "naive-kopf"):
            if flavour == "naive-kopf" and naive_error:
                self.doc.rows += error_rows(1, ["uncontended acquire"], naive_error, flavour)
                continue
            for what, data in (("Held seen", held[flavour]), ("lock seen", lock[flavour])):
                s = summarise(data, MS)
                detail = f"{s.rounds} rounds, {s.samples} samples"
                self.doc.rows += [
                    Row(1, f"uncontended acquire p50 ({what})", "ms", s.p50, o_.p50, "O p50",
                        Target("p50 <= 3 x O", 3), flavour, detail),
                    Row(1, f"uncontended acquire p99 ({what})", "ms", s.p99, o_.p99, "O p99",
                        Target("p99 <= 4 x O", 4), flavour, detail),
                ]

    # ---- 2 ----------------------------------------------------------------------------------

    async def block_cycles(self) -> None:
        p, env = self.plan, self.env
        for n in p.cycle_agents:
            self.step = (2, f"cycles/s N={n} (and larger N)")
            rates: dict[str, list[float]] = {"anchor": [], "cr": [], "kubelock": [], "naive-kopf": []}
            errors: dict[str, str] = {}
            if self.naive_error:
                errors["naive-kopf"] = self.naive_error
            naive = n <= p.naive_max_agents
            for _ in range(p.cycle_rounds):
                async with self.account(f"2 cycles N={n}", "anchor (Lease)", None, "cycles") as acc:
                    t = await anchors.lease_cycles(env, NS_ANCHOR, n, p.cycle_seconds, p.cycle_warmup)
                    acc.units = t.total
                rates["anchor"].append(t.rate)
                if n >= p.floor_min_agents:
                    async with self.account(f"2 cycles N={n}", "floor (bare ResourceLock)", None, "cycles") as acc:
                        t = await anchors.custom_resource_cycles(env, NS_ANCHOR, n, p.cycle_seconds, p.cycle_warmup)
                        acc.units = t.total
                    rates["cr"].append(t.rate)
                for flavour, ns, op in (
                    ("kubelock", NS_KUBELOCK, self.kubelock), ("naive-kopf", NS_NAIVE, self.naive)
                ):
                    if flavour in errors or (flavour == "naive-kopf" and not naive):
                        continue
                    try:
                        async with self.account(f"2 cycles N={n}", flavour, op, "cycles") as acc:
                            c = await scenarios.claim_cycles(env, ns, n, p.cycle_seconds, p.cycle_warmup)
                            acc.units = c.total
                            await scenarios.settle_locks(env, ns)
                    except Exception as error:
                        log.exception("cycles N=%d %s failed", n, flavour)
                        errors[flavour] = f"{type(error).__name__}: {error}"
                        continue
                    rates[flavour].append(c.rate)
                    log.info("cycles N=%d %s: %.0f/s over %.1f s (%d cycles)", n, flavour, c.rate, c.seconds, c.total)
            anchor = median(rates["anchor"])
            self.anchor[f"T({n})"] = _rate_summary(rates["anchor"])
            target = Target("≥ 0.4 x T(N)", 0.4, at_least=True) if n >= 50 else None
            if rates["cr"]:
                self.anchor[f"T_CR({n})"] = _rate_summary(rates["cr"])
                detail = f"{len(rates['cr'])} x ≥ {p.cycle_seconds:g} s"
                self.doc.rows.append(Row(2, f"cycles/s N={n}", "cycles/s", median(rates["cr"]), anchor, f"T({n})",
                                         None, "floor (bare ResourceLock)", detail))
            for flavour in ("kubelock", "naive-kopf") if naive else ("kubelock",):
                if flavour in errors:
                    self.doc.rows += error_rows(2, [f"cycles/s N={n}"], errors[flavour], flavour)
                    continue
                detail = f"{len(rates[flavour])} x ≥ {p.cycle_seconds:g} s"
                self.doc.rows.append(Row(2, f"cycles/s N={n}", "cycles/s", median(rates[flavour]), anchor,
                                         f"T({n})", target, flavour, detail))
                if rates["cr"]:
                    floor = median(rates["cr"])
                    self.doc.rows.append(Row(2, f"cycles/s N={n} ÷ bare ResourceLock", "cycles/s",
                                             median(rates[flavour]), floor, f"T_CR({n})",
                                             Target("≥ 0.3 x T_CR(N)", 0.3, at_least=True) if n >= 50 else None,
                                             flavour, detail))
                self.doc.rows.append(self._writes_row(n, flavour))
                self.doc.rows.append(self._other_requests_row(n, flavour))
                if rates["cr"]:
                    self.doc.rows.append(self._apiserver_cpu_row(n, flavour))

    def _writes_row(self, n: int, flavour: str) -> Row:
        acc = self.accounts[(f"2 cycles N={n}", flavour)]
        if not acc.units:
            return Row(2, f"API writes per cycle N={n}", "writes", None, flavour=flavour, error="no cycles")
        # The API server's count of writes to claims, locks and Events: every writer, the garbage
        # collector included (the operator's own counter misses the collector's DELETEs of locks).
        total = sum(n_ for (verb, res, _), n_ in acc.apiserver.items()
                    if res in LOCK_RESOURCES and verb.lower() in ("post", "put", "patch", "delete"))
        how = "API server count (claims, locks, events)"
        return Row(2, f"API writes per cycle N={n}", "writes", total / acc.units, None, "",
                   Target("<= 5 writes per cycle", 0, 5), flavour, how)

    def _other_requests_row(self, n: int, flavour: str) -> Row:
        """Requests a cycle does not need: reads of claims and locks, lock DELETEs beyond the one a
        cycle needs, and the operator's answers of 404 or 409 (the naive operator has no counter)."""
        acc = self.accounts[(f"2 cycles N={n}", flavour)]
        if not acc.units:
            return Row(2, f"other requests per cycle N={n}", "requests", None, flavour=flavour, error="no cycles")
        reads = sum(n_ for (verb, res, _), n_ in acc.apiserver.items()
                    if res in ("lockclaims", "resourcelocks") and verb.lower() == "get")
        deletes = sum(n_ for (verb, res, _), n_ in acc.apiserver.items()
                      if res == "resourcelocks" and verb.lower() == "delete")
        refused = sum(n_ for (_, code), n_ in acc.operator.items() if code in ("404", "409"))
        extra = reads + max(0, deletes - acc.units) + refused
        how = f"GET claims/locks {reads}, lock DELETEs over 1 a cycle {max(0, deletes - acc.units)}, " \
              f"operator 404/409 answers {refused}, in {acc.units} cycles"
        return Row(2, f"other requests per cycle N={n}", "requests", extra / acc.units, None, "",
                   Target("<= 0.2 per cycle", 0, 0.2), flavour, how)

    def _apiserver_cpu_row(self, n: int, flavour: str) -> Row:
        """kube-apiserver CPU a cycle against a bare ResourceLock create+delete in the same block."""
        acc = self.accounts[(f"2 cycles N={n}", flavour)]
        bare = self.accounts[(f"2 cycles N={n}", "floor (bare ResourceLock)")]
        name = f"kube-apiserver CPU per cycle N={n}"
        if not acc.units or not bare.units:
            return Row(2, name, "ms", None, flavour=flavour, error="no cycles")
        per = acc.cpu.get("kube-apiserver", 0.0) / acc.units * 1000
        floor = bare.cpu.get("kube-apiserver", 0.0) / bare.units * 1000
        return Row(2, name, "ms", per, floor, "bare ResourceLock cycle", Target("<= 3 x bare cycle", 3), flavour,
                   f"{acc.units} cycles; bare: {bare.units} cycles")

    # ---- 9 ----------------------------------------------------------------------------------

    async def block_churn(self) -> None:
        """Many agent processes on few resources: is the operator the bottleneck at real fan-in?"""
        p = self.plan
        name = f"churn: {p.churn_agents} agents in {p.churn_processes} processes on {p.churn_resources} resources"
        self.step = (9, name)
        pids = {k: v for k, v in self.pids.items() if k in ("kube-apiserver", "etcd")}
        pids["operator"] = self.kubelock.pid
        refused_before = await apiserver_refusals(self.env.credentials)
        async with self.account("9 churn", "kubelock", self.kubelock, "cycles") as acc:
            c = await scenarios.churn(
                self.env.client, self.kubeconfig, NS_KUBELOCK, self.log_dir, pids, agents=p.churn_agents,
                processes=p.churn_processes, resources=p.churn_resources, seconds=p.churn_seconds,
                warmup=p.churn_warmup,
            )
            acc.units = c.in_window
        # An agent whose acquire gave up (Unreachable: the SDK's requests timed out) may leave its claim
        # behind, held or queued, with the default lease: count them, then clear the namespace.
        refused = await apiserver_refusals(self.env.credentials) - refused_before
        left = len((await self.env.client.list(paths.claims(NS_KUBELOCK)))["items"])
        await self._clear(NS_KUBELOCK)
        largest = max((n for n in p.cycle_agents if f"T_CR({n})" in self.anchor), default=None)
        floor = self.anchor[f"T_CR({largest})"].p50 if largest is not None else None
        cores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.cores.items()))
        errors = f"; errors {c.errors}, {left} claims left behind" if c.errors or left else ""
        starting = c.refused_at_ready - refused_before
        churning = refused - starting
        detail = (f"{c.in_window} grants in {c.seconds:.1f} s; CPU cores used: {cores}{errors}; "
                  f"API server non-2xx answers (code/verb/resource) and APF rejections while the agents "
                  f"learnt their identity: {_answers(starting)}; then while they churned: {_answers(churning)}")
        s = summarise([c.took], MS)
        self.doc.rows += [
            Row(9, name, "grants/s", c.rate, floor, f"T_CR({largest})" if largest else "", None, "kubelock", detail),
            self._status_writes_row(),
            Row(9, "churn: acquire → Held p50 (SDK)", "ms", s.p50, None, "", None, "kubelock",
                f"{s.samples} acquires, waiting in queues of about {p.churn_agents // p.churn_resources}"),
            Row(9, "churn: acquire → Held p99 (SDK)", "ms", s.p99, None, "", None, "kubelock",
                f"{s.samples} acquires"),
        ]

    def _status_writes_row(self) -> Row:
        """Claim status writes per grant over the whole churn block (warm-up included): the Held of
        each grant, the first answer of each claim, and the rewrites of waiters' queue positions."""
        requests = self.accounts[("9 churn", "kubelock")].apiserver
        def count(verb: str, resource: str, sub: str = "") -> int:
            return sum(n for key, n in requests.items() if key == (verb, resource, sub))

        status = count("PUT", "lockclaims", "status") + count("PATCH", "lockclaims", "status")
        # A grant is a lock's create, or its update handing it to the next waiter (a renewal would be
        # an update too, but no churn agent holds for a third of its lease).
        grants = count("POST", "resourcelocks") + count("PATCH", "resourcelocks")
        claims = count("POST", "lockclaims")
        value = status / grants if grants else None
        return Row(9, "churn: claim status writes per grant", "writes", value, flavour="kubelock",
                   detail=f"{status} status writes, {grants} grants (lock creates and handoff updates), "
                          f"{claims} claims created, whole block")

    # ---- 3 ----------------------------------------------------------------------------------

    async def block_handoff(self) -> None:
        p, env = self.plan, self.env
        h: list[list[float]] = []
        results: dict[str, list[scenarios.Handoffs]] = {"kubelock": [], "naive-kopf": []}
        naive_error = self.naive_error
        await scenarios.handoff(env, NS_KUBELOCK, 2)  # warm-up
        for r in range(p.handoff_rounds):
            async with self.account("3 handoff", "anchor (Lease)", None, "handoffs") as acc:
                h.append(await anchors.lease_handoff(env, NS_ANCHOR, p.waiters))
                acc.units = p.waiters
            async with self.account("3 handoff", "kubelock", self.kubelock, "handoffs") as acc:
                results["kubelock"].append(await scenarios.handoff(env, NS_KUBELOCK, p.waiters))
                acc.units = p.waiters
            if r < p.naive_handoff_rounds and not naive_error and self.naive_ok():
                try:
                    async with self.account("3 handoff", "naive-kopf", self.naive, "handoffs") as acc:
                        results["naive-kopf"].append(
                            await scenarios.handoff(env, NS_NAIVE, p.waiters, queued=scenarios.modified)
                        )
                        acc.units = p.waiters
                except Exception as error:
                    naive_error = f"{type(error).__name__}: {error}"
        self.anchor["H"] = H = summarise(h, MS)
        for flavour, data in results.items():
            if flavour == "naive-kopf" and naive_error:
                self.doc.rows += error_rows(3, ["contended handoff"], naive_error, flavour)
                continue
            if not data:
                continue
            for what, rounds in (("Held seen", [d.held for d in data]), ("lock seen", [d.lock for d in data])):
                s = summarise(rounds, MS)
                detail = f"{s.rounds} round{'s' if s.rounds > 1 else ''} x {p.waiters} waiters"
                self.doc.rows += [
                    Row(3, f"contended handoff p50 ({what})", "ms", s.p50, H.p50, "H p50",
                        Target("p50 <= 2 x H", 2), flavour, detail),
                    Row(3, f"contended handoff p99 ({what})", "ms", s.p99, H.p99, "H p99",
                        Target("p99 <= 3 x H", 3), flavour, detail),
                ]
            violations = sum(d.fifo_violations for d in data)
            self.doc.rows.append(Row(3, "FIFO violations", "handoffs", float(violations), None, "",
                                     Target("0 (strict FIFO)", 0, 0), flavour,
                                     f"of {sum(len(d.held) for d in data)} handoffs"))

    # ---- 10, 11: lock modes ------------------------------------------------------------------

    async def block_shared(self) -> None:
        """One more Shared holder on a resource `shared_holders` already share, against O (a Lease
        create seen on a watch), in rounds interleaved with O's own."""
        p, env = self.plan, self.env
        await scenarios.shared_acquire(env, NS_KUBELOCK, 1, p.warmup)
        o: list[list[float]] = []
        held: list[list[float]] = []
        for _ in range(p.acquire_rounds):
            async with self.account("10 shared acquire", "anchor (Lease)", None) as acc:
                o.append((await anchors.create_seen(env, NS_ANCHOR, p.acquire_samples)).o)
                acc.units = p.acquire_samples
            async with self.account("10 shared acquire", "kubelock", self.kubelock) as acc:
                held.append(await scenarios.shared_acquire(env, NS_KUBELOCK, p.shared_holders, p.acquire_samples))
                acc.units = p.acquire_samples
        self.anchor["O (#10)"] = o_ = summarise(o, MS)
        s = summarise(held, MS)
        detail = f"{s.rounds} rounds, {s.samples} samples, beside {p.shared_holders} Shared holders"
        self.doc.rows += [
            Row(10, "shared acquire p50 (Held seen)", "ms", s.p50, o_.p50, "O p50", Target("p50 <= 3 x O", 3),
                "kubelock", detail),
            Row(10, "shared acquire p99 (Held seen)", "ms", s.p99, o_.p99, "O p99", Target("p99 <= 4 x O", 4),
                "kubelock", detail),
        ]

    async def block_semaphore(self) -> None:
        """Handoff of one permit of a resource with `semaphore_capacity` permits (a LockPolicy), with
        `semaphore_waiters` queued, against H (a raw Lease handoff), in rounds interleaved with H's."""
        p, env = self.plan, self.env
        await scenarios.ensure_semaphore_policy(env, NS_KUBELOCK, p.semaphore_capacity)
        await scenarios.semaphore_handoff(env, NS_KUBELOCK, p.semaphore_capacity, 2)  # warm-up
        h: list[list[float]] = []
        data: list[scenarios.Handoffs] = []
        for _ in range(p.handoff_rounds):
            async with self.account("11 semaphore handoff", "anchor (Lease)", None, "handoffs") as acc:
                h.append(await anchors.lease_handoff(env, NS_ANCHOR, p.semaphore_waiters))
                acc.units = p.semaphore_waiters
            async with self.account("11 semaphore handoff", "kubelock", self.kubelock, "handoffs") as acc:
                data.append(await scenarios.semaphore_handoff(
                    env, NS_KUBELOCK, p.semaphore_capacity, p.semaphore_waiters
                ))
                acc.units = p.semaphore_waiters
        self.anchor["H (#11)"] = H = summarise(h, MS)
        s = summarise([d.held for d in data], MS)
        detail = (f"{s.rounds} round{'s' if s.rounds > 1 else ''} x {p.semaphore_waiters} waiters, "
                  f"capacity {p.semaphore_capacity}")
        violations = sum(d.fifo_violations for d in data)
        self.doc.rows += [
            Row(11, "semaphore handoff p50 (Held seen)", "ms", s.p50, H.p50, "H p50", Target("p50 <= 2 x H", 2),
                "kubelock", detail),
            Row(11, "semaphore handoff p99 (Held seen)", "ms", s.p99, H.p99, "H p99", Target("p99 <= 3 x H", 3),
                "kubelock", detail),
            Row(11, "semaphore FIFO violations", "handoffs", float(violations), None, "",
                Target("0 (strict FIFO)", 0, 0), "kubelock", f"of {s.samples} handoffs"),
        ]

    # ---- 5 ----------------------------------------------------------------------------------

    async def block_pod(self) -> None:
        p, env = self.plan, self.env
        pd: list[list[float]] = []
        kl: list[list[float]] = []
        for _ in range(p.pod_rounds):
            async with self.account("5 pod", "anchor (pod delete)", None) as acc:
                pd.append(await anchors.pod_delete_seen(env, NS_ANCHOR, env.node, p.pod_samples))
                acc.units = p.pod_samples
            async with self.account("5 pod", "kubelock", self.kubelock) as acc:
                kl.append(await scenarios.pod_handoff(env, NS_KUBELOCK, p.pod_samples))
                acc.units = p.pod_samples
        self.anchor["P"] = P = summarise(pd, MS)
        s = summarise(kl, MS)
        H = self.anchor.get("H")
        detail = f"{s.rounds} rounds, {s.samples} samples"
        a50 = P.p50 + 2 * H.p50 if H else None
        a99 = P.p99 + 2 * H.p99 if H else None
        self.doc.rows += [
            Row(5, "pod deleted → next waiter Held p50", "ms", s.p50, a50, "P + 2H (p50)", None, "kubelock", detail),
            Row(5, "pod deleted → next waiter Held p99", "ms", s.p99, a99, "P + 2H (p99)",
                Target("p99 <= P + 2 x H", 1), "kubelock", detail),
        ]

    # ---- 6 ----------------------------------------------------------------------------------

    async def block_deadlock(self) -> None:
        p, env = self.plan, self.env
        tag = unique("d")
        await scenarios.build_chain(env, NS_KUBELOCK, p.chain, tag)
        await self._drain(self.kubelock, f"building a chain of {p.chain}")
        async with self.account(f"6 deadlock chain {p.chain}", "kubelock", self.kubelock, "closing claims") as acc:
            samples = await scenarios.deadlock(env, NS_KUBELOCK, p.chain, p.deadlock_samples, tag)
            acc.units = len(samples)
        s = summarise([samples], MS)
        o_, w_ = self.anchor.get("O"), self.anchor.get("W")
        a50 = o_.p50 + w_.p50 if o_ and w_ else None
        a99 = o_.p99 + w_.p99 if o_ and w_ else None
        detail = f"chain of {p.chain}, {s.samples} closing claims"
        self.doc.rows += [
            Row(6, "deadlock reported p50", "ms", s.p50, a50, "O + W (p50)", None, "kubelock", detail),
            Row(6, "deadlock reported p99", "ms", s.p99, a99, "O + W (p99)",
                Target("p99 <= O + W + 5 ms", 1, 5), "kubelock", detail),
        ]
        await self._clear(NS_KUBELOCK)

    async def _drain(self, op: OperatorProcess, after: str) -> float | None:
        """Waits (up to the plan's limit) until the operator stops writing, so a burst's backlog does
        not load the next measurement; seconds it took, None if it never stopped."""
        took = await op.quiet(within=self.plan.drain_limit)
        log.info("operator quiet %s after %s", "never" if took is None else f"{took:.1f} s", after)
        return took

    async def _clear(self, namespace: str) -> None:
        """Deletes every claim of a namespace (one deletecollection) and waits for the locks to go."""
        await self.env.client.request("DELETE", paths.claims(namespace), verb="deletecollection")
        await scenarios.settle_locks(self.env, namespace, within=300)

    # ---- 7, 4, 8: many locks ----------------------------------------------------------------

    async def block_many(self) -> None:
        p, env = self.plan, self.env
        # The live locks are never renewed: with the default staleAfterPercent (50) every one of them
        # would turn Stale (a status write and a Warning Event each) half way through its lease.
        op = OperatorProcess("kubelock", self.kubeconfig, NS_BIG, self.log_dir, extra_args=STALE_OFF)
        await op.start()
        try:
            self.step = (7, "operator RSS (and #4, #8)")
            await asyncio.sleep(1.5)
            m0 = median([await _rss_after(op.pid, 0.2) for _ in range(5)])
            self.anchor["M0"] = Summary(m0, m0, m0, 1, 5)
            live = min(p.live_locks, p.held_locks)
            async with self.account(f"7 populate {live}", "kubelock", op, "claims") as acc:
                took = await scenarios.populate(env, NS_BIG, live, "live")
                acc.units = live
                drained = await self._drain(op, f"{live} grants")
            log.info("%d held locks in %.1f s (%.0f grants/s)", live, took, live / took)
            self.doc.rows.append(Row(7, f"grants/s while creating {live} held locks", "grants/s", live / took,
                                     flavour="kubelock", detail="32 creates in flight"))
            self.doc.rows.append(Row(
                7, f"operator still writing after the last of {live} grants", "s",
                drained if drained is not None else p.drain_limit, flavour="kubelock",
                detail="mostly queued Events" if drained is not None else "still writing when the wait ended",
            ))
            await self._expiry(op, live)
            self.step = (7, "operator RSS (and #8)")
            if p.held_locks > live:
                async with self.account(f"7 populate {p.held_locks}", "kubelock", op, "claims") as acc:
                    await scenarios.populate(env, NS_BIG, p.held_locks, "live", start=live)
                    acc.units = p.held_locks - live
                    await self._drain(op, f"{p.held_locks - live} more grants")
            await asyncio.sleep(1)
            rss = median([await _rss_after(op.pid, 0.2) for _ in range(5)])
            self.doc.rows.append(Row(7, f"operator RSS with {p.held_locks} held locks", "MiB", rss, m0, "M0",
                                     Target("<= M0 + 50 MiB", 1, 50), "kubelock",
                                     f"M0 {m0:.1f} MiB idle, +{rss - m0:.1f} MiB"))
            if OPERATOR_SOURCE_B[0] is not None:
                # The same expiry with the second operator tree, after #7's reading: #7 is this tree's
                # operator, which filled the locks. (Read after the switch, it was the second tree's,
                # restarted on them.) In the quick plan the second tree's expiry is among the held
                # locks, more than the live ones of the first's; in the full plan they are equal.
                await self._switch(op, OPERATOR_SOURCE_B[0])
                await self._expiry(op, p.held_locks, "kubelock-b")
            await self._restart(op)
        finally:
            op.stop()

    async def _switch(self, op: OperatorProcess, source: Path | None) -> None:
        """Replace the running operator with one of another tree, and let it settle."""
        op.kill()
        op.source = source
        await op.start(within=self.plan.restart_limit)
        await self._drain(op, f"switching to the operator of {source or 'this tree'}")

    async def _expiry(self, op: OperatorProcess, live: int, flavour: str = "kubelock") -> None:
        p, env = self.plan, self.env
        self.step = (4, "TTL expiry lateness (and #7, #8)")
        try:
            async with self.account(f"4 expiry {p.expiring} among {live}", flavour, op, "expiries") as acc:
                result = await scenarios.expiry(env, NS_BIG, p.expiring, p.expiry_rate, p.expiry_window)
                acc.units = len(result.lateness)
        except Exception as error:
            log.exception("expiry failed")
            self.doc.rows += error_rows(4, ["TTL expiry lateness"], error)
            return
        s = summarise([result.lateness], MS)
        W = self.anchor.get("W")
        detail = (f"{p.expiring} expiring within {result.window:.1f} s (aimed into {result.aimed:.1f} s, "
                  f"{result.outside} outside, {result.renewed_late} renewed after it opened; "
                  f"at most {result.busiest_second} in one second) among {live} live locks")
        self.doc.rows += [
            Row(4, "TTL expiry lateness p50", "ms", s.p50, W.p50 if W else None, "W p50", None, flavour, detail),
            Row(4, "TTL expiry lateness p99", "ms", s.p99, W.p99 if W else None, "W p99",
                Target("p99 <= 2 x W + 50 ms", 2, 50), flavour, detail),
            Row(4, "TTL expiry lateness max", "ms", s.max, None, "", Target("never > 500 ms", 0, 500),
                flavour, detail),
        ]

    async def _restart(self, op: OperatorProcess) -> None:
        p, env = self.plan, self.env
        self.step = (8, f"restart with {p.held_locks} locks")
        lists: list[float] = []
        trees: list[tuple[str, Path | None]] = [("kubelock", None)]
        if OPERATOR_SOURCE_B[0] is not None:  # alternate: A, B, A, B ... on the same locks
            trees.append(("kubelock-b", OPERATOR_SOURCE_B[0]))
        restarts: dict[str, list[float]] = {flavour: [] for flavour, _ in trees}
        failures: dict[str, list[str]] = {flavour: [] for flavour, _ in trees}
        rss: dict[str, list[float]] = {flavour: [] for flavour, _ in trees}  # 2 s after each restart
        items = 0
        for _ in range(p.restart_rounds):
            async with self.account(f"8 LIST {p.held_locks} Leases", "anchor (Lease)", None, "lists") as acc:
                for _ in range(3):
                    seconds, items = await anchors.list_leases(env, NS_LEASES)
                    lists.append(seconds)
                    acc.units += 1
            for flavour, source in trees:
                op.source = source
                try:
                    async with self.account(f"8 restart with {p.held_locks}", flavour, op, "restarts") as acc:
                        restarts[flavour].append(await scenarios.restart(env, op, NS_BIG, within=p.restart_limit))
                        acc.units = 1
                except Exception as error:  # one failed restart must not hide the others
                    log.exception("restart failed")
                    failures[flavour].append(f"{type(error).__name__}: {error}")
                    if op.process is None or not op.process.alive():
                        await op.start()
                await asyncio.sleep(2)
                if op.process is not None and op.process.alive():
                    rss[flavour].append(rss_mib(op.pid))
        L = median(lists)
        self.anchor["L"] = Summary(L, max(lists), max(lists), 1, len(lists))
        name = f"restart with {p.held_locks} locks → new claim Held"
        for flavour, _ in trees:
            took, failed_ = restarts[flavour], failures[flavour]
            if not took:
                self.doc.rows += error_rows(8, [name], "; ".join(failed_))
                continue
            failed = f", {len(failed_)} failed ({failed_[0][:120]})" if failed_ else ""
            each = ", ".join(f"{t:.2f}" for t in took)
            self.doc.rows.append(Row(8, name, "s", median(took), L, "L", Target("<= 2 x L + 1 s", 2, 1), flavour,
                                     f"{len(took)} restarts ({each} s){failed}; L = LIST+parse of {items} Leases"))
            m0 = self.anchor.get("M0")
            if rss[flavour] and m0 is not None:  # the memory of the same locks without a burst's high water
                self.doc.rows.append(Row(
                    7, f"operator RSS 2 s after a restart with {p.held_locks} locks", "MiB", median(rss[flavour]),
                    m0.p50, "M0", None, flavour,
                    f"M0 of the first tree; +{median(rss[flavour]) - m0.p50:.1f} MiB; "
                    + ", ".join(f"{r:.1f}" for r in rss[flavour]) + " MiB",
                ))


def _rate_summary(rates: Sequence[float]) -> Summary:
    value = median(rates)
    return Summary(value, value, max(rates), len(rates), len(rates))


async def _rss_after(pid: int, seconds: float) -> float:
    await asyncio.sleep(seconds)
    return rss_mib(pid)


def _anchor_unit(name: str) -> str:
    if name.startswith(("T(", "T_CR(")):
        return "cycles/s"
    return {"M0": "MiB", "L": "s"}.get(name, "ms")


def _answers(counts: Counter[tuple[str, ...]]) -> str:
    return ", ".join(f"{'/'.join(k)} {n}" for k, n in sorted(counts.items()) if n > 0) or "none"
