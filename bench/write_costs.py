"""API-server CPU per write of each kind kubelock makes, with no operator running: variants of one
write alternated in rounds on one control plane, each round's figure the kube-apiserver's CPU
(utime+stime) over K requests divided by K. What a change to a write's body or verb costs the API
server, apart from the rest of a cycle and from the load of the moment (report the median of the
rounds and how often one variant was below the other).

    KUBELOCK_BIN_DIR=... PYTHONPATH=operator .venv/bin/python bench/write_costs.py OUT_DIR \\
        [--only status-patch,status-put] [--requests 600] [--rounds 10]

Variants: `lock+label` / `lock-nolabel` (a ResourceLock as the operator creates it, then deleted),
`claim` (a LockClaim created and deleted), `status-patch` / `status-put` (a claim's whole status
written as a merge patch or as a PUT of /status, alternating Held and Pending so that every write
changes the claim). Each `--alt-crd FILE` (a LockClaim CRD, e.g. another tree's
`crds/kubelock.dev_lockclaims.yaml`) is installed beside the real one under the group
`alt<i>.kubelock.dev` (i counting the option from 0), and `claim@alt<i>`, `status-put@alt<i>` and
`status-patch@alt<i>` make the same writes to it: several schemas (say, sets of CEL rules) compared on
one API server; a ResourceLock CRD given to `--alt-crd` adds `lock-precond@alt<i>` and
`lock-renew@alt<i>`. `lock-precond` deletes the lock with the uid precondition the operator's delete
carries; `lock-renew` is a lock's renewal as the operator patches it (the lease's fields and the
token, conditional on the lock's version; ten locks, each renewed again and again);
`status-put-lean` writes a Held status without `message`, `conditions` and `grants` (what those
promised fields cost), `status-put-nostale` without the `Stale=False` condition;
`status-put-words` a Held status with the operator's messages at their length in #2, and
`status-put-slim` the same with short condition messages (every field kept).
`--pad 0,1000,3000` adds `lock-pad0`, `lock-pad1000`, `lock-pad3000`: a ResourceLock created and deleted
with an annotation of that many bytes (`lock-pad0` none), so that the cost of a write's size alone is
measured apart from its kind.
`status-put-expired` alternates a Held status and an `Expired` one as the operator writes them (the
Held→Expired of a lease's end), `-nocond` the same with the Expired without `conditions`, `-condmsg0`
with its `Held=False` condition without a `message`: what a leaner `Expired` would save. `--as-operator`
also makes every chosen write as the operator's ServiceAccount (a token bound to the
`kubelock-operator` ClusterRole, as the chart deploys it) under the name `<variant>@sa`: the admin
certificate's per-request x509 verification and the `system:masters` shortcut against a cached
token and RBAC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import options
import yaml
from harness import RequestTally, children_by_name, cpu_seconds, ensure_namespace, new_client

from kubelock.api.constants import API_VERSION, GROUP
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.testbed import ControlPlane, find_binaries

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the chaos suite's token helpers
from chaos import identities

REPO = Path(__file__).resolve().parent.parent
NS = "write-costs"
CONCURRENCY = 10
Body = dict[str, Any]
Write = Callable[[int, int], Awaitable[None]]


PAD_ANNOTATION = "bench.kubelock.dev/pad"


def lock_body(name: str, label: bool, pad: int = 0) -> Body:
    now = to_rfc3339(time.time())
    meta: Body = {"name": name, "namespace": NS}
    if label:
        meta["labels"] = {"app.kubernetes.io/managed-by": "kubelock-operator"}
    if pad:
        meta["annotations"] = {PAD_ANNOTATION: "x" * pad}
    return {
        "apiVersion": API_VERSION, "kind": "ResourceLock", "metadata": meta,
        "spec": {
            "resource": f"bench://cycle/x/{name}", "holder": "agent-1",
            "claimRef": {"name": name, "uid": "d8488f20-c78d-4787-a495-5101854b3170"},
            "leaseDurationSeconds": 1800, "acquireTime": now, "renewTime": now, "expireTime": now,
            "fencingToken": 0,
        },
    }


def claim_body(name: str, wait: bool) -> Body:
    return {"apiVersion": API_VERSION, "kind": "LockClaim", "metadata": {"name": name},
            "spec": {"resource": f"bench://cycle/x/{name}", "holder": "agent-1", "wait": wait}}


def lean(status: Body) -> Body:
    """A Held status without what a reader can derive: `message`, `conditions`, `grants`."""
    return {k: v for k, v in status.items() if k not in ("message", "conditions", "grants")}


def as_operator_words(status: Body) -> Body:
    """A Held status with the operator's messages at their length in #2 (a `bench://cycle/...`
    resource in `message` and the `Held` condition, the `Stale=False` condition's long message)."""
    if status.get("phase") != "Held":
        return status
    token = status["fencingToken"]
    message = f"agent-1 holds bench://cycle/c-0a1b2c/17/{token:08d} (fencing token {token})"
    stale = "renewed on schedule (holders renew every third of the lease)"
    return {**status, "message": message,
            "conditions": [{**c, "message": message if c["type"] == "Held" else stale} for c in status["conditions"]]}


def slim(status: Body) -> Body:
    """`as_operator_words` with every field, its conditions' messages short: `Stale=False` as
    docs/api.md words it ("renewed on schedule"), `Held=True` not repeating `status.message`."""
    status = as_operator_words(status)
    if status.get("phase") != "Held":
        return status
    short = {"Held": "granted", "Stale": "renewed on schedule"}
    return {**status, "conditions": [{**c, "message": short[c["type"]]} for c in status["conditions"]]}


def held_only(status: Body) -> Body:
    """A status with its `Held` condition alone (no `Stale=False` beside it)."""
    return {**status, "conditions": [c for c in status.get("conditions") or [] if c["type"] == "Held"]}


def status(i: int, held: bool) -> Body:
    """A status as the operator writes it (absent fields as null, as its merge patch did)."""
    now = to_rfc3339(time.time())

    def condition(type_: str, value: str, reason: str, message: str) -> Body:
        return {"type": type_, "status": value, "reason": reason, "message": message,
                "lastTransitionTime": now, "observedGeneration": 1}

    empty: Body = {"holder": None, "lockName": None, "fencingToken": None, "grants": None, "acquiredAt": None,
                   "renewedAt": None, "expiresAt": None, "queuePosition": None, "waitingSince": None}
    if held:
        message = f"agent-1 holds bench://x (fencing token {i})"
        grant = {"resource": "bench://x", "lockName": "bench-x-480cc472c7e8", "fencingToken": i,
                 "mode": "Exclusive", "permits": 1}
        return {**empty, "phase": "Held", "reason": "Granted", "message": message, "holder": "agent-1",
                "lockName": "bench-x-480cc472c7e8", "fencingToken": i, "grants": [grant], "acquiredAt": now,
                "renewedAt": now, "expiresAt": now, "sequence": 5, "observedGeneration": 1,
                "conditions": [condition("Held", "True", "Granted", message),
                               condition("Stale", "False", "Renewed", "renewed on schedule")]}
    return {**empty, "phase": "Pending", "reason": "HeldByAnotherHolder", "message": f"waiting {i}",
            "queuePosition": 1, "sequence": 5, "waitingSince": now, "observedGeneration": 1,
            "conditions": [condition("Held", "False", "HeldByAnotherHolder", f"waiting {i}")]}


def expired(i: int) -> Body:
    """An `Expired` status as the operator writes it at a lease's end (`codec.status_body`: what a
    terminal status keeps, the `Held=False` condition), its message new at each write `i`."""
    now = to_rfc3339(time.time())
    message = f"lease on bench://x expired at {now}: not renewed for 30 s ({i})"
    return {"phase": "Expired", "reason": "LeaseExpired", "message": message, "sequence": 5,
            "observedRenew": "r-1", "finishedAt": now, "observedGeneration": 1,
            "conditions": [{"type": "Held", "status": "False", "reason": "LeaseExpired", "message": message,
                            "lastTransitionTime": now, "observedGeneration": 1}]}


def expired_variant(shape: str) -> Callable[[int, bool], Body]:
    """`status-put-expired*`: each write an `Expired` status after a `Held` one (`held` alternates),
    the Expired in `shape`: `full` as the operator writes it, `nocond` without `conditions`,
    `condmsg0` with the condition's message left out (it repeats `status.message`)."""
    def build(i: int, held: bool) -> Body:
        if held:
            return status(i, True)
        body = expired(i)
        if shape == "nocond":
            body.pop("conditions")
        elif shape == "condmsg0":
            body["conditions"] = [{k: v for k, v in c.items() if k != "message"} for c in body["conditions"]]
        return body
    return build


def in_group(path: str, group: str) -> str:
    return path.replace(f"/apis/{GROUP}/", f"/apis/{group}/", 1)


def alt_group(i: int) -> str:
    return f"alt{i}.{GROUP}"


def as_alt(crd: Body, i: int) -> Body:
    """The CRD `crd` under alt_group(i), so that it can be installed beside the real one."""
    crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{alt_group(i)}"
    crd["spec"]["group"] = alt_group(i)
    return crd


async def claim_variants(client: KubeClient, group: str, serial: list[int], admin: KubeClient | None = None,
                         prefix: str = "s") -> dict[str, Write]:
    """`admin`: who creates the claims whose status `client` writes (by default `client` itself)."""
    api_version = API_VERSION.replace(GROUP, group, 1)

    def claim_path(name: str | None = None, status: bool = False) -> str:
        return in_group(paths.claims(NS, name, status=status), group)

    def created(body: Body) -> Body:
        return {**body, "apiVersion": api_version}

    claims = [await (admin or client).create(claim_path(), created(claim_body(f"{prefix}{j}", True)))
              for j in range(CONCURRENCY)]
    version = {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in claims}
    uid = {c["metadata"]["name"]: c["metadata"]["uid"] for c in claims}

    async def claim_cycle(j: int, k: int) -> None:
        serial[0] += 1
        name = f"c-{j}-{k}-{serial[0]}"
        await client.create(claim_path(), created(claim_body(name, False)))
        await client.delete(claim_path(name))

    def status_write(put: bool, shape: Callable[[Body], Body] = lambda s: s,
                     build: Callable[[int, bool], Body] = status) -> Write:
        async def write(j: int, k: int) -> None:
            name = f"{prefix}{j}"
            serial[0] += 1
            written = shape(build(serial[0], k % 2 == 0))
            path = claim_path(name, status=True)
            if put:
                body = {"apiVersion": api_version, "kind": "LockClaim",
                        "metadata": {"name": name, "namespace": NS, "uid": uid[name],
                                     "resourceVersion": version[name]},
                        "status": {key: v for key, v in written.items() if v is not None}}
                stored = await client.replace(path, body)
            else:
                stored = await client.patch(path, {"metadata": {"resourceVersion": version[name]}, "status": written})
            version[name] = stored["metadata"]["resourceVersion"]
        return write

    return {"claim": claim_cycle, "status-patch": status_write(False), "status-put": status_write(True),
            "status-put-lean": status_write(True, lean), "status-put-nostale": status_write(True, held_only),
            "status-put-words": status_write(True, as_operator_words), "status-put-slim": status_write(True, slim),
            **{"status-put-expired" + ("" if shape == "full" else f"-{shape}"):
               status_write(True, build=expired_variant(shape)) for shape in ("full", "nocond", "condmsg0")}}


async def variants(
    client: KubeClient, alts: list[str], serial: list[int], admin: KubeClient | None = None,
    pads: tuple[int, ...] = (),
) -> dict[str, Write]:
    """`alts`: the kind of each alternative CRD (LockClaim or ResourceLock)."""

    def lock_cycle(label: bool, precondition: bool = False, group: str = GROUP, pad: int = 0) -> Write:
        async def write(j: int, k: int) -> None:
            serial[0] += 1
            name = f"l{int(label)}{int(admin is None)}-{j}-{k}-{serial[0]}"
            body = {**lock_body(name, label, pad), "apiVersion": API_VERSION.replace(GROUP, group, 1)}
            created = await client.create(in_group(paths.locks(NS), group), body)
            uid = created["metadata"]["uid"] if precondition else None
            await client.delete(in_group(paths.locks(NS, name), group), uid=uid)
        return write

    async def lock_renew(group: str = GROUP) -> Write:
        """A lock's renewal as the operator writes it (`codec.renew_patch`): a merge patch of the
        lease's fields and the recorded token, conditional on the version last written."""
        prefix = f"r{int(admin is None)}{group.split('.')[0]}"
        api_version = API_VERSION.replace(GROUP, group, 1)
        made = [await client.create(in_group(paths.locks(NS), group),
                                    {**lock_body(f"{prefix}-{j}", False), "apiVersion": api_version})
                for j in range(CONCURRENCY)]
        version = [m["metadata"]["resourceVersion"] for m in made]
        token = [int(v) for v in version]  # the first write records the create's revision

        async def write(j: int, k: int) -> None:
            now = time.time()
            patch = {"metadata": {"resourceVersion": version[j]},
                     "spec": {"fencingToken": token[j], "renewTime": to_rfc3339(now), "leaseDurationSeconds": 1800,
                              "expireTime": to_rfc3339(now + 1800)}}
            stored = await client.patch(in_group(paths.locks(NS, f"{prefix}-{j}"), group), patch)
            version[j] = stored["metadata"]["resourceVersion"]
        return write

    chosen = {"lock+label": lock_cycle(True), "lock-nolabel": lock_cycle(False),
              "lock-precond": lock_cycle(False, precondition=True), "lock-renew": await lock_renew(),
              **await claim_variants(client, GROUP, serial, admin, "o" if admin else "s"),
              **{f"lock-pad{b}": lock_cycle(False, pad=b) for b in pads}}
    for i, kind in enumerate(alts):
        if kind == "ResourceLock":
            chosen[f"lock-precond@alt{i}"] = lock_cycle(False, precondition=True, group=alt_group(i))
            chosen[f"lock-renew@alt{i}"] = await lock_renew(alt_group(i))
        else:
            chosen |= {f"{k}@alt{i}": v for k, v in (await claim_variants(client, alt_group(i), serial)).items()}
    return chosen


OPERATOR_ACCOUNT = "kubelock-operator"


async def operator_credentials(client: KubeClient, credentials: config.Credentials) -> config.Credentials:
    """A token of a ServiceAccount bound to the operator's ClusterRole, as the chart binds it."""
    await identities.bind_account(client, NS, OPERATOR_ACCOUNT, OPERATOR_ACCOUNT, cluster=True)
    return identities.as_token(credentials, await identities.token(client, NS, account=OPERATOR_ACCOUNT))


async def measure(plane: ControlPlane, only: list[str], requests: int, rounds: int,
                  alts: list[str], as_operator: bool, pads: tuple[int, ...] = ()) -> dict[str, list[float]]:
    credentials = config.load(plane.kubeconfig)
    async with new_client(credentials, RequestTally()) as client, contextlib.AsyncExitStack() as stack:
        await ensure_namespace(client, NS)
        apiserver = children_by_name(["kube-apiserver"])["kube-apiserver"]
        serial = [0]
        every = await variants(client, alts, serial, pads=pads)
        if as_operator:
            # The operator's role may write claim status and locks; the claims themselves are the
            # admin's (`claim` is left out: the operator may not create claims).
            operator = await stack.enter_async_context(
                new_client(await operator_credentials(client, credentials), RequestTally()))
            await identities.wait_until_allowed(operator, NS)
            every |= {f"{k}@sa": v for k, v in (await variants(operator, [], serial, admin=client)).items()
                      if k != "claim"}
        chosen = {k: v for k, v in every.items() if not only or k.removesuffix("@sa") in only}
        results: dict[str, list[float]] = {k: [] for k in chosen}
        for round_ in range(rounds):
            order = list(chosen.items())
            shift = round_ % len(order)  # each variant first in turn: no place in a round is always its own
            for name, write in order[shift:] + order[:shift]:
                before = cpu_seconds(apiserver)

                async def agent(j: int, write: Write = write) -> None:
                    for k in range(requests // CONCURRENCY):
                        await write(j, k)

                await asyncio.gather(*(agent(j) for j in range(CONCURRENCY)))
                results[name].append((cpu_seconds(apiserver) - before) * 1000 / requests)
            figures = {k: round(v[-1], 3) for k, v in results.items()}
            print(f"round {round_}: {figures} ms, load {os.getloadavg()[0]:.1f}", flush=True)
        return results


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    parser.add_argument("--requests", type=int, default=600, help="writes (or create+delete pairs) per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--alt-crd", type=Path, action="append", default=[],
                        help="a LockClaim or ResourceLock CRD to install beside the real one (repeatable)")
    parser.add_argument("--as-operator", action="store_true",
                        help="also make each write as the operator's ServiceAccount (variant@sa)")
    parser.add_argument("--pad", default="", help="comma-separated sizes B: adds `lock-padB`, a ResourceLock "
                        "created and deleted with an annotation of B bytes (what a write's size costs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifests = [REPO / "crds", REPO / "config/rbac"]
    kinds = []
    for i, crd in enumerate(args.alt_crd):
        alt = args.out / f"alt{i}-crd.yaml"
        body = yaml.safe_load(crd.read_text())
        kinds.append(body["spec"]["names"]["kind"])
        alt.write_text(yaml.safe_dump(as_alt(body, i)))
        manifests.append(alt)
    plane = ControlPlane(args.out / "control-plane", bin_dir=find_binaries(), manifests=manifests)
    plane.start()
    try:
        results = asyncio.run(measure(plane, [v for v in args.only.split(",") if v], args.requests, args.rounds,
                                      kinds, args.as_operator, tuple(int(b) for b in args.pad.split(",") if b)))
    finally:
        plane.stop()
    medians = {k: round(statistics.median(v), 3) for k, v in results.items()}
    print("median ms per write (create+delete pair for lock and claim):", medians)
    alts = {f"alt{i}": str(crd) for i, crd in enumerate(args.alt_crd)}
    (args.out / "write-costs.json").write_text(
        json.dumps({"rounds": results, "median_ms": medians, "alt_crds": alts}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
