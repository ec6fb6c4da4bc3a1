"""`kubelock list` among many claims: `python bench/list_costs.py [--claims 10000] [--rounds 8]`.

One agent's claims (`--mine`, 10 by default) among `--claims` Held claims of 1 000 other holders in
one namespace, each claim labelled as the SDK labels it (holder-hash). Three ways of finding that
agent's claims, on one control plane, in interleaved rounds:

- `all`: every claim of the namespace, filtered by the client (what `list()` with an instance did
  since it finds claims written as YAML, which have no holder-hash label);
- `label`: the claims with the holder's holder-hash label (what it did before; misses YAML claims);
- `field`: the claims whose `spec.holder` is the holder's, selected by the API server
  (`kubelock.sdk.listing.holder_claims`, the CRD's selectable field `.spec.holder`).

For each: the wall time of one complete (paginated, 500 a page) listing, the bytes the API server
answered (its `apiserver_response_sizes` of LIST lockclaims), the LIST requests, and the API
server's CPU seconds, per listing. Prints and writes (`--out`) the medians with the machine's load.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/list_costs.py --out FILE
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import abrun
import options
from harness import (
    REPO,
    OperatorProcess,
    RequestTally,
    Watch,
    children_by_name,
    cpu_seconds,
    current_version,
    ensure_namespace,
    gather_limited,
    new_client,
    parse_counter,
    scrape,
)
from scenarios import HELD, claim_body

from kubelock.api.constants import HOLDER_HASH_LABEL
from kubelock.domain.resource import digest
from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.sdk.listing import holder_claims
from kubelock.testbed import ControlPlane, find_binaries

NAMESPACE = "bench-list"
ME = "user:agent-me/w1"
# Listings per round and way: a selected LIST costs the API server milliseconds, under a CPU tick.
REPEATS = {"all": 2, "label": 10, "field": 10}


def holder(i: int) -> str:
    return f"user:agent-{i % 1000}/w1"


async def fill(client: KubeClient, watcher: KubeClient, claims: int, mine: int) -> float:
    """`claims` Held claims of 1 000 holders and `mine` of ME, each labelled as the SDK does."""
    began = time.perf_counter()
    path = paths.claims(NAMESPACE)
    owners = {f"c-{i}": holder(i) for i in range(claims)} | {f"me-{i}": ME for i in range(mine)}
    async with Watch(watcher, path, resource_version=await current_version(client, path)) as watch:
        await gather_limited(
            list(owners),
            lambda n: client.create(path, claim_body(n, f"bench://list/{n}", owners[n], ttl=86400,
                                                     labels={HOLDER_HASH_LABEL: digest(owners[n])})),
            32,
        )
        await gather_limited(list(owners), lambda n: watch.wait_for(n, HELD, 900), len(owners))
    return time.perf_counter() - began


async def one_way(way: str, client: KubeClient) -> int:
    """One listing of ME's claims in `way`; how many it found."""
    path = paths.claims(NAMESPACE)
    if way == "field":
        return len(await holder_claims(client, NAMESPACE, ME))
    if way == "label":
        items, _ = await client.list_all(path, labelSelector=f"{HOLDER_HASH_LABEL}={digest(ME)}")
    else:
        items, _ = await client.list_all(path)
    return sum(1 for b in items if b["spec"]["holder"] == ME)


async def apiserver_lists(client: KubeClient) -> tuple[int, int]:
    """(bytes answered, requests) of LIST lockclaims so far, by the API server's own metrics."""
    text = await scrape(f"{client.credentials.server}/metrics", client.credentials.ssl_context())
    sizes = parse_counter(text, "apiserver_response_sizes_sum", ("verb", "resource"))
    counts = parse_counter(text, "apiserver_request_total", ("verb", "resource"))
    return sizes[("LIST", "lockclaims")], counts[("LIST", "lockclaims")]


async def measure(plane: ControlPlane, claims: int, mine: int, rounds: int, logs: Path) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    tally = RequestTally()
    apiserver = children_by_name(["kube-apiserver"])["kube-apiserver"]
    async with new_client(credentials, tally) as client, new_client(credentials, tally) as watcher:
        await ensure_namespace(client, NAMESPACE)
        op = OperatorProcess("kubelock", plane.kubeconfig, NAMESPACE, logs)
        await op.start(within=90)
        try:
            filled = await fill(client, watcher, claims, mine)
        finally:
            op.stop()  # the claims stay Held; only the listings are measured
        print(f"{claims + mine} Held claims in {filled:.1f} s", file=sys.stderr)
        samples: list[dict[str, Any]] = []
        for index in range(rounds):
            order = list(REPEATS) if index % 2 == 0 else list(REPEATS)[::-1]
            for way in order:
                repeats = REPEATS[way]
                bytes0, lists0 = await apiserver_lists(client)
                cpu0, wall0 = cpu_seconds(apiserver), time.perf_counter()
                found = [await one_way(way, client) for _ in range(repeats)]
                wall, cpu = time.perf_counter() - wall0, cpu_seconds(apiserver) - cpu0
                bytes1, lists1 = await apiserver_lists(client)
                samples.append({
                    "round": index, "way": way, "found": found[0], "seconds": round(wall / repeats, 4),
                    "apiserver_cpu_s": round(cpu / repeats, 4), "bytes": (bytes1 - bytes0) // repeats,
                    "lists": (lists1 - lists0) / repeats, "load1": round(os.getloadavg()[0], 2),
                })
                print(samples[-1], file=sys.stderr, flush=True)
    out: dict[str, Any] = {"filled_s": round(filled, 1), "samples": samples}
    for way in REPEATS:
        mine_ = [s for s in samples if s["way"] == way]
        out[way] = {k: statistics.median(s[k] for s in mine_) for k in ("seconds", "apiserver_cpu_s", "bytes", "lists")}
        out[way]["found"] = sorted({s["found"] for s in mine_})
    return out


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("--claims", type=int, default=10000)
    parser.add_argument("--mine", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    options.add_outputs(parser)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-list-"))
    load_before = os.getloadavg()
    plane = ControlPlane(workdir / "control-plane", bin_dir=find_binaries(),
                         manifests=[REPO / "crds", REPO / "config/rbac"])
    plane.start()
    try:
        result = asyncio.run(measure(plane, args.claims, args.mine, args.rounds, workdir / "logs"))
    finally:
        plane.stop()
    document = {"claims": args.claims, "mine": args.mine, "rounds": args.rounds, "repeats": REPEATS,
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()], **result}
    return abrun.report(document, args.out)


if __name__ == "__main__":
    sys.exit(main())
