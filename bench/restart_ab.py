"""Restarts (#8) of two operator trees on one control plane: `python bench/restart_ab.py A_TREE B_TREE`.

The scenario of `run.py`'s #8 (`scenarios.restart`: SIGKILL, a new process started at once, a new
claim created at once, seconds until it is `Held`) on the same held locks, alternating the tree that
restarts (A then B, then B then A), each round beside a fresh L (a LIST and parse of as many Leases
as there are locks, 500 a page). `run.py --operator-b` restarts each tree once (QUICK) or three times
per run; on a machine whose load moves by a factor of two within minutes, more pairs are needed to
tell 10–20 % apart. Prints and writes (`--out`) every restart with the load at the time and the
operator's RSS 2 s after it, the medians, and the paired ratios B/A.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/restart_ab.py /tmp/old . --locks 10000
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
import anchors
import scenarios
from harness import rss_mib

from kubelock.testbed import ControlPlane


async def measure(plane: ControlPlane, trees: dict[str, Path], locks: int, rounds: int, logs: Path) -> dict[str, Any]:
    restarts: list[dict[str, Any]] = []
    async with abrun.restart_bed(plane, next(iter(trees.values())), locks, logs) as bed:
        env, op = bed.env, bed.op
        for index in range(rounds):
            list_seconds, _ = await anchors.list_leases(env, bed.anchor)
            for label in trees if index % 2 == 0 else list(trees)[::-1]:
                op.source = trees[label] / "operator"
                seconds = await scenarios.restart(env, op, bed.namespace, within=120)
                await asyncio.sleep(2)  # as run.py's "RSS 2 s after a restart"
                restarts.append({"round": index, "tree": label, "seconds": round(seconds, 3),
                                 "L": round(list_seconds, 3), "load1": round(os.getloadavg()[0], 1),
                                 "rss_mib": round(rss_mib(op.pid), 1)})
                print(restarts[-1], file=sys.stderr)
    out: dict[str, Any] = {"restarts": restarts}
    for label in trees:
        took = [r["seconds"] for r in restarts if r["tree"] == label]
        out[label] = {"median_s": round(statistics.median(took), 3), "min_s": min(took), "max_s": max(took),
                      "rss_median_mib": statistics.median(r["rss_mib"] for r in restarts if r["tree"] == label)}
    a, b = list(trees)
    pairs = [
        next(r["seconds"] for r in restarts if r["round"] == i and r["tree"] == b)
        / next(r["seconds"] for r in restarts if r["round"] == i and r["tree"] == a)
        for i in range(rounds)
    ]
    out["paired_ratio_b_over_a"] = {"median": round(statistics.median(pairs), 3), "each": [round(p, 3) for p in pairs]}
    out["L_median_s"] = round(statistics.median(r["L"] for r in restarts), 3)
    return out


def main() -> int:
    parser = abrun.parser(__doc__, rounds=6, rounds_help="rounds of one restart of each tree")
    parser.add_argument("--locks", type=int, default=2000, help="held locks (and Leases for L)")
    args = parser.parse_args()
    for tree in abrun.trees(args).values():  # bytecode, as the image has (`harness.compile_operators`)
        compileall.compile_dir(str(tree / "operator" / "kubelock"), quiet=1)
    restarts = lambda plane, trees, logs: measure(plane, trees, args.locks, args.rounds, logs)  # noqa: E731
    return abrun.run(args, "restart", restarts, locks=args.locks)


if __name__ == "__main__":
    sys.exit(main())
