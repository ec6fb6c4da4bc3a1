"""What one more grant on a lock costs the API server, by the lock's grants and the write's form:
`python bench/grant_write_costs.py [--grants 0,10] [--rounds 30] [--out FILE]`.

No operator: on one control plane (admission policies on, as `run.py`), the bench client (a cluster
admin) makes #10's write itself, a grant added to a ResourceLock that holds `G` grants and then taken
out again, in these forms, taken in turns each round:

- `merge`: the operator's JSON merge patch (`codec.grants_patch`: every grant, conditional on the
  version read);
- `json`: a JSON patch (RFC 6902) of the same change: a `test` of the version, the added entry, the
  holders' count;
- `put`: the whole object, with its version;

and as a baseline the create and delete of a lock of one grant (#1's write); `--watch` keeps a watch
of the namespace's locks open in every other pair of rounds, as the operator does (rows "watched"). Per form and G: the
median and p90 of the client's time per write, and the API server's own mean time per PATCH/PUT
(`apiserver_request_duration_seconds`), with the load.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import options
from harness import RequestTally, Watch, ensure_namespace, measured_on_deployed_plane, new_client

from kubelock.api.constants import GROUP, VERSION
from kubelock.kube import config, paths
from kubelock.testbed import ControlPlane

NS = "bench-grant-writes"
STAMP = "2026-11-28T00:00:00Z"


def grant(i: int, token: int) -> dict[str, Any]:
    return {"holder": f"agent-{i}/x", "claimRef": {"name": f"c-{i}", "uid": f"00000000-0000-0000-0000-{i:012d}"},
            "leaseDurationSeconds": 300, "acquireTime": STAMP, "renewTime": STAMP,
            "expireTime": "2026-11-28T00:05:00Z", "fencingToken": token, "mode": "Shared", "permits": 1}


def lock(name: str, grants: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceLock", "metadata": {"name": name},
            "spec": {"resource": f"bench://grant-writes/{name}", **grant(0, 0), "holders": grants + 1,
                     **({"grants": [grant(i, 0) for i in range(1, grants + 1)]} if grants else {})}}


def tokens_resolved(spec: dict[str, Any], version: int) -> None:
    """Every grant with token 0 gets the version (admission: the write records it)."""
    if spec.get("fencingToken") == 0:
        spec["fencingToken"] = version
    for g in spec.get("grants") or []:
        if g.get("fencingToken") == 0:
            g["fencingToken"] = version


async def one(client: Any, form: str, name: str, body: dict[str, Any], extra: int) -> tuple[float, dict[str, Any]]:
    """Add grant `extra` to the lock `body` (as last read) in `form`; the time and the lock after."""
    version = body["metadata"]["resourceVersion"]
    spec = copy.deepcopy(body["spec"])
    tokens_resolved(spec, int(version))
    added = grant(extra, 0)
    path = paths.locks(NS, name)
    t0 = time.perf_counter()
    if form == "merge":
        patch = {"metadata": {"resourceVersion": version},
                 "spec": {**{k: v for k, v in spec.items() if k not in ("grants", "resource")},
                          "grants": [*(spec.get("grants") or []), added], "holders": spec["holders"] + 1}}
        out = await client.patch(path, patch)
    elif form == "json":
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}]
        if body["spec"].get("fencingToken") == 0:
            ops.append({"op": "replace", "path": "/spec/fencingToken", "value": int(version)})
        for i, g in enumerate(body["spec"].get("grants") or []):
            if g.get("fencingToken") == 0:
                ops.append({"op": "replace", "path": f"/spec/grants/{i}/fencingToken", "value": int(version)})
        ops.append({"op": "add", "path": "/spec/grants/-" if body["spec"].get("grants") else "/spec/grants",
                    "value": added if body["spec"].get("grants") else [added]})
        ops.append({"op": "replace", "path": "/spec/holders", "value": spec["holders"] + 1})
        out = await client.request("PATCH", path, body=ops, content_type="application/json-patch+json", verb="patch")
    else:
        whole = copy.deepcopy(body)
        whole["spec"] = {**spec, "grants": [*(spec.get("grants") or []), added], "holders": spec["holders"] + 1}
        out = await client.replace(path, whole)
    return time.perf_counter() - t0, out


async def remove_last(client: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(body["spec"])
    tokens_resolved(spec, int(body["metadata"]["resourceVersion"]))
    rest = spec["grants"][:-1]
    patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
             "spec": {"grants": rest or None, "holders": spec["holders"] - 1, "fencingToken": spec["fencingToken"]}}
    removed: dict[str, Any] = await client.patch(paths.locks(NS, name), patch)
    return removed


async def measure(plane: ControlPlane, args: argparse.Namespace) -> dict[str, Any]:
    credentials = config.load(plane.kubeconfig)
    forms = ["merge", "json", "put"]
    times: dict[str, list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(new_client(credentials, RequestTally()))
        await ensure_namespace(client, NS)
        watcher = await stack.enter_async_context(new_client(credentials, RequestTally()))
        bodies = {}
        for g in args.grants:
            name = f"lock-{g}"
            bodies[g] = await client.create(paths.locks(NS), lock(name, g))
        for r in range(args.rounds):
            # With --watch, every other pair of rounds keeps a watch of the locks open, as the operator does.
            watching = args.watch and r % 4 >= 2
            async with contextlib.AsyncExitStack() as round_stack:
                if watching:
                    await round_stack.enter_async_context(Watch(watcher, paths.locks(NS)))
                for form in forms if r % 2 == 0 else list(reversed(forms)):
                    for g in args.grants:
                        name = f"lock-{g}"
                        spent, after = await one(client, form, name, bodies[g], 1000 + r)
                        times.setdefault(f"{form} G={g}{' watched' if watching else ''}", []).append(spent)
                        bodies[g] = await remove_last(client, name, after)
            t0 = time.perf_counter()
            created = await client.create(paths.locks(NS), lock(f"bare-{r}", 0))
            times.setdefault("create (#1)", []).append(time.perf_counter() - t0)
            await client.delete(paths.locks(NS, created["metadata"]["name"]))
        text = await harness.scrape(f"{credentials.server}/metrics", credentials.ssl_context())
    server: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_duration_seconds_") and 'resource="resourcelocks"' in line:
            match = harness._SAMPLE.match(line)
            if match is None:
                continue
            labels = dict(harness._LABEL.findall(match["labels"]))
            part = "sum" if match["name"].endswith("_sum") else "count" if match["name"].endswith("_count") else None
            if part:
                server.setdefault(labels["verb"], {"sum": 0.0, "count": 0.0})[part] += float(match["value"])
    return {"client_ms": {k: {"n": len(v), "median": round(1000 * statistics.median(v), 2),
                              "p90": round(1000 * sorted(v)[int(0.9 * len(v))], 2)} for k, v in times.items()},
            "server_mean_ms": {k: round(1000 * v["sum"] / v["count"], 2) for k, v in server.items() if v["count"]}}


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("--grants", type=lambda s: [int(x) for x in s.split(",")], default=[0, 10])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--watch", action="store_true", help="a watch of the locks open in every other pair of rounds")
    options.add_outputs(parser)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubelock-grant-writes-"))
    result, loads = measured_on_deployed_plane(workdir, lambda plane: measure(plane, args))
    document = {"watch": args.watch, **loads, **result}
    text = json.dumps(document, indent=1)
    print(text)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
