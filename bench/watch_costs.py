"""What re-watching costs the API server: idle watches of kubelock's kinds, each asking the server to
end it after T seconds (`timeoutSeconds`) and started again from its last version when it ends, as
the operator's watches and the SDK's do. Variants of T alternated in rounds on one control plane;
each round's figure the kube-apiserver's CPU (utime+stime) over a window and the watch requests made
in it. What a shorter server-side watch timeout (a tighter bound on a watch left silent by a frozen
path) costs, apart from everything else a cycle does.

    KUBELOCK_BIN_DIR=... PYTHONPATH=operator .venv/bin/python bench/watch_costs.py OUT_DIR \\
        [--scopes 100] [--timeouts 300,60,10] [--window 60] [--rounds 4]

Each scope is a namespace with the three watches the operator keeps per scope (claims, locks,
policies). Each watch's first timeout is drawn from 1..T so that the re-watches spread over time, as
in an operator that has run a while; nothing is written, so the watches deliver only bookmarks.
`idle` is the same window with no watch open: the API server's own background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import options
from harness import RequestTally, children_by_name, cpu_seconds, ensure_namespace

from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.errors import ApiError, Unreachable
from kubelock.testbed import ControlPlane, find_binaries

REPO = Path(__file__).resolve().parent.parent
KINDS = (paths.claims, paths.locks, paths.policies)


async def rewatch(client: KubeClient, path: str, version: str, server_seconds: int, started: list[int]) -> None:
    """Watch `path` from `version` until cancelled, each request ended by the server after
    `server_seconds` (the first after 1..server_seconds)."""
    first = True
    while True:
        seconds = random.randint(1, server_seconds) if first else server_seconds
        first = False
        started[0] += 1
        try:
            async for event in client.watch(path, resource_version=version, timeout_seconds=seconds):
                version = (event.get("object") or {}).get("metadata", {}).get("resourceVersion") or version
        except (ApiError, Unreachable) as error:
            print(f"watch {path}: {error}", file=sys.stderr, flush=True)
            await asyncio.sleep(1)


async def window(client: KubeClient, apiserver: int, scopes: list[str], versions: dict[str, str],
                 server_seconds: int | None, seconds: float) -> dict[str, float]:
    started = [0]
    tasks = []
    if server_seconds is not None:
        tasks = [asyncio.create_task(rewatch(client, kind(ns), versions[kind(ns)], server_seconds, started))
                 for ns in scopes for kind in KINDS]
    await asyncio.sleep(3)  # the watches are established; their first requests are not counted
    counted, before, wall = started[0], cpu_seconds(apiserver), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, requests, wall = cpu_seconds(apiserver) - before, started[0] - counted, time.monotonic() - wall
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {"cpu_ms_per_min": cpu * 1000 * 60 / wall, "watches_per_min": requests * 60 / wall,
            "load1": os.getloadavg()[0]}


async def measure(plane: ControlPlane, scopes: int, timeouts: list[int | None], seconds: float,
                  rounds: int) -> dict[str, list[dict[str, float]]]:
    credentials = config.load(plane.kubeconfig)
    watches = scopes * len(KINDS)
    async with KubeClient(credentials, timeout=60.0, retries=3, on_request=RequestTally(),
                          connections=watches + 20, user_agent="kubelock-bench") as client:
        names = [await ensure_namespace(client, f"watch-costs-{i}") for i in range(scopes)]
        versions = {}
        for ns in names:
            for kind in KINDS:
                listed = await client.get(kind(ns))
                versions[kind(ns)] = listed["metadata"]["resourceVersion"]
        apiserver = children_by_name(["kube-apiserver"])["kube-apiserver"]
        label = {t: "idle" if t is None else f"T={t}" for t in timeouts}
        results: dict[str, list[dict[str, float]]] = {label[t]: [] for t in timeouts}
        for round_ in range(rounds):
            shift = round_ % len(timeouts)  # each variant first in turn
            for timeout in timeouts[shift:] + timeouts[:shift]:
                figures = await window(client, apiserver, names, versions, timeout, seconds)
                results[label[timeout]].append(figures)
                print(f"round {round_} {label[timeout]}: {figures['cpu_ms_per_min']:.0f} ms CPU/min, "
                      f"{figures['watches_per_min']:.0f} watches/min, load {figures['load1']:.1f}", flush=True)
        return results


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--scopes", type=int, default=100, help="namespaces, three watches each")
    parser.add_argument("--timeouts", default="idle,300,60,10", help="server-side watch timeouts (idle: none open)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per variant and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    timeouts: list[int | None] = [None if t == "idle" else int(t) for t in args.timeouts.split(",")]
    plane = ControlPlane(args.out / "control-plane", bin_dir=find_binaries(), manifests=[REPO / "crds"])
    plane.start()
    try:
        results = asyncio.run(measure(plane, args.scopes, timeouts, args.window, args.rounds))
    finally:
        plane.stop()
    medians = {k: {f: round(statistics.median(r[f] for r in v), 1) for f in ("cpu_ms_per_min", "watches_per_min")}
               for k, v in results.items()}
    print("medians:", medians)
    (args.out / "watch-costs.json").write_text(
        json.dumps({"scopes": args.scopes, "window_seconds": args.window, "rounds": results, "medians": medians},
                   indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
