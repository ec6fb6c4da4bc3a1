"""Does the operator's claim watch go quiet while the API server has events for it? `python bench/watch_gaps.py TREE`

#4's scenario (`scenarios.expiry`, as `expiry_ab.py` runs it) among `--locks` held locks, `--rounds`
times, with the operator of TREE logging each watch request's events and largest gap
(`--debug kubelock.watches`) and witnesses beside it, all stamped on arrival: a plain watch of the
namespace's LockClaims through the official client (urllib3: no code shared with the operator's
aiohttp client; resumed from its last version whenever the server ends it), and the operator's
`kubelock_watch_events_total` / `kubelock_watch_last_event_age_seconds` of its claim watch, read every
`--every` seconds. Per round: the events the plain watch saw and the operator's claim watch
delivered, the plain watch's largest gap, the operator's largest age, the largest lag (the operator's
age less the plain watch's at the same moment: a stalled operator watch shows as a lag that grows
while the plain watch's stays small), the API server's count of LockClaim watchers it closed for
reading too slowly (`apiserver_terminated_watchers_total`, every client's) and the operator's claim
watch requests the server ended before their timeout (from its log). Writes `--out` (JSON) and the
operator's logs under `--workdir`.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/watch_gaps.py . --locks 10000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import compileall
import itertools
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import abrun
import options
import scenarios
from blocks import STALE_OFF
from harness import parse_counter, scrape
from kubernetes import watch
from kubernetes.client import ApiException, CustomObjectsApi
from kubernetes.config import new_client_from_config

from kubelock.api.constants import CLAIM_PLURAL, GROUP, VERSION
from kubelock.kube.client import WATCH_SECONDS
from kubelock.kube.config import Credentials
from kubelock.testbed import ControlPlane

ENDED = re.compile(r"claim watch of .* ended by the server after ([0-9.]+) s")
SAMPLE = re.compile(r'^kubelock_watch_(events_total|last_event_age_seconds)\{kind="claim",scope="([^"]*)"\} (\S+)$')


def current_version(api: CustomObjectsApi, namespace: str) -> str:
    """The namespace's LockClaims' list version (the client's annotations say `object`: it is a dict)."""
    listed = cast(dict[str, Any], api.list_namespaced_custom_object(GROUP, VERSION, namespace, CLAIM_PLURAL, limit=1))
    return str(listed["metadata"]["resourceVersion"])


def plain_watch(kubeconfig: Path, namespace: str, arrivals: list[float], stop: threading.Event,
                ends: list[str]) -> None:
    """Stamp every event (bookmarks not: the API server sends each watcher its own, at its own times)
    of the namespace's LockClaims until `stop`, through the
    official client (urllib3: no code shared with the operator's aiohttp client), resuming each
    watch where the last ended as the operator does; `ends` gets how each watch request ended."""
    api = CustomObjectsApi(new_client_from_config(config_file=str(kubeconfig)))
    version = current_version(api, namespace)
    while not stop.is_set():
        began = time.monotonic()
        try:
            event: dict[str, Any]
            for event in watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                              CLAIM_PLURAL, resource_version=version, allow_watch_bookmarks=True,
                                              timeout_seconds=WATCH_SECONDS):
                if event["type"] != "BOOKMARK":
                    arrivals.append(time.monotonic())
                version = event["object"]["metadata"]["resourceVersion"]
                if stop.is_set():
                    return
            ends.append(f"ended by the server after {time.monotonic() - began:.1f} s")
        except ApiException as error:
            ends.append(f"{error.status} after {time.monotonic() - began:.1f} s")
            if error.status == 410:
                version = current_version(api, namespace)


async def sample_operator(port: int, every: float, samples: list[tuple[float, float, float, float]]) -> None:
    """(sent, answered, events, age) of the operator's claim watch every `every` seconds until
    cancelled: the age was taken between the request's sending and its answer (a busy operator
    answers late)."""
    while True:
        sent = time.monotonic()
        try:
            text = await scrape(f"http://127.0.0.1:{port}/metrics")
        except Exception:  # the operator restarting between rounds
            text = ""
        answered = time.monotonic()
        found: dict[str, float] = {}
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if match:
                found[match.group(1)] = float(match.group(3))
        if len(found) == 2:
            samples.append((sent, answered, found["events_total"], found["last_event_age_seconds"]))
        await asyncio.sleep(every)


async def terminated_watchers(credentials: Credentials) -> int:
    """The API server's count of LockClaim watchers it closed for not reading fast enough (its watch
    cache's buffer for them full)."""
    text = await scrape(f"{credentials.server}/metrics", credentials.ssl_context())
    return sum(n for (resource,), n in parse_counter(text, "apiserver_terminated_watchers_total",
                                                      ("resource",)).items() if resource == CLAIM_PLURAL)


def ended_early(log: Path, since: int) -> list[float]:
    """Seconds of the operator's claim watch requests the server ended before their timeout (its log
    from byte `since`)."""
    with log.open("rb") as file:
        file.seek(since)
        text = file.read().decode(errors="replace")
    return [float(m.group(1)) for m in ENDED.finditer(text) if float(m.group(1)) < WATCH_SECONDS - 5]


def summarise(arrivals: list[float], samples: list[tuple[float, float, float, float]], began: float) -> dict[str, Any]:
    """The lag is a lower bound: the operator's last delivery was at most `answered - age`, and the
    plain watch's last arrival before the read was sent came after it by this much (0: none did)."""
    arrivals = [a for a in arrivals if a >= began]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    lags: list[tuple[float, float]] = []
    for sent, answered, _, age in samples:
        index = bisect.bisect_right(arrivals, sent)
        if index:
            lags.append((arrivals[index - 1] - (answered - age), sent - began))
    lag, at = max(lags, default=(0.0, 0.0))
    return {
        "plain_events": len(arrivals),
        "plain_largest_gap_s": round(max(gaps, default=0.0), 2),
        "operator_events": int(samples[-1][2] - samples[0][2]) if samples else 0,
        "operator_largest_age_s": round(max((s[3] for s in samples), default=0.0), 2),
        "largest_lag_s": round(max(0.0, lag), 2),
        "largest_lag_at_s": round(at, 1),
        "slowest_read_s": round(max((s[1] - s[0] for s in samples), default=0.0), 2),
        "samples": len(samples),
    }


async def measure(plane: ControlPlane, tree: Path, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    extra = (*STALE_OFF, "--debug", "kubelock.watches")
    async with abrun.restart_bed(plane, tree, args.locks, logs, extra_args=extra) as bed:
        op = bed.op
        arrivals: list[float] = []
        stop, ends = threading.Event(), list[str]()
        watcher = threading.Thread(target=plain_watch, args=(plane.kubeconfig, bed.namespace, arrivals, stop, ends),
                                   daemon=True)
        watcher.start()
        try:
            for index in range(args.rounds):
                op.kill()
                await op.start(within=120)
                await op.quiet(within=120)
                await asyncio.sleep(2)
                samples: list[tuple[float, float, float, float]] = []
                sampler = asyncio.create_task(sample_operator(op.metrics_port, args.every, samples))
                began, load = time.monotonic(), os.getloadavg()[0]
                terminated, logged = await terminated_watchers(bed.env.credentials), op.log_path.stat().st_size
                result = await scenarios.expiry(bed.env, bed.namespace, args.expiring, args.rate, args.window)
                await op.quiet(within=120)
                sampler.cancel()
                row = {"round": index, "seconds": round(time.monotonic() - began, 1), "load1_before": round(load, 1),
                       "load1_after": round(os.getloadavg()[0], 1), "renewed_late": result.renewed_late,
                       "outside": result.outside, **summarise(arrivals, samples, began),
                       "plain_watch_ends": [e for e in ends if not e.startswith("ended by the server after 6")],
                       "claim_watchers_terminated": await terminated_watchers(bed.env.credentials) - terminated,
                       "claim_watches_ended_early_s": ended_early(op.log_path, logged), "log": str(op.log_path)}
                rows.append(row)
                print(row, file=sys.stderr)
        finally:
            stop.set()
    return {"rounds_detail": rows}


def main() -> int:
    parser = options.parser(__doc__, whole_doc=True)
    parser.add_argument("tree", type=Path, help="the operator's tree")
    parser.add_argument("--locks", type=int, default=10_000, help="held locks the expiries are among")
    parser.add_argument("--expiring", type=int, default=1000, help="leases ending at once")
    parser.add_argument("--rate", type=float, default=200.0, help="expiring claims created (and renewed) a second")
    parser.add_argument("--window", type=float, default=5.5, help="seconds the leases are made to end within")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between two reads of the operator's metrics")
    options.add_outputs(parser)
    args = parser.parse_args()
    tree = args.tree.resolve()
    compileall.compile_dir(str(tree / "operator" / "kubelock"), quiet=1)
    measured = abrun.on_plane(args.workdir, "watch-gaps", lambda plane, trees, logs: measure(plane, tree, args, logs),
                              {"A": tree})
    return abrun.report({"tree": str(tree), "locks": args.locks, "expiring": args.expiring, "rate": args.rate,
                         "window": args.window, "rounds": args.rounds, **measured}, args.out)


if __name__ == "__main__":
    sys.exit(main())
