"""Expiry at scale (#4) of two operator trees on one control plane: `python bench/expiry_ab.py A_TREE B_TREE`.

The scenario of `run.py`'s #4 (`scenarios.expiry`: `--expiring` claims created at `--rate` a second,
then each renewed with a TTL that puts its end on its own slot of one `--window` of seconds, lateness
= the client seeing `Expired` − the claim's `status.expiresAt`; `--window 0`: the scenario before
2026-11-27, TTLs at creation aimed at one instant, so the ends spread as the grants lag) among
`--locks` held locks, the operator of one tree then of the other (A then B, then B then A), each
started afresh on the same locks and left to go quiet before its round. `run.py --operator-b` runs
each tree once; on a machine whose load moves by a factor of two within minutes,
more pairs are needed. Prints and writes (`--out`) every round with the load at the time, the API
server's requests by verb and resource and the CPU seconds of the API server, etcd and the operator
over the round, the medians, and the paired ratios B/A of p99.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/expiry_ab.py /tmp/old . --locks 10000
"""

from __future__ import annotations

import asyncio
import compileall
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import abrun
import scenarios
from blocks import STALE_OFF
from harness import CpuMeter, apiserver_requests, children_by_name, diff, scrape
from prometheus_client.parser import text_string_to_metric_families
from report import percentile

from kubelock.testbed import ControlPlane

SERVERS = ("kube-apiserver", "etcd")
# The expiry's own write as the API server times it (the whole round's status PUTs: `Held`, renewals
# and `Expired` alike, each one write of the same kind).
STATUS_PUT = {"verb": "PUT", "resource": "lockclaims", "subresource": "status"}


def histogram(text: str, name: str, match: dict[str, str] | None = None) -> dict[str, float]:
    """One Prometheus histogram summed over the series whose labels include `match`: its `count`,
    `sum` and cumulative bucket counts keyed by their bound (`le=...`, as the exposition spells it).
    Samples are matched by name, so an exposition without `# TYPE` lines is read the same."""
    parts = {f"{name}_bucket": "bucket", f"{name}_count": "count", f"{name}_sum": "sum"}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            part = parts.get(sample.name)
            if part is None or any(sample.labels.get(k) != v for k, v in (match or {}).items()):
                continue
            key = f"le={sample.labels['le']}" if part == "bucket" else part
            out[key] = out.get(key, 0.0) + sample.value
    return out


def bucket_quantile(hist: dict[str, float], q: float) -> float | None:
    """The upper bound of the bucket the `q` quantile falls in (inf when past the last finite bound;
    None without samples): a histogram tells no more than that."""
    total = hist.get("count", 0.0)
    if total <= 0:
        return None
    bounds = sorted((float(k[3:]), n) for k, n in hist.items() if k.startswith("le="))
    for bound, n in bounds:
        if n >= q * total:
            return bound
    return float("inf")


def _hist_diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


async def _timings(bed: abrun.RestartBed) -> tuple[dict[str, float], dict[str, float]]:
    """The API server's status PUT durations and the operator's expiry lateness (empty for a tree
    without `kubelock_expiry_lateness_seconds`), as they stand."""
    server = await scrape(f"{bed.env.credentials.server}/metrics", bed.env.credentials.ssl_context())
    operator = await scrape(f"http://127.0.0.1:{bed.op.metrics_port}/metrics")
    return (histogram(server, "apiserver_request_duration_seconds", STATUS_PUT),
            histogram(operator, "kubelock_expiry_lateness_seconds"))


def _split(puts: dict[str, float], lateness: dict[str, float]) -> dict[str, Any]:
    """Where the round's expiries spent their time: the operator's share (lease end → `Expired` sent;
    bucket bounds, s) and the API server's mean time on a status PUT (ms)."""
    out: dict[str, Any] = {}
    if puts.get("count"):
        out["status_put_count"] = int(puts["count"])
        out["status_put_mean_ms"] = round(puts["sum"] / puts["count"] * 1000, 1)
    if lateness.get("count"):
        out["operator_share_mean_ms"] = round(lateness["sum"] / lateness["count"] * 1000, 1)
        out["operator_share_p50_le_s"] = bucket_quantile(lateness, 0.5)
        out["operator_share_p99_le_s"] = bucket_quantile(lateness, 0.99)
    return out


async def one_round(bed: abrun.RestartBed, expiring: int, rate: float, window: float) -> dict[str, Any]:
    env, op = bed.env, bed.op
    meter = CpuMeter({**children_by_name(SERVERS), "operator": op.pid}).start()
    before = await apiserver_requests(env.credentials)
    timings_before = await _timings(bed)
    load = os.getloadavg()[0]
    result = await scenarios.expiry(env, bed.namespace, expiring, rate, window)
    cpu = meter.stop()
    requests = diff(await apiserver_requests(env.credentials), before)
    timings = [_hist_diff(a, b) for a, b in zip(await _timings(bed), timings_before, strict=True)]
    late = sorted(result.lateness)
    return {
        "p50_ms": round(percentile(late, 50) * 1000, 1), "p99_ms": round(percentile(late, 99) * 1000, 1),
        "max_ms": round(late[-1] * 1000, 1), "window_s": round(result.window, 2),
        "outside": result.outside, "renewed_late": result.renewed_late, "busiest_second": result.busiest_second,
        "load1_before": round(load, 1), "load1_after": round(os.getloadavg()[0], 1),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "writes": {f"{verb} {resource}{'/' + sub if sub else ''}": n
                   for (verb, resource, sub), n in sorted(requests.items())
                   if verb in ("POST", "PATCH", "PUT", "DELETE") and n >= 10},
        **_split(*timings),
    }


async def measure(plane: ControlPlane, trees: dict[str, Path], locks: int, expiring: int, rate: float,
                  window: float, rounds: int, logs: Path) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    async with abrun.restart_bed(plane, next(iter(trees.values())), locks, logs, extra_args=STALE_OFF) as bed:
        op = bed.op
        for index in range(rounds):
            for label in trees if index % 2 == 0 else list(trees)[::-1]:
                op.kill()
                op.source = trees[label] / "operator"
                await op.start(within=120)
                await op.quiet(within=120)
                await asyncio.sleep(2)
                row = {"round": index, "tree": label, **await one_round(bed, expiring, rate, window),
                       "log": str(op.log_path)}
                out.append(row)
                print(row, file=sys.stderr)
                await op.quiet(within=120)  # the deletions queued behind the statuses, before the next round
    result: dict[str, Any] = {"rounds_detail": out}
    for label in trees:
        mine = [r for r in out if r["tree"] == label]
        result[label] = {k: round(statistics.median(r[k] for r in mine), 1)
                         for k in ("p50_ms", "p99_ms", "max_ms", "window_s", "busiest_second")}
    a, b = list(trees)
    pairs = [next(r["p99_ms"] for r in out if r["round"] == i and r["tree"] == b)
             / next(r["p99_ms"] for r in out if r["round"] == i and r["tree"] == a) for i in range(rounds)]
    result["paired_p99_ratio_b_over_a"] = {"median": round(statistics.median(pairs), 3),
                                           "each": [round(p, 3) for p in pairs]}
    return result


def main() -> int:
    parser = abrun.parser(__doc__, rounds=3, rounds_help="rounds of one expiry of each tree")
    parser.add_argument("--locks", type=int, default=10_000, help="held locks the expiries are among")
    parser.add_argument("--expiring", type=int, default=1000, help="leases ending at once")
    parser.add_argument("--rate", type=float, default=200.0, help="expiring claims created (and renewed) a second")
    parser.add_argument("--window", type=float, default=5.5,
                        help="seconds the leases are made to end within (0: the old scenario)")
    args = parser.parse_args()
    for tree in abrun.trees(args).values():  # bytecode, as the image has (`harness.compile_operators`)
        compileall.compile_dir(str(tree / "operator" / "kubelock"), quiet=1)
    expire = lambda plane, trees, logs: measure(  # noqa: E731
        plane, trees, args.locks, args.expiring, args.rate, args.window, args.rounds, logs)
    return abrun.run(args, "expiry", expire, locks=args.locks, expiring=args.expiring, rate=args.rate,
                     window=args.window)


if __name__ == "__main__":
    sys.exit(main())
