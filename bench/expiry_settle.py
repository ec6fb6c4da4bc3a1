"""#4 in rounds one after another on one bed: `python bench/expiry_settle.py TREE TREE --locks 2000`.

Is the first expiry storm after the bed's grants later than the ones after it (bench/README.md, the
exp4 section)? The operator of the first tree grants `--locks` held locks, the bed waits `--settle`
seconds, then `--rounds` rounds of `expiry_ab.one_round` (1 000 leases ending within 5.5 s), the
operator restarted and left to go quiet before each, as `expiry_ab.py` does. Beside it, every 5 s, the
CPU (cores) of kube-apiserver, etcd, kube-controller-manager, kwok and the operator and the load: what
work the grants left behind, and when. Only the first tree is run (the second argument is for
`abrun`'s parser)."""
from __future__ import annotations

import asyncio
import compileall
import os
import sys
import time
from pathlib import Path
from typing import Any

import abrun
from blocks import STALE_OFF
from expiry_ab import one_round
from harness import children_by_name, cpu_seconds

from kubelock.testbed import ControlPlane

NAMES = ("kube-apiserver", "etcd", "kube-controller-manager", "kwok")


async def sampler(servers: dict[str, int], bed: abrun.RestartBed, every: float, out: list[dict[str, Any]],
                  t0: float) -> None:
    def pids() -> dict[str, int]:  # the operator's pid changes at each restart; none while it is down
        process = bed.op.process
        return {**servers, **({"operator": process.pid} if process is not None else {})}

    last = {n: (p, cpu_seconds(p)) for n, p in pids().items()}
    while True:
        await asyncio.sleep(every)
        now = {n: (p, cpu_seconds(p)) for n, p in pids().items()}
        # A process restarted since the last sample (another pid) counts from its own start.
        out.append({"t": round(time.time() - t0, 1), "load": os.getloadavg()[0],
                    **{n: round((cpu - (last[n][1] if last.get(n, (0, 0.0))[0] == pid else 0.0)) / every, 3)
                       for n, (pid, cpu) in now.items()}})
        last = now


async def measure(plane: ControlPlane, trees: dict[str, Path], locks: int, settle: float, rounds: int,
                  logs: Path) -> dict[str, Any]:
    tree = next(iter(trees.values()))
    timeline: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    async with abrun.restart_bed(plane, tree, locks, logs, extra_args=STALE_OFF) as bed:
        task = asyncio.create_task(sampler(children_by_name(NAMES), bed, 5.0, timeline, t0))
        marks: dict[str, float] = {"granted": round(time.time() - t0, 1)}
        await asyncio.sleep(settle)
        for index in range(rounds):
            op = bed.op
            op.kill()
            await op.start(within=120)
            await op.quiet(within=120)
            await asyncio.sleep(2)
            marks[f"round{index}_start"] = round(time.time() - t0, 1)
            row = {"round": index, **await one_round(bed, 1000, 200.0, 5.5)}
            marks[f"round{index}_end"] = round(time.time() - t0, 1)
            rows.append(row)
            print({k: row[k] for k in ("round", "p50_ms", "p99_ms", "load1_before", "cpu_s")}, file=sys.stderr)
            await op.quiet(within=120)
        task.cancel()
    return {"marks": marks, "rows": rows, "timeline": timeline}


def main() -> int:
    parser = abrun.parser(__doc__, rounds=3, rounds_help="rounds")
    parser.add_argument("--locks", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=0.0)
    args = parser.parse_args()
    for tree in abrun.trees(args).values():
        compileall.compile_dir(str(tree / "operator" / "kubelock"), quiet=1)
    return abrun.run(args, "settle", lambda plane, trees, logs: measure(
        plane, trees, args.locks, args.settle, args.rounds, logs), locks=args.locks, settle=args.settle)


if __name__ == "__main__":
    sys.exit(main())
