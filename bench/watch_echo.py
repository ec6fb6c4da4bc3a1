"""How often the claim watch's echo check fires, and what it costs: `python bench/watch_echo.py A B
--locks 10000 --bursts 8 --rounds 2` (A/B of two operator trees, `abrun`).

The operator's own claim status writes must come back on its claim watch (`Freshness.wrote`); a write
not shown in time makes the watch count as dead and be started again. Among `--locks` held locks,
each tree in turn is restarted and then serves `--bursts` bursts of `--burst` new claims on fresh
resources (all granted by the normal path: one status write each), every burst followed by
`--quiet` seconds in which nothing else happens, since a false alarm needs a quiet namespace to
surface. Per restart: how often the check fired (its warning), how many LISTs of every claim
followed, the operator's CPU seconds over the bursts, and the median time from a burst's creates to
its last `Held`. Run it with background load: the check's false alarms are a matter of timing.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import abrun
from harness import Watch, unique
from scenarios import HELD, claim_body

from kubelock.kube import paths
from kubelock.testbed import ControlPlane

FIRED = ("did not show a write", "has delivered nothing for")  # the check's warning, before and after
RELISTED = "listed again ("  # `Runtime.relist`: a LIST of every claim of the scope


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _bursts(bed: abrun.RestartBed, bursts: int, size: int, quiet: float) -> list[float]:
    env, namespace = bed.env, bed.namespace
    took: list[float] = []
    # From the current version: a watch without one would first replay every claim as ADDED.
    listing = await env.client.request("GET", paths.claims(namespace), params={"limit": "1"}, verb="list")
    now = str(listing["metadata"]["resourceVersion"])
    async with Watch(env.client, paths.claims(namespace), resource_version=now) as watch:
        for _ in range(bursts):
            names = [unique("e") for _ in range(size)]
            started = time.perf_counter()
            await asyncio.gather(*(env.client.create(paths.claims(namespace), claim_body(n, f"bench://echo/{n}", n))
                                   for n in names))
            seen = await asyncio.gather(*(watch.wait_for(n, HELD, 120) for n in names))
            took.append(max(s.at for s in seen) - started)
            await asyncio.sleep(quiet)
            await asyncio.gather(*(env.client.delete(paths.claims(namespace, n)) for n in names))
    return took


async def measure(plane: ControlPlane, trees: dict[str, Path], locks: int, rounds: int, bursts: int, size: int,
                  quiet: float, logs: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    async with abrun.restart_bed(plane, next(iter(trees.values())), locks, logs) as bed:
        op = bed.op
        for index in range(rounds):
            for label in trees if index % 2 == 0 else list(trees)[::-1]:
                op.source = trees[label] / "operator"
                op.kill()
                op.spawn()
                await op.wait_ready(120)
                await asyncio.sleep(2)
                before, load = len(op.log_text()), os.getloadavg()[0]
                cpu = _cpu_seconds(op.pid)
                took = await _bursts(bed, bursts, size, quiet)
                cpu = _cpu_seconds(op.pid) - cpu
                log = op.log_text()[before:]
                runs.append({"round": index, "tree": label, "load1": round(load, 1),
                             "load1_after": round(os.getloadavg()[0], 1),
                             "fired": sum(log.count(text) for text in FIRED), "relists": log.count(RELISTED),
                             "cpu_s": round(cpu, 2), "burst_to_held_median_s": round(statistics.median(took), 3)})
                print(runs[-1], file=sys.stderr)
    out: dict[str, Any] = {"runs": runs}
    for label in trees:
        mine = [r for r in runs if r["tree"] == label]
        out[label] = {"fired": sum(r["fired"] for r in mine), "relists": sum(r["relists"] for r in mine),
                      "cpu_s_median": statistics.median(r["cpu_s"] for r in mine),
                      "burst_to_held_median_s": statistics.median(r["burst_to_held_median_s"] for r in mine)}
    return out


def main() -> int:
    parser = abrun.parser(__doc__, rounds=2, rounds_help="restarts per tree (A B, then B A, ...)")
    parser.add_argument("--locks", type=int, default=10000)
    parser.add_argument("--bursts", type=int, default=8)
    parser.add_argument("--burst", type=int, default=20, help="new claims per burst")
    parser.add_argument("--quiet", type=float, default=7.0, help="seconds of nothing after each burst")
    args = parser.parse_args()

    def run(plane: ControlPlane, trees: dict[str, Path], logs: Path) -> Any:
        return measure(plane, trees, args.locks, args.rounds, args.bursts, args.burst, args.quiet, logs)

    return abrun.run(args, "echo", run, locks=args.locks, bursts=args.bursts, burst=args.burst, quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
