"""The soak: steady churn for N minutes with no fault, judged like every scenario, plus drift: the operator's
memory (RSS), the decision latency seen by agents and the grant rate, window by window.

Decision latency is the time from an agent's try-lock (create) to the operator's verdict (Held or
Rejected) reaching the agent through its watch: the operator's whole path, end to end.

Drift, for a soak of at least DRIFT_MINUTES: after a warm-up of WARM_UP_MINUTES, the last
SPAN_MINUTES must have p50 and p95 no more than LATENCY_RATIO times those of minutes 10–15 and grants
per minute no more than GRANT_RATE_TOLERANCE below theirs, and the operator's RSS must stay within
RSS_BAND_MB of its size at minute 10 in every window from then on. (Getting faster is not drift: on a
shared machine the other work may end.) Shorter soaks (the quick run's) are too short for that; they fail
only on gross drift between their first and last windows.

Each window also records what might grow with the number of operations: Events in the namespace,
the API server's and etcd's RSS, and the operator's CPU time.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

from chaos.faults import Operator, component_pid, cpu_seconds, rss_bytes
from chaos.history import Attempt, LockLife, Violation, check
from chaos.results import Row
from chaos.scenarios import BOUNDS, Env, Run, Shape
from kubelock.kube import errors as kube_errors

TITLE = "steady churn, no fault: memory, latency and throughput drift"
DRIFT_MINUTES = 20.0
WARM_UP_MINUTES = 10.0
SPAN_MINUTES = 5.0
LATENCY_RATIO = 1.3
GRANT_RATE_TOLERANCE = 0.10
RSS_BAND_MB = 5.0
# Short soaks: memory growing by half, or the 95th percentile latency doubling (plus a quarter
# second, so that a quiet first window does not make noise look like drift).
RSS_GROWTH = 1.5
P95_GROWTH = 2.0
P95_SLACK = 0.25
MB = 2**20


@dataclass
class Window:
    start: float
    rss_mb: float
    decisions: int = 0
    grants: int = 0
    p50: float = 0.0
    p95: float = 0.0
    events: int = -1  # Events stored in the namespace (-1: could not count)
    apiserver_rss_mb: float = 0.0
    etcd_rss_mb: float = 0.0
    operator_cpu_s: float = 0.0  # CPU the operator used during the window

    def describe(self) -> str:
        return (f"RSS {self.rss_mb:.1f} MB, {self.decisions} try-lock decisions (p50 {self.p50 * 1000:.0f} ms, "
                f"p95 {self.p95 * 1000:.0f} ms), {self.grants} grants")


@dataclass
class Span:
    """Several windows taken together (a drift comparison's side)."""

    first: int
    last: int  # exclusive
    decisions: int
    p50: float
    p95: float
    grants_per_minute: float

    def describe(self) -> str:
        return (f"minutes {self.first}-{self.last}: p50 {self.p50 * 1000:.0f} ms, p95 {self.p95 * 1000:.0f} ms, "
                f"{self.grants_per_minute:.0f} grants/min ({self.decisions} try-lock decisions)")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(fraction * 100) - 1))]


def _latencies(attempts: list[Attempt], start: float, end: float) -> list[float]:
    return [a.end - a.start for a in attempts
            if not a.wait and a.outcome in ("Held", "Rejected") and start <= a.start < end]


def fill(windows: list[Window], length: float, attempts: list[Attempt], locks: list[LockLife]) -> None:
    for window in windows:
        end = window.start + length
        latencies = _latencies(attempts, window.start, end)
        window.decisions = len(latencies)
        window.p50 = percentile(latencies, 0.5)
        window.p95 = percentile(latencies, 0.95)
        window.grants = sum(1 for lock in locks if lock.token and window.start <= lock.created < end)


def span(t0: float, first_minute: float, last_minute: float, attempts: list[Attempt], locks: list[LockLife]) -> Span:
    start, end = t0 + first_minute * 60, t0 + last_minute * 60
    latencies = _latencies(attempts, start, end)
    grants = sum(1 for lock in locks if lock.token and start <= lock.created < end)
    return Span(round(first_minute), round(last_minute), len(latencies), percentile(latencies, 0.5),
                percentile(latencies, 0.95), grants / (last_minute - first_minute))


def drift(t0: float, minutes: float, windows: list[Window], length: float, attempts: list[Attempt],
          locks: list[LockLife]) -> tuple[list[Violation], list[str]]:
    """The drift violations and the lines that show the comparison."""
    if minutes < DRIFT_MINUTES:
        return _gross_drift(windows)
    reference = span(t0, WARM_UP_MINUTES, WARM_UP_MINUTES + SPAN_MINUTES, attempts, locks)
    final = span(t0, minutes - SPAN_MINUTES, minutes, attempts, locks)
    lines = [f"reference {reference.describe()}", f"last {final.describe()}"]
    found: list[Violation] = []
    # Drift is getting worse: a run that gets faster (the machine's other work ended) has not drifted.
    for name, before, after in (("p50", reference.p50, final.p50), ("p95", reference.p95, final.p95)):
        if before > 0 and after > before * LATENCY_RATIO:
            found.append(Violation("drift", f"{name} decision latency grew from {before * 1000:.0f} ms "
                                            f"({reference.describe()}) to {after * 1000:.0f} ms (last minutes), "
                                            f"beyond {LATENCY_RATIO}x"))
    rate_before, rate_after = reference.grants_per_minute, final.grants_per_minute
    if rate_before > 0 and rate_after < rate_before * (1 - GRANT_RATE_TOLERANCE):
        found.append(Violation("drift", f"grants per minute fell from {rate_before:.0f} to {rate_after:.0f}, "
                                        f"by more than {GRANT_RATE_TOLERANCE:.0%}"))
    settled = [w for w in windows if w.start - t0 >= WARM_UP_MINUTES * 60 - length / 2 and w.rss_mb > 0]
    if settled:
        base = settled[0].rss_mb
        rss = [w.rss_mb for w in settled]
        lines.append(f"operator RSS from minute {WARM_UP_MINUTES:g}: {min(rss):.1f}-{max(rss):.1f} MB "
                     f"(at minute {WARM_UP_MINUTES:g}: {base:.1f} MB)")
        outside = [w for w in settled if abs(w.rss_mb - base) > RSS_BAND_MB]
        if outside:
            worst = max(outside, key=lambda w: abs(w.rss_mb - base))
            found.append(Violation("drift", f"operator RSS moved from {base:.1f} MB at minute {WARM_UP_MINUTES:g} to "
                                            f"{worst.rss_mb:.1f} MB at minute {(worst.start - t0) / 60:.0f}, "
                                            f"beyond ±{RSS_BAND_MB:g} MB"))
    return found, lines


def _gross_drift(windows: list[Window]) -> tuple[list[Violation], list[str]]:
    if len(windows) < 2:
        return [], []
    first, last = windows[0], windows[-1]
    found: list[Violation] = []
    if last.rss_mb > first.rss_mb * RSS_GROWTH:
        found.append(Violation("drift", f"operator RSS grew from {first.rss_mb:.1f} MB to {last.rss_mb:.1f} MB"))
    if last.p95 > first.p95 * P95_GROWTH + P95_SLACK:
        found.append(Violation("drift", f"p95 decision latency grew from {first.p95 * 1000:.0f} ms "
                                        f"to {last.p95 * 1000:.0f} ms"))
    return found, [f"first window: {first.describe()}", f"last window: {last.describe()}"]


async def count_events(run: Run) -> int:
    try:
        listing = await run.env.kube.list(f"/api/v1/namespaces/{run.namespace}/events", limit=1)
    except (kube_errors.ApiError, kube_errors.Unreachable):
        return -1
    meta = listing.get("metadata") or {}
    return len(listing.get("items") or []) + int(meta.get("remainingItemCount") or 0)


async def sample(run: Run, operator: Operator, windows: list[Window], length: float) -> None:
    count = int(run.shape.seconds // length)
    plane = run.env.plane
    cpu_before = cpu_seconds(operator.pid)
    # Written as it goes: an interrupted soak still leaves its curves behind.
    with (run.dir / "rss.jsonl").open("a", encoding="utf-8") as log:
        for index in range(count):
            await run.at(index * length + length / 2)  # mid-window, once the window's churn is under way
            window = Window(
                start=run.t0 + index * length,
                rss_mb=operator.rss() / MB,
                events=await count_events(run),
                apiserver_rss_mb=rss_bytes(component_pid(plane, "kube-apiserver")) / MB,
                etcd_rss_mb=rss_bytes(component_pid(plane, "etcd")) / MB,
            )
            await run.at((index + 1) * length)
            cpu_now = cpu_seconds(operator.pid)
            window.operator_cpu_s = round(cpu_now - cpu_before, 2)
            cpu_before = cpu_now
            windows.append(window)
            log.write(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                  for k, v in window.__dict__.items()}) + "\n")
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
        t0 = soaking.t0
    fill(windows, length, history.attempts, history.locks)
    found, lines = drift(t0, minutes, windows, length, history.attempts, history.locks)
    report.violations.extend(found)
    notes = [*lines, *notes]
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
