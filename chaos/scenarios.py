"""One scenario per fault: a namespace of its own, operator replica(s), the monitor, the fenced store and
agent processes contending for a few dozen resources, while the fault is injected on a schedule. At the
end the agents stop, the locks drain, and the whole history goes to the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from chaos import faults
from chaos.faults import Operator
from chaos.history import (
    Bounds,
    History,
    LockLife,
    Outage,
    PodDeath,
    Quota,
    Report,
    Tick,
    Violation,
    check,
    read_jsonl,
    to_json,
)
from chaos.identities import holder_matches
from chaos.monitor import Monitor
from chaos.proxy import Proxy
from chaos.store import FencedStore, StoreServer
from kubelock.api.constants import GROUP, POLICY_KIND, VERSION
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.testbed.controlplane import ControlPlane
from kubelock.testbed.processes import ManagedProcess, start_process

REPO = Path(__file__).resolve().parents[1]
DECISION_TIMEOUT = 20.0  # as chaos.agents
BOUNDS = Bounds(liveness_seconds=5.0, queue_seconds=5.0)
TIME_BOUND_CHECKS = frozenset({"phantom-grant", "liveness", "queue-liveness", "no-verdict"})
POOL_PREFIX = "chaos://pool/"  # every chaos resource's normalised URI begins with it


@dataclass
class Env:
    """What every scenario shares: the control plane, an admin client, a fake node, the run's options."""

    plane: ControlPlane
    kube: KubeClient
    node: str
    workdir: Path
    quick: bool
    seed: int
    rng: random.Random
    # The revision clock's ticks on this control plane (`chaos.clock`), when one runs: the checker
    # reads commit times off them instead of the monitor's arrival stamps.
    clock: Path | None = None


@dataclass(frozen=True)
class Shape:
    """The load: how many agents in how many processes, on how many resources, for how long."""

    agents: int
    processes: int
    resources: int
    seconds: float
    ttl: int = 5
    wait_timeout: int = 6
    pods: bool = False
    hold_max: float = 1.2
    pause_max: float = 0.6
    capacity: int = 1  # of every resource, from a LockPolicy made before the operators start (1: none)
    permits_max: int = 1  # an Exclusive claim asks 1..permits_max permits
    holders: int = 0  # >0: the agents act for this many holders, several agents (and processes) each
    max_held: int = 0  # >0: the pool's LockPolicy sets maxHeldPerHolder (and max_waiting, maxWaitingPerHolder)
    max_waiting: int = 0

    @property
    def policy(self) -> bool:
        return self.capacity > 1 or self.max_held > 0 or self.max_waiting > 0

    @property
    def quota(self) -> Quota | None:
        return Quota(POOL_PREFIX, self.max_held) if self.max_held else None


@dataclass
class Fault:
    """One injection: when it began, when the system was whole again, and whose locks it hit."""

    what: str
    injected: float
    lifted: float
    holders: frozenset[str] | None = None  # None: everybody's (a component fault)


@dataclass
class Outcome:
    name: str
    report: Report
    operations: int
    recovery: float | None
    seconds: float
    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rss_mb: float = 0.0
    seed: int = 0

    @property
    def violations(self) -> list[Violation]:
        return self.report.violations


class Run:
    """One scenario's world. Use `async with Run(...) as run:`."""

    def __init__(
        self, env: Env, name: str, shape: Shape, *, replicas: int = 1, proxied: bool = False, seed: int | None = None
    ) -> None:
        self.env = env
        # Agent choices and fault timing; the interleavings themselves are not reproducible.
        self.seed = env.seed if seed is None else seed
        self.name = name
        self.shape = shape
        self.replicas = replicas
        self.proxied = proxied
        self.namespace = f"chaos-{name}-{secrets.token_hex(3)}"
        self.dir = env.workdir / self.namespace
        self.store = FencedStore()
        self.server = StoreServer(self.store)
        self.operators: list[Operator] = []
        self.agents: list[ManagedProcess] = []
        self.monitor = Monitor(env.kube, self.namespace)
        self.proxies: list[Proxy] = []
        self.outages: list[Outage] = []
        self.deaths: list[PodDeath] = []
        self.faults: list[Fault] = []
        self.notes: list[str] = []
        self.deaths_of_operators: list[Violation] = []
        self._supervisor: asyncio.Task[None] | None = None
        self.t0 = 0.0
        self.until = 0.0
        self.rng = random.Random(self.seed)

    # ---- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Run:
        self.dir.mkdir(parents=True, exist_ok=True)
        await self.env.kube.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
        )
        if self.shape.policy:
            await self.env.kube.create(paths.policies(self.namespace), _pool_policy(self.shape))
        await self.server.start()
        kubeconfig = self.env.plane.kubeconfig
        if self.proxied:
            host, port = _host_port(self.env.plane.server)
            operator_proxy = await Proxy(host, port).start()
            self.proxies = [operator_proxy, await Proxy(host, port).start()]
            kubeconfig = faults.kubeconfig_for(kubeconfig, operator_proxy.url, self.dir / "operator.kubeconfig")
        for index in range(self.replicas):
            operator = Operator(f"operator-{index}", kubeconfig, self.dir / "logs", [self.namespace])
            self.operators.append(operator)
        await asyncio.gather(*(o.start() for o in self.operators))
        await self.monitor.start()
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def _supervise(self) -> None:
        """Restart an operator that died on its own, as the kubelet would, and count it as a violation.

        Without this one crash would surface as dozens of consequential violations (every waiter of
        the rest of the run); with it the crash is reported once, with what it died of, and the time
        it was down is an outage like any other."""
        while True:
            await asyncio.sleep(0.5)
            for operator in self.operators:
                process = operator.process
                if process is None or process.alive() or operator.expected_down:
                    continue
                died = time.time()
                self.deaths_of_operators.append(
                    Violation("operator-crash", f"{operator.name} exited with {process.popen.returncode} at "
                                                f"+{died - self.t0:.1f}s: {operator.last_error()}", time=died)
                )
                await asyncio.sleep(1.0)
                await operator.start()
                self.outage(f"{operator.name} crashed and restarted", died - 0.5, time.time())

    async def __aexit__(self, *exc: object) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for process in self.agents:
            faults.thaw(process)
            if process.alive():
                process.stop(timeout=5)
        await self.monitor.stop()
        for operator in self.operators:
            await operator.stop()
        for proxy in self.proxies:
            await proxy.stop()
        await self.server.stop()
        with contextlib.suppress(kube_errors.ApiError, kube_errors.Unreachable):
            await self.env.kube.delete(f"/api/v1/namespaces/{self.namespace}")

    def start_agents(self) -> None:
        shape = self.shape
        self.t0 = time.time()
        self.until = self.t0 + shape.seconds
        per_process = -(-shape.agents // shape.processes)
        first = 0
        for index in range(shape.processes):
            count = min(per_process, shape.agents - first)
            if count <= 0:
                break
            argv = [
                sys.executable, "-m", "chaos.agents",
                "--kubeconfig", str(self.env.plane.kubeconfig),
                "--namespace", self.namespace,
                "--prefix", f"a{index}-",
                "--first", str(first),
                "--count", str(count),
                "--resources", str(shape.resources),
                "--ttl", str(shape.ttl),
                "--wait-timeout", str(shape.wait_timeout),
                "--hold-max", str(shape.hold_max),
                "--pause-max", str(shape.pause_max),
                "--until", f"{self.until:.3f}",
                "--store-port", str(self.server.port),
                "--out", str(self.dir / f"agents-{index}.jsonl"),
                "--seed", str(self.seed * 1000 + index),
            ]
            if self.proxied:
                argv += ["--server", self.proxies[1].url]
            if shape.pods:
                argv += ["--pods", "--node", self.env.node]
            if shape.capacity > 1:
                argv += ["--capacity", str(shape.capacity), "--permits-max", str(shape.permits_max)]
            if shape.holders:
                argv += ["--holders", str(shape.holders), "--slots", str(-(-shape.agents // shape.holders))]
            env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}:{REPO}"}
            self.agents.append(start_process(f"agents-{index}", argv, log_dir=self.dir / "logs", env=env, cwd=REPO))
            first += count

    async def at(self, offset: float) -> None:
        """Sleep until `offset` seconds after the agents started."""
        await asyncio.sleep(max(0.0, self.t0 + offset - time.time()))

    def outage(self, what: str, start: float, end: float, scope: str = "") -> None:
        self.outages.append(Outage(what, start, end, scope))

    async def finish(self) -> History:
        """Let the agents stop by themselves, wait for the locks to drain, and gather the history."""
        shape = self.shape
        patience = self.until + 2.0 * shape.ttl + shape.wait_timeout + DECISION_TIMEOUT + 10
        for process in self.agents:
            faults.thaw(process)  # never leave one frozen
        await faults.poll(lambda: not any(p.alive() for p in self.agents), patience - time.time())
        for process in self.agents:
            if process.alive():
                self.notes.append(f"{process.name} did not stop by itself; sent SIGTERM")
                process.stop(timeout=5)
            elif process.popen.returncode != 0:
                self.notes.append(f"{process.name} exited with {process.popen.returncode}: {process.tail(15)}")
        await faults.poll(lambda: not self.monitor.held_resources(), shape.ttl + BOUNDS.liveness_seconds + 5)
        await asyncio.sleep(0.5)  # the last deletions' events
        history = History()
        for index in range(len(self.agents)):
            path = self.dir / f"agents-{index}.jsonl"
            if path.exists():
                history.extend(read_jsonl(path))
        history.extend(self.store.log)
        history.extend(self.monitor.records())
        history.extend(self.outages)
        history.extend(self.deaths)
        history.end = time.time()
        if self.env.clock is not None and self.env.clock.exists():
            history.extend(t for t in read_jsonl(self.env.clock)
                           if isinstance(t, Tick) and self.t0 - 60 <= t.sent <= history.end + 60)
        with (self.dir / "history.jsonl").open("w", encoding="utf-8") as handle:
            for record in history.records():
                handle.write(to_json(record) + "\n")
        return history

    def check_operators(self, report: Report) -> None:
        report.violations.extend(self.deaths_of_operators)
        for operator in self.operators:
            if operator.process is not None and not operator.alive and not operator.paused:
                report.violations.append(
                    Violation("operator-died", f"{operator.name} exited with {operator.process.popen.returncode}: "
                                               f"{operator.process.tail(20)}")
                )
            crashes = operator.crashes()
            if crashes:
                self.notes.append(f"{operator.name}: {len(crashes)} traceback(s) in its log; first: {crashes[0][:600]}")

    def agent_failures(self, report: Report) -> None:
        for process in self.agents:
            code = process.popen.returncode
            if code not in (0, None, -15):
                report.violations.append(
                    Violation("agent-crash", f"{process.name} exited with {code}: {process.tail(20)}")
                )


def _pool_policy(shape: Shape) -> dict[str, object]:
    """The LockPolicy of every chaos resource (`chaos://pool/...`): the shape's capacity and quotas. Made
    before the operators start, so their first LIST has it and no claim is decided without it."""
    spec: dict[str, object] = {"resourcePrefix": POOL_PREFIX, "capacity": shape.capacity}
    if shape.max_held:
        spec["maxHeldPerHolder"] = shape.max_held
    if shape.max_waiting:
        spec["maxWaitingPerHolder"] = shape.max_waiting
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": POLICY_KIND, "metadata": {"name": "pool"}, "spec": spec}


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.removeprefix("https://").partition(":")
    return host, int(port)


# ---- recovery ---------------------------------------------------------------------------------------


def recovery_seconds(faults_: Sequence[Fault], locks: Sequence[LockLife]) -> float | None:
    """Worst over injections: from the injection until a new grant after the fault was lifted and every
    lock of the holders it hit (dead pods, frozen agents) was gone."""
    worst: float | None = None
    for fault in faults_:
        grants = [lock.created for lock in locks if lock.created >= fault.lifted]
        if not grants:
            continue
        done = min(grants)
        if fault.holders is not None:
            hit = [
                lock for lock in locks
                if holder_matches(lock.holder, fault.holders)
                and lock.created <= fault.injected
                and (lock.deleted is None or lock.deleted > fault.injected)
                and (lock.released is None or lock.released > fault.injected)  # not let go before
            ]
            done = max([done, *(lock.deleted or time.time() for lock in hit)])
        took = done - fault.injected
        worst = took if worst is None else max(worst, took)
    return worst


# ---- the faults -------------------------------------------------------------------------------------

Inject = Callable[[Run], Awaitable[None]]


async def no_fault(run: Run) -> None:
    await run.at(run.shape.seconds)


async def operator_kill(run: Run) -> None:
    """SIGKILL the operator at random moments and restart it after a random pause."""
    kills = 2 if run.env.quick else 6
    slot = (run.shape.seconds - 8) / kills
    operator = run.operators[0]
    for k in range(kills):
        await run.at(3 + k * slot + run.rng.uniform(0, slot * 0.6))
        injected = time.time()
        operator.kill()
        await asyncio.sleep(run.rng.uniform(0, 2.0))
        await operator.start()
        lifted = time.time()
        run.outage("operator killed", injected, lifted)
        run.faults.append(Fault("operator SIGKILL", injected, lifted))
    await run.at(run.shape.seconds)


async def two_replicas(run: Run) -> None:
    """Two replicas all along; each is SIGKILLed once and restarted while the other carries on.

    No outage is declared: with a replica up, the bounds apply throughout."""
    first, second = run.operators
    for offset, victim in ((run.shape.seconds * 0.3, first), (run.shape.seconds * 0.65, second)):
        await run.at(offset)
        injected = time.time()
        victim.kill()
        await asyncio.sleep(run.rng.uniform(1.0, 3.0))
        await victim.start()
        # The other replica serves all along: recovery is counted from the kill itself.
        run.faults.append(Fault(f"{victim.name} SIGKILL", injected, injected))
    await run.at(run.shape.seconds)


def _component_fault(component: str) -> Inject:
    async def inject(run: Run) -> None:
        # The API server twice even in a quick run: its restarts are where faults have shown up.
        restarts = (2 if component == "kube-apiserver" else 1) if run.env.quick else 3
        for k in range(restarts):
            await run.at((k + 0.4) * run.shape.seconds / (restarts + 0.3))
            injected = time.time()
            dead = faults.crash_component(run.env.plane, component)
            await asyncio.sleep(run.rng.uniform(0.5, 2.0))
            faults.start_component(run.env.plane, component, dead, len(run.faults) + 1)
            await faults.wait_ready(run.env.kube)
            lifted = time.time()
            run.outage(f"{component} restarted", injected, lifted)
            run.faults.append(Fault(f"{component} SIGKILL + restart", injected, lifted))
            run.notes.append(f"{component} was back after {lifted - injected:.1f}s")
        await run.at(run.shape.seconds)

    inject.__doc__ = f"SIGKILL {component} and start it again with the same arguments and data."
    return inject


async def watch_cut(run: Run) -> None:
    """Abort every connection of the operator and of the agents (watches included) every few seconds."""
    period = 4.0
    offset = 3.0
    while offset < run.shape.seconds - 2:
        await run.at(offset + run.rng.uniform(0, 1.5))
        now = time.time()
        cut = sum(proxy.cut() for proxy in run.proxies)
        run.faults.append(Fault("connections cut", now, now))
        run.notes.append(f"cut {cut} connections at +{now - run.t0:.1f}s")
        offset += period
    await run.at(run.shape.seconds)


async def agent_freeze(run: Run) -> None:
    """SIGSTOP one agent process for several leases, then SIGCONT it: its late writes must be refused."""
    victim = run.agents[0]
    freezes = 1 if run.env.quick else 3
    frozen_for = 3.5 * run.shape.ttl
    for k in range(freezes):
        await run.at(5 + k * (frozen_for + 6))
        injected = time.time()
        faults.freeze(victim)
        await asyncio.sleep(frozen_for)
        faults.thaw(victim)
        lifted = time.time()
        run.outage("agent process frozen", injected, lifted, scope="a0-")
        # Nobody needs the frozen agents back: recovery is their locks' expiry and the next grant.
        run.faults.append(Fault("agent SIGSTOP", injected, injected, holders=frozenset(_agents_of(run, 0))))
    await run.at(run.shape.seconds)


def _agents_of(run: Run, process: int) -> list[str]:
    per = -(-run.shape.agents // run.shape.processes)
    return [f"a{process}-{i:03d}" for i in range(process * per, min((process + 1) * per, run.shape.agents))]


async def _kill_pods(run: Run, fraction: float) -> Fault:
    pods = await faults.live_pods(run.env.kube, run.namespace)
    victims = run.rng.sample(pods, max(1, int(len(pods) * fraction))) if pods else []
    injected = time.time()
    deleted = await faults.delete_pods(run.env.kube, run.namespace, victims)
    # Stamped before the deletions were sent; with the deletion's revision the checker can move each to
    # when the API server committed it (`chaos.history.retimed`).
    run.deaths.extend(PodDeath(pod, injected, *deleted.get(pod, (None, None))) for pod in victims)
    run.notes.append(f"deleted {len(deleted)} of {len(pods)} holder pods at +{injected - run.t0:.1f}s")
    return Fault("pods deleted", injected, injected, holders=frozenset(victims))


async def pods_deleted(run: Run) -> None:
    """Delete half of the holder pods at once, twice."""
    for offset in (run.shape.seconds * 0.35, run.shape.seconds * 0.7):
        await run.at(offset)
        run.faults.append(await _kill_pods(run, 0.5))
    await run.at(run.shape.seconds)


async def operator_paused_pods_die(run: Run) -> None:
    """SIGSTOP the operator, delete half of the holder pods, wait, SIGCONT it."""
    operator = run.operators[0]
    await run.at(run.shape.seconds * 0.35)
    injected = time.time()
    operator.pause()
    await asyncio.sleep(1.0)
    fault = await _kill_pods(run, 0.5)
    await asyncio.sleep(8.0)
    operator.resume()
    lifted = time.time()
    run.outage("operator paused", injected, lifted)
    run.faults.append(Fault("operator paused, pods deleted", injected, lifted, holders=fault.holders))
    await run.at(run.shape.seconds)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    inject: Inject
    replicas: int = 1
    proxied: bool = False
    pods: bool = False
    ttl: int = 5
    # Long enough for queued claims to outlive a control-plane outage, so that the restarted API
    # server finds waiters to grant, not only waits that ran out meanwhile.
    wait_timeout: int = 6
    capacity: int = 1  # see Shape
    permits_max: int = 1
    holders: int = 0  # see Shape; each holder runs AGENTS_PER_HOLDER agents over RESOURCES_PER_HOLDER_AGENT each
    max_held: int = 0
    max_waiting: int = 0


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("baseline", "no fault (control)", no_fault),
    Scenario("operator-kill", "operator SIGKILL and restart at random moments", operator_kill),
    Scenario("two-replicas", "two operator replicas, each SIGKILLed once", two_replicas, replicas=2),
    Scenario("apiserver-restart", "kube-apiserver SIGKILL and restart", _component_fault("kube-apiserver"),
             wait_timeout=20),
    Scenario("etcd-restart", "etcd SIGKILL and restart", _component_fault("etcd"), wait_timeout=20),
    Scenario("watch-cut", "every connection (watches included) cut every ~4 s", watch_cut, proxied=True),
    Scenario("agent-freeze", "an agent process SIGSTOPped past its TTL, then resumed", agent_freeze, ttl=3),
    Scenario("pods-deleted", "half of the holder pods deleted at once, twice", pods_deleted, pods=True),
    Scenario("operator-paused", "operator SIGSTOPped while half of the holder pods die", operator_paused_pods_die,
             pods=True),
    Scenario("semaphore", "LockPolicy capacity 3, Exclusive claims of 1-2 permits and Shared ones, two replicas "
             "each SIGKILLed once", two_replicas, replicas=2, capacity=3, permits_max=2),
    Scenario("quotas", "LockPolicy maxHeldPerHolder 2, maxWaitingPerHolder 3: 4 holders (ServiceAccounts) of 6 "
             "agents each in 4 processes, two replicas each SIGKILLed once", two_replicas, replicas=2, holders=4,
             max_held=2, max_waiting=3),
)
AGENTS_PER_HOLDER = 6  # in the quota part: more than its limits, so every holder presses on them
RESOURCES_PER_HOLDER_AGENT = 4  # the resources of one slot, each contended by one agent of every holder


def shape_for(scenario: Scenario, quick: bool) -> Shape:
    size = Shape(agents=60, processes=4, resources=20, seconds=25) if quick else Shape(
        agents=120, processes=4, resources=30, seconds=120
    )
    if scenario.holders:
        agents = scenario.holders * AGENTS_PER_HOLDER
        size = replace(size, agents=agents, resources=AGENTS_PER_HOLDER * RESOURCES_PER_HOLDER_AGENT)
    return replace(size, ttl=scenario.ttl, pods=scenario.pods, wait_timeout=scenario.wait_timeout,
                   capacity=scenario.capacity, permits_max=scenario.permits_max, holders=scenario.holders,
                   max_held=scenario.max_held, max_waiting=scenario.max_waiting)


def seed_for(seed: int, part: str, repetition: int) -> int:
    """The seed of one repetition of one part, derived from the run's: `--seed S --only P` repeats it."""
    digest = hashlib.sha256(f"{seed}:{part}:{repetition}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def timing_note(report: Report) -> str:
    """How the time bounds read on commit times, beside what the monitor's arrival stamps would say."""
    stats = report.stats
    timed = sum(1 for v in report.violations if v.check in TIME_BOUND_CHECKS)
    return (f"time bounds on commit times: {timed} violations (on the monitor's arrival stamps: "
            f"{int(stats.get('time_bound_violations_by_arrival', 0))}); {int(stats.get('retimed_stamps', 0))} "
            f"stamps moved, commit windows p50 {stats.get('commit_window_p50', 0):.2f}s, "
            f"p90 {stats.get('commit_window_p90', 0):.2f}s")


async def execute(env: Env, scenario: Scenario, seed: int | None = None) -> Outcome:
    shape = shape_for(scenario, env.quick)
    began = time.time()
    async with Run(
        env, scenario.name, shape, replicas=scenario.replicas, proxied=scenario.proxied, seed=seed
    ) as run:
        run.start_agents()
        await scenario.inject(run)
        history = await run.finish()
        rss = max((o.rss() for o in run.operators), default=0)
        report = check(history, BOUNDS, shape.quota)
        run.check_operators(report)
        run.agent_failures(report)
        recovery = recovery_seconds(run.faults, history.locks)
        if history.ticks:
            run.notes.append(timing_note(report))
        if scenario.inject is agent_freeze:
            refused = int(report.stats.get("stale_writes_refused", 0))
            run.notes.append(f"{refused} late writes of frozen holders refused by fencing"
                             + ("" if refused else ": the freeze caught no holder, fencing was not exercised"))
        return Outcome(
            name=scenario.name,
            report=report,
            operations=history.operations,
            recovery=recovery,
            seconds=time.time() - began,
            faults=run.faults,
            notes=run.notes,
            rss_mb=rss / 2**20,
            seed=run.seed,
        )
