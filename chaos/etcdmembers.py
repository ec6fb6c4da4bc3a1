"""Three etcd members under chaos, as production control planes run them: the usual agents, operator,
monitor and fenced store (a scenario's world), while etcd loses and regains members.

In order, each member brought back before the next step:

- a follower SIGKILLed, restarted on its data directory after a few seconds;
- the leader SIGKILLed (no leadership handed over), restarted the same way;
- the leader SIGSTOPped for several election timeouts (a stalled disk, a hung machine), then SIGCONTed;
- a follower SIGSTOPped as long, then SIGCONTed.

Quorum stands throughout (two of three members). The only time the store cannot commit is from the loss
of a leader until the other two have elected one: that window, measured by asking the members, is
declared an outage, as the single member's restart is in `etcd-restart`. Everything else counts against
the checker's bounds. For every step the report gives the usual recovery (from the injection to the
first grant after the store was whole) and the longest pause between grants around it (the stall).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from chaos.history import LockLife, check
from chaos.scenarios import BOUNDS, Env, Fault, Outcome, Run, Shape, recovery_seconds
from kubelock.testbed.controlplane import ControlPlane
from kubelock.testbed.etcd import EtcdCluster

NAME = "etcd-members"
TITLE = ("three etcd members: a follower and the leader SIGKILLed and restarted, the leader and a follower "
         "SIGSTOPped past the election timeout and resumed")
MEMBERS = 3
ELECTION_TIMEOUT = 1.0  # etcd's default --election-timeout (1000 ms); the test bed keeps it
LEADER_WITHIN = 30.0  # the others elect a leader well within this, even on a loaded machine
MEMBER_BACK_WITHIN = 60.0
STATUS_TIMEOUT = 2.0  # of one status request while polling: a paused member is never asked
# The stall of a fault: the longest pause between grants that began from its injection until this long
# after it was lifted (a member back: after the restart or SIGCONT). Short, so that a pause is not put
# down to a fault it came well after.
STALL_AFTER = 3.0


@dataclass(frozen=True)
class Step:
    """One fault: SIGKILL (`kill`) or SIGSTOP (`freeze`) of the `leader` or a `follower`, `at` seconds after
    the agents started, for `down` seconds."""

    action: str
    target: str
    at: float
    down: float


def plan(quick: bool) -> tuple[float, tuple[Step, ...]]:
    """The part's length and its steps: once each with --quick, twice (and longer) without."""
    down, freeze, gap = (3.0, 4.0, 12.0) if quick else (8.0, 8.0, 17.0)
    kinds = (("kill", "follower"), ("kill", "leader"), ("freeze", "leader"), ("freeze", "follower"))
    cycles = 1 if quick else 2
    steps = []
    at = 4.0
    for _ in range(cycles):
        for action, target in kinds:
            steps.append(Step(action, target, at, down if action == "kill" else freeze))
            at += gap
    return at + 4.0, tuple(steps)


def grant_stall(grants: Sequence[float], start: float, end: float) -> float:
    """The longest pause between grants that began in [start, end]: from `start` to the first grant,
    and between consecutive grants, a pause running past `end` counted whole (up to `end` when no
    grant came after `start` at all)."""
    after = sorted(t for t in grants if t >= start)
    gaps = [b - a for a, b in itertools.pairwise([start, *after]) if a <= end]
    if not after:
        gaps.append(end - start)
    return max(gaps, default=0.0)


def grant_times(locks: Sequence[LockLife]) -> list[float]:
    return sorted(lock.acquired if lock.acquired is not None else lock.created for lock in locks)


def shape(quick: bool) -> Shape:
    seconds, _ = plan(quick)
    size = Shape(agents=60, processes=4, resources=20, seconds=seconds) if quick else Shape(
        agents=120, processes=4, resources=30, seconds=seconds
    )
    # Queued claims wait out a leader election, as in etcd-restart.
    return replace(size, wait_timeout=20)


# ---- the faults ------------------------------------------------------------------------------------


async def _leader(cluster: EtcdCluster, exclude: frozenset[str] = frozenset()) -> str | None:
    # The status requests block: in a thread, so that the monitor and the fenced store go on meanwhile.
    return await asyncio.to_thread(cluster.leader, exclude=exclude, timeout=STATUS_TIMEOUT)


async def _await_leader(cluster: EtcdCluster, exclude: frozenset[str] = frozenset()) -> tuple[str, float]:
    """The leader the members (but `exclude`) agree on, and when they did; raises if none in time."""
    deadline = time.monotonic() + LEADER_WITHIN
    while True:
        leader = await _leader(cluster, exclude)
        if leader is not None and leader not in exclude:
            return leader, time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the etcd members{' but ' + ', '.join(sorted(exclude)) if exclude else ''} "
                               f"elected no leader within {LEADER_WITHIN:g}s")
        await asyncio.sleep(0.05)


async def _await_member(cluster: EtcdCluster, name: str) -> float:
    """Until the member answers its status and follows the leader the others agree on; when it did."""
    deadline = time.monotonic() + MEMBER_BACK_WITHIN
    while True:
        try:
            status = await asyncio.to_thread(cluster.status, name, timeout=STATUS_TIMEOUT)
            leader = await _leader(cluster)
            if leader is not None and str(status.get("leader", "0")) != "0":
                return time.time()
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd member {name} did not rejoin within {MEMBER_BACK_WITHIN:g}s")
        await asyncio.sleep(0.1)


async def _step(run: Run, cluster: EtcdCluster, step: Step) -> None:
    leader, _ = await _await_leader(cluster)
    followers = [m.name for m in cluster.members if m.name != leader]
    victim = leader if step.target == "leader" else run.rng.choice(followers)
    verb = "SIGKILLed" if step.action == "kill" else "SIGSTOPped"
    injected = time.time()
    if step.action == "kill":
        cluster.kill_member(victim)
    else:
        cluster.pause_member(victim)
    lifted = injected
    note = f"+{injected - run.t0:.1f}s etcd {step.target} {victim} {verb} for {step.down:g}s"
    if victim == leader:
        elected, lifted = await _await_leader(cluster, exclude=frozenset({victim}))
        run.outage(f"etcd leader {victim} {verb}: no leader until another was elected", injected, lifted)
        note += f"; {elected} elected after {lifted - injected:.1f}s"
    # The role first and the member in brackets: the figures of one role add up over the runs.
    run.faults.append(Fault(f"etcd {step.target} {verb} ({victim})", injected, lifted))
    await asyncio.sleep(max(0.0, injected + step.down - time.time()))
    back = time.time()
    if step.action == "kill":
        cluster.start_member(victim, wait=False)  # waiting here would block the event loop
    else:
        cluster.resume_member(victim)
    rejoined = await _await_member(cluster, victim)
    how = "restarted" if step.action == "kill" else "resumed"
    run.faults.append(Fault(f"etcd {step.target} back, {how} ({victim})", back, back))
    run.notes.append(f"{note}; back, following the leader {rejoined - back:.1f}s later")


async def inject(run: Run) -> None:
    cluster = run.env.plane.etcd
    if len(cluster.members) != MEMBERS:
        raise RuntimeError(f"{NAME} needs {MEMBERS} etcd members, the control plane runs {len(cluster.members)}")
    _, steps = plan(run.env.quick)
    for step in steps:
        await run.at(step.at)
        await _step(run, cluster, step)
    await run.at(run.shape.seconds)


# ---- the part ----------------------------------------------------------------------------------------


def plane_for(workdir: Path, manifests: Sequence[Path]) -> ControlPlane:
    """The part's own control plane (when the run's has a single member)."""
    return ControlPlane(workdir / "etcd-members-plane", manifests=manifests, etcd_members=MEMBERS)


async def execute(env: Env, seed: int) -> Outcome:
    size = shape(env.quick)
    began = time.time()
    async with Run(env, NAME, size, seed=seed) as run:
        run.start_agents()
        await inject(run)
        history = await run.finish()
        rss = max((o.rss() for o in run.operators), default=0)
        report = check(history, BOUNDS, size.quota)
        run.check_operators(report)
        run.agent_failures(report)
        grants = grant_times(history.locks)
        if grants:  # what a pause looks like without a fault near it, to read the stalls against
            whole = grant_stall(grants, grants[0], grants[-1])
            run.notes.append(f"longest pause between grants in the whole run: {whole:.1f}s")
        for fault in run.faults:
            stall = grant_stall(grants, fault.injected, fault.lifted + STALL_AFTER)
            took = recovery_seconds([fault], history.locks)
            role = fault.what.split(" (")[0]
            report.stats[f"stall: {role}"] = round(max(stall, report.stats.get(f"stall: {role}", 0.0)), 2)
            if took is not None:
                report.stats[f"recovery: {role}"] = round(max(took, report.stats.get(f"recovery: {role}", 0.0)), 2)
            shown = "-" if took is None else f"{took:.1f}s"
            run.notes.append(f"{fault.what}: recovery {shown}, longest pause between grants {stall:.1f}s")
        return Outcome(
            name=NAME,
            report=report,
            operations=history.operations,
            recovery=recovery_seconds(run.faults, history.locks),
            seconds=time.time() - began,
            faults=run.faults,
            notes=run.notes,
            rss_mb=rss / 2**20,
            seed=run.seed,
        )
