"""What kopf's watch of holder pods costs at two server-side timeouts, and what one LIST of the holder
pods costs: should the pod watch's `settings.watching.server_timeout` (300 s) be shortened to the
operator's own watches' 60 s (`kube/client.WATCH_SECONDS`)?

    KUBELOCK_BIN_DIR=... PYTHONPATH=operator .venv/bin/python bench/kopf_pod_watch.py OUT_DIR \\
        [--pods 1000] [--timeouts 300,60] [--window 150] [--rounds 2] [--lists 10]

On one control plane: `--pods` holder pods (labelled, never scheduled: nothing changes them) in one
namespace. First `--lists` LISTs of them as kopf makes one (one request, no `limit`) and as the
operator's resync makes one (pages of 500), each with the kube-apiserver's CPU (utime+stime) over it.
Then the operator, scoped to that namespace, runs once per variant and round with kopf's pod watch
ended by the server after T seconds (a startup handler added after the operator's own sets it); over
each window the API server's own count of namespaced pod LISTs and WATCHes (`apiserver_request_total`,
`scope="namespace"`: only the operator makes those) and its CPU. kopf LISTs again only when its watch
cannot resume (410 Gone); a watch that ends, or delivers nothing for
`settings.watching.inactivity_timeout` (70 s), is started again from its last version.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import options
from harness import children_by_name, cpu_seconds, ensure_namespace, parse_counter, scrape

from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.testbed import ControlPlane, find_binaries
from kubelock.testbed.processes import free_port

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "kopf-pod-watch"
SELECTOR = "kubelock.dev/lock-holder=true"
# The operator as `python -m kubelock.operator` runs it, with one more startup handler (run after the
# operator's own, which sets 300 s + 330 s) that sets kopf's pod watch to T s + 30 s.
OPERATOR = """
import sys, kopf
from kubelock.operator import main as operator_main
T = int(sys.argv.pop(1))
build = operator_main.build_registry
def with_timeout(runtime):
    registry = build(runtime)
    @kopf.on.startup(registry=registry)
    async def server_timeout(settings, **_):
        settings.watching.server_timeout = T
        settings.watching.client_timeout = T + 30
    return registry
operator_main.build_registry = with_timeout
from kubelock.operator.launch import main
main()
"""


async def requests(credentials: Credentials) -> Counter[tuple[str, ...]]:
    """Every request the API server counted, by (verb, resource, scope)."""
    text = await scrape(f"{credentials.server}/metrics", credentials.ssl_context())
    return parse_counter(text, "apiserver_request_total", ("verb", "resource", "scope"))


async def make_pods(client: KubeClient, count: int) -> None:
    async def one(i: int) -> None:
        await client.create(paths.pods(NAMESPACE), {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"holder-{i}", "labels": {"kubelock.dev/lock-holder": "true"}},
            "spec": {"containers": [{"name": "agent", "image": "agent:latest"}]},
        })
    for start in range(0, count, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))


async def list_costs(client: KubeClient, apiserver: int, lists: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {"one request (kopf)": [], "pages of 500 (resync)": []}
    for _ in range(lists):
        for label in out:
            cpu, wall = cpu_seconds(apiserver), time.monotonic()
            if label.startswith("one"):
                body = await client.list(paths.pods(NAMESPACE), labelSelector=SELECTOR)
                items = len(body.get("items") or [])
            else:
                items = 0
                async for page, _ in client.pages(paths.pods(NAMESPACE), labelSelector=SELECTOR):
                    items += len(page)
            out[label].append({"apiserver_cpu_ms": (cpu_seconds(apiserver) - cpu) * 1000,
                               "wall_ms": (time.monotonic() - wall) * 1000, "items": items})
            await asyncio.sleep(0.5)
    return out


def operator_window(plane: ControlPlane, credentials: Credentials, apiserver: int, timeout: int, seconds: float,
                    log: Path) -> dict[str, Any]:
    argv = [sys.executable, "-c", OPERATOR, str(timeout), "--kubeconfig", str(plane.kubeconfig), "-n", NAMESPACE,
            "--health-address", f"127.0.0.1:{free_port()}", "--metrics-port", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while "watching LockClaims" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(log.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        time.sleep(10)  # kopf's own LIST and first watch are in; they are not counted
        before, cpu, wall = asyncio.run(requests(credentials)), cpu_seconds(apiserver), time.monotonic()
        time.sleep(seconds)
        after = asyncio.run(requests(credentials))
        cpu, wall = cpu_seconds(apiserver) - cpu, time.monotonic() - wall
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    made = after - before
    return {"pod_lists": made["LIST", "pods", "namespace"], "pod_watches": made["WATCH", "pods", "namespace"],
            "apiserver_cpu_ms_per_min": cpu * 1000 * 60 / wall, "window_s": wall, "load1": os.getloadavg()[0],
            "all_requests": {" ".join(key): n for key, n in sorted(made.items())}}


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--timeouts", default="300,60", help="kopf's server-side pod watch timeouts")
    parser.add_argument("--window", type=float, default=150.0, help="seconds measured per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lists", type=int, default=10)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(args.out / "control-plane", bin_dir=find_binaries(), manifests=[REPO / "crds"])
    plane.start()
    try:
        credentials = config.load(plane.kubeconfig)
        apiserver = children_by_name(["kube-apiserver"])["kube-apiserver"]

        async def prepare() -> dict[str, list[dict[str, float]]]:
            async with KubeClient(credentials, timeout=60.0, connections=60, user_agent="kubelock-bench") as client:
                await ensure_namespace(client, NAMESPACE)
                await make_pods(client, args.pods)
                await asyncio.sleep(5)
                return await list_costs(client, apiserver, args.lists)

        lists = asyncio.run(prepare())
        list_medians = {k: {f: round(statistics.median(r[f] for r in v), 1) for f in ("apiserver_cpu_ms", "wall_ms")}
                        for k, v in lists.items()}
        print(f"LIST of {args.pods} holder pods (median of {args.lists}): {list_medians}", flush=True)
        timeouts = [int(t) for t in args.timeouts.split(",")]
        windows: dict[str, list[dict[str, float]]] = {f"T={t}": [] for t in timeouts}
        for round_ in range(args.rounds):
            shift = round_ % len(timeouts)
            for t in timeouts[shift:] + timeouts[:shift]:
                figures = operator_window(plane, credentials, apiserver, t, args.window,
                                          args.out / f"operator-T{t}-r{round_}.log")
                windows[f"T={t}"].append(figures)
                print(f"round {round_} T={t}: {figures['pod_lists']:.0f} pod LISTs, {figures['pod_watches']:.0f} pod "
                      f"WATCHes in {figures['window_s']:.0f} s, API server {figures['apiserver_cpu_ms_per_min']:.0f} "
                      f"ms CPU/min, load {figures['load1']:.1f}", flush=True)
    finally:
        plane.stop()
    (args.out / "kopf-pod-watch.json").write_text(json.dumps(
        {"pods": args.pods, "window_seconds": args.window, "lists": lists, "list_medians": list_medians,
         "windows": windows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
