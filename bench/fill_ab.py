"""#7's fill of two operator trees on one control plane: `python bench/fill_ab.py A_TREE B_TREE`.

Each round starts the operator of each tree in turn (A then B, then B then A) on a namespace of its
own, reads its idle RSS (M0, as #7 does), creates `--locks` held claims with `--in-flight` creates
at a time (32 is #7's pace; fewer is a slower fill), waits until the operator stops writing, and
reads VmRSS right after the fill and again after `--quiet` seconds with nothing to do. `--quiet` is
longer than the operator's settling delay, so the second figure shows what it keeps when a burst is
over. Prints and writes (`--out`) every fill with the load at the time, and the medians over M0.
With KUBELOCK_HEAPFACTS_DIR=DIR the operator also dumps its heap facts into DIR at each reading, and
the allocator is trimmed after the last (`bench/heapfacts/sitecustomize.py`).

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/fill_ab.py /tmp/old . --locks 10000
"""

from __future__ import annotations

import asyncio
import compileall
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import abrun
from blocks import STALE_OFF
from harness import (
    Env,
    OperatorProcess,
    RequestTally,
    Watch,
    current_version,
    ensure_namespace,
    gather_limited,
    new_client,
    rss_mib,
)
from scenarios import HELD, claim_body

from kubelock.kube import config, paths
from kubelock.testbed import ControlPlane

# Heap facts (`bench/heapfacts`): the operator dumps them into this directory at each reading.
FACTS = os.environ.get("KUBELOCK_HEAPFACTS_DIR")

if FACTS:  # the operator's PYTHONPATH is its tree alone: add the directory of that sitecustomize
    import harness

    from kubelock.testbed.processes import start_process as _start

    def _with_facts(name: str, argv: list[str], **kwargs: Any) -> Any:
        env = kwargs["env"]
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{Path(__file__).parent / 'heapfacts'}"
        return _start(name, argv, **kwargs)

    vars(harness)["start_process"] = _with_facts  # the name harness's operators are started through


async def fill(env: Env, namespace: str, count: int, in_flight: int) -> float:
    """`count` held claims created `in_flight` at a time; seconds until all are Held."""
    began = time.perf_counter()
    version = await current_version(env.client, paths.claims(namespace))
    names = [f"live-{i}" for i in range(count)]
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:
        await gather_limited(
            names,
            lambda n: env.client.create(paths.claims(namespace), claim_body(n, f"bench://live/{n}", f"holder-{n}")),
            in_flight,
        )
        await gather_limited(names, lambda n: watch.wait_for(n, HELD, 900), len(names))
    return time.perf_counter() - began


async def rss(pid: int) -> float:
    values = []
    for _ in range(5):
        await asyncio.sleep(0.2)
        values.append(rss_mib(pid))
    return statistics.median(values)


async def facts(op: OperatorProcess, tag: str) -> None:
    """The operator's heap facts as TAG.json in KUBELOCK_HEAPFACTS_DIR (when set)."""
    if not FACTS:
        return
    (Path(FACTS) / "tag").write_text(tag)
    os.kill(op.pid, signal.SIGUSR2)
    for _ in range(300):
        if (Path(FACTS) / f"{tag}.json").exists():
            return
        await asyncio.sleep(0.1)


async def measure(plane: ControlPlane, trees: dict[str, Path], locks: int, rounds: int, in_flight: int,
                  quiet: float, logs: Path) -> dict[str, Any]:
    fills: list[dict[str, Any]] = []
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        env = Env(credentials, client, watcher, tally, "none", True)
        for index in range(rounds):
            for label in trees if index % 2 == 0 else list(trees)[::-1]:
                namespace = await ensure_namespace(client, f"bench-fill-{index}-{label.lower()}")
                op = OperatorProcess("kubelock", plane.kubeconfig, namespace, logs, extra_args=STALE_OFF,
                                     source=trees[label] / "operator")
                await op.start(within=120)
                try:
                    await asyncio.sleep(1.5)
                    m0 = await rss(op.pid)
                    await facts(op, f"{index}-{label}-m0")
                    seconds = await fill(env, namespace, locks, in_flight)
                    drained = await op.quiet(within=180)
                    await asyncio.sleep(1)
                    filled = await rss(op.pid)
                    await facts(op, f"{index}-{label}-filled")
                    await asyncio.sleep(quiet)
                    rested = await rss(op.pid)
                    await facts(op, f"{index}-{label}-rested")
                    await facts(op, f"{index}-{label}-rested-trim")
                finally:
                    op.stop()
                fills.append({"round": index, "tree": label, "grants_per_s": round(locks / seconds, 1),
                              "drained_s": drained, "load1": round(os.getloadavg()[0], 1), "m0_mib": round(m0, 1),
                              "filled_over_m0": round(filled - m0, 1), "rested_over_m0": round(rested - m0, 1)})
                print(fills[-1], file=sys.stderr, flush=True)
    out: dict[str, Any] = {"fills": fills}
    for label in trees:
        mine = [f for f in fills if f["tree"] == label]
        out[label] = {key: statistics.median(f[key] for f in mine)
                      for key in ("m0_mib", "filled_over_m0", "rested_over_m0", "grants_per_s")}
    return out


def main() -> int:
    parser = abrun.parser(__doc__, rounds=2, rounds_help="rounds of one fill of each tree")
    parser.add_argument("--locks", type=int, default=10_000, help="held locks a fill creates")
    parser.add_argument("--in-flight", type=int, default=32, help="creates in flight (32: #7's pace)")
    parser.add_argument("--quiet", type=float, default=20.0, help="seconds idle before the second reading")
    args = parser.parse_args()
    for tree in abrun.trees(args).values():  # bytecode, as the image has (`harness.compile_operators`)
        compileall.compile_dir(str(tree / "operator" / "kubelock"), quiet=1)
    fills = lambda plane, trees, logs: measure(  # noqa: E731
        plane, trees, args.locks, args.rounds, args.in_flight, args.quiet, logs)
    return abrun.run(args, "fill", fills, locks=args.locks, in_flight=args.in_flight, quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
