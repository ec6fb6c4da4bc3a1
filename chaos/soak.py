"""The soak: steady churn for N minutes with no fault, judged like every scenario, plus drift: the operator's
memory (RSS) and the decision latency seen by agents, window by window, first against last.

Decision latency is the time from an agent's try-lock (create) to the operator's verdict (Held or
Rejected) reaching the agent through its watch: the operator's whole path, end to end.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

from chaos.faults import Operator
from chaos.history import Attempt, LockLife, Violation, check
from chaos.results import Row
from chaos.scenarios import BOUNDS, Env, Run, Shape

TITLE = "steady churn, no fault: memory and latency drift"
# Drift that fails the run: memory growing by half, or the 95th percentile latency doubling (plus a
# quarter second, so that a quiet first window does not make noise look like drift).
RSS_GROWTH = 1.5
P95_GROWTH = 2.0
P95_SLACK = 0.25


@dataclass
class Window:
    start: float
    rss_mb: float
    decisions: int = 0
    grants: int = 0
    p50: float = 0.0
    p95: float = 0.0

    def describe(self) -> str:
        return (f"RSS {self.rss_mb:.1f} MB, {self.decisions} try-lock decisions (p50 {self.p50 * 1000:.0f} ms, "
                f"p95 {self.p95 * 1000:.0f} ms), {self.grants} grants")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(fraction * 100) - 1))]


def fill(windows: list[Window], length: float, attempts: list[Attempt], locks: list[LockLife]) -> None:
    for window in windows:
        end = window.start + length
        latencies = [a.end - a.start for a in attempts
                     if not a.wait and a.outcome in ("Held", "Rejected") and window.start <= a.start < end]
        window.decisions = len(latencies)
        window.p50 = percentile(latencies, 0.5)
        window.p95 = percentile(latencies, 0.95)
        window.grants = sum(1 for lock in locks if window.start <= lock.created < end)


async def sample(run: Run, operator: Operator, windows: list[Window], length: float) -> None:
    count = int(run.shape.seconds // length)
    # Written as it goes: an interrupted soak still leaves its memory curve behind.
    with (run.dir / "rss.jsonl").open("a", encoding="utf-8") as log:
        for index in range(count):
            await run.at(index * length + length / 2)  # mid-window, once the window's churn is under way
            window = Window(start=run.t0 + index * length, rss_mb=operator.rss() / 2**20)
            windows.append(window)
            log.write(json.dumps({"start": window.start, "rss_mb": round(window.rss_mb, 2)}) + "\n")
            log.flush()
    await run.at(run.shape.seconds)


async def run(env: Env, minutes: float) -> Row:
    began = time.time()
    seconds = minutes * 60
    length = 10.0 if seconds <= 120 else 60.0
    agents = 60 if env.quick else 100
    shape = Shape(agents=agents, processes=4, resources=20 if env.quick else 30, seconds=seconds)
    windows: list[Window] = []
    async with Run(env, "soak", shape) as soaking:
        soaking.start_agents()
        await sample(soaking, soaking.operators[0], windows, length)
        history = await soaking.finish()
        report = check(history, BOUNDS)
        soaking.check_operators(report)
        soaking.agent_failures(report)
        notes = soaking.notes
    fill(windows, length, history.attempts, history.locks)
    if len(windows) >= 2:
        first, last = windows[0], windows[-1]
        if last.rss_mb > first.rss_mb * RSS_GROWTH:
            report.violations.append(Violation("drift", f"operator RSS grew from {first.rss_mb:.1f} MB to "
                                                        f"{last.rss_mb:.1f} MB"))
        if last.p95 > first.p95 * P95_GROWTH + P95_SLACK:
            report.violations.append(Violation("drift", f"p95 decision latency grew from {first.p95 * 1000:.0f} ms "
                                                        f"to {last.p95 * 1000:.0f} ms"))
        notes = [f"first window: {first.describe()}", f"last window: {last.describe()}", *notes]
    stats: dict[str, object] = dict(sorted(report.stats.items()))
    stats["windows"] = [w.__dict__ for w in windows]
    return Row(
        name="soak",
        title=f"{TITLE} ({minutes:g} min, {agents} agents)",
        runs=1,
        operations=history.operations,
        violations=len(report.violations),
        recovery=None,
        seconds=time.time() - began,
        notes=notes,
        details=[str(v) for v in report.violations[:30]],
        stats=stats,
    )
