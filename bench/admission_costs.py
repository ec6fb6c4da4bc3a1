"""API-server CPU per write of each kind a cycle makes, with kubelock's admission policies and without,
on one control plane: what the ValidatingAdmissionPolicies of config/admission/ cost as deployed, per
write kind and per kind of caller. No operator runs; the writes are made as the operator makes them.

    KUBELOCK_BIN_DIR=... PYTHONPATH=operator .venv/bin/python bench/admission_costs.py OUT_DIR \\
        [--set NAME=DIR ...] [--requests 300] [--rounds 6] [--only KIND,...] [--plugin-profiles N] [--profile SET]

Each `--set NAME=DIR` installs the policies of DIR (by default one set, `deployed`, of this tree's
config/admission/) under the names `NAME-<policy>`, each binding limited to the namespace `ac-NAME`
(a `namespaceSelector` on its label); the namespace `ac-none` has no policy. Every round makes the
same writes in each namespace in turn (the first namespace moves by one each round), so the sets are
compared on one API server, round by round, under the same load. A figure is the kube-apiserver's CPU
(utime+stime) over K writes divided by K, in ms.

Write kinds, each as the callers that make it (`kind@caller`):
- `cycle`: #2's five writes in turn (claim create, lock create, claim status PUT, claim delete, lock
  delete), a figure per cycle: `cycle@deployed` as an agent and the operator's ServiceAccount,
  `cycle@masters` as the bench's clients and operator run (the admin certificate);
- `claim-create`, `claim-delete`: as `agent` (a ServiceAccount bound to kubelock-agent; the claim in
  its own name), `admin` (a ServiceAccount bound to kubelock-admin) and `masters` (the admin
  certificate, group system:masters: the bench's clients);
- `status-put` (a claim's whole status, Held and Pending in turn, PUT to /status), `lock-create`,
  `lock-update` (the first write of a lock, a merge patch recording its fencing token and a new
  renewTime),
  `lock-delete` (with the uid precondition): as `operator` (a ServiceAccount bound to the
  kubelock-operator ClusterRole, as the chart deploys it) and `masters` (how the bench runs it).

`--plugin-profiles N` ends the timed rounds with N rounds of CPU profiles of the kube-apiserver
(`--profile-seconds` long, 10 by default), one per set in turn, while cycles (as `cycle@deployed`, or
`cycle@masters` with `--profile-callers deployed,masters`; `locks` instead of cycles: the operator's
lock create, update and delete, `locks@operator`, per lock) go on in that set's namespace only: the
CPU the validating-policy plugin took (its dispatcher's cumulative samples) divided by the cycles
made, `cycle@CALLER/plugin-cpu`, and all the sampled CPU divided by them, `cycle@CALLER/profiled-cpu`,
in ms. Samples count only the API server's own CPU, so the figure
carries neither the other writes' costs nor the machine's other load, as the timed figures do. The
plugin also checks, for each write, the bindings of every other set installed (their
namespaceSelector): `none`'s figure is that part, which every set pays alike.

`--profile SET` ends the run with a CPU profile of the kube-apiserver (`/debug/pprof/profile`, 20 s)
while the writes of every kind go on in `ac-SET`; the binary profile stays in OUT_DIR and its top
functions (`go tool pprof -top`) go to `OUT_DIR/profile-SET.txt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import options
import yaml
from harness import RequestTally, children_by_name, cpu_seconds, new_client
from write_costs import lock_body, status

from kubelock.api.constants import API_VERSION
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.testbed import ControlPlane, find_binaries

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the chaos suite's token helpers
from chaos import identities

REPO = Path(__file__).resolve().parent.parent
ACCOUNTS = "ac-accounts"
LABEL = "bench.kubelock.dev/admission"
CONCURRENCY = 10
Body = dict[str, Any]


def policy_set(name: str, directory: Path) -> list[Body]:
    """The policies and bindings of `directory`, renamed `name-...`, bound to the namespace ac-`name`."""
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            doc["metadata"]["name"] = f"{name}-{doc['metadata']['name']}"
            if doc["kind"] == "ValidatingAdmissionPolicyBinding":
                doc["spec"]["policyName"] = f"{name}-{doc['spec']['policyName']}"
                doc["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {LABEL: name}}}
            documents.append(doc)
    return documents


async def apply(client: KubeClient, doc: Body) -> None:
    plural = "validatingadmissionpolicies" if doc["kind"] == "ValidatingAdmissionPolicy" \
        else "validatingadmissionpolicybindings"
    await client.create(f"/apis/admissionregistration.k8s.io/v1/{plural}", doc)


async def account(client: KubeClient, name: str, role: str, namespaces: list[str], cluster: bool = False) -> str:
    """A token of the ServiceAccount `name` in ACCOUNTS bound to `role` in each namespace (cluster-wide
    if `cluster`)."""
    await identities.bind_account(client, ACCOUNTS, name, role, bind_in=namespaces, cluster=cluster)
    return await identities.token(client, ACCOUNTS, account=name)


def claim(name: str, holder: str) -> Body:
    return {"apiVersion": API_VERSION, "kind": "LockClaim", "metadata": {"name": name},
            "spec": {"resource": f"bench://admission/{name}", "holder": holder, "wait": False}}


class Writes:
    """The writes of one round in one namespace, as one caller."""

    def __init__(self, ns: str, serial: list[int]) -> None:
        self.ns = ns
        self.serial = serial

    def name(self, prefix: str) -> str:
        self.serial[0] += 1
        return f"{prefix}-{self.serial[0]}"

    async def claims(self, client: KubeClient, holder: str, count: int, timed: Callable[..., Awaitable[list[Any]]],
                     caller: str) -> None:
        names = [self.name("c") for _ in range(count)]
        await timed(f"claim-create@{caller}", names,
                    lambda n: client.create(paths.claims(self.ns), claim(n, holder)))
        await timed(f"claim-delete@{caller}", names, lambda n: client.delete(paths.claims(self.ns, n)))

    async def locks(self, client: KubeClient, count: int, timed: Callable[..., Awaitable[list[Any]]],
                    caller: str) -> None:
        names = [self.name("l") for _ in range(count)]

        def body(n: str) -> Body:
            b = lock_body(n, True)
            b["metadata"]["namespace"] = self.ns
            return b

        created = await timed(f"lock-create@{caller}", names, lambda n: client.create(paths.locks(self.ns), body(n)))

        async def update(lock: Body) -> Body:
            # As the operator renews: a conditional merge patch that records the fencing token.
            version = lock["metadata"]["resourceVersion"]
            patch = {"metadata": {"resourceVersion": version},
                     "spec": {"fencingToken": int(version), "renewTime": to_rfc3339(time.time())}}
            return await client.patch(paths.locks(self.ns, lock["metadata"]["name"]), patch)

        updated = await timed(f"lock-update@{caller}", created, update)
        await timed(f"lock-delete@{caller}", updated,
                    lambda lock: client.delete(paths.locks(self.ns, lock["metadata"]["name"]),
                                               uid=lock["metadata"]["uid"]))

    async def cycles(self, agent: KubeClient, operator: KubeClient, holder: str, count: int,
                     timed: Callable[..., Awaitable[list[Any]]], caller: str) -> None:
        """Whole cycles, the five writes of #2's: the agent creates a claim, the operator creates its
        lock and PUTs the claim's Held status, the agent deletes the claim, the operator the lock."""

        async def cycle(name: str) -> None:
            created = await agent.create(paths.claims(self.ns), claim(name, holder))
            lock = lock_body(name, True)
            lock["metadata"]["namespace"] = self.ns
            made = await operator.create(paths.locks(self.ns), lock)
            self.serial[0] += 1
            held = status(self.serial[0], True)
            await operator.replace(paths.claims(self.ns, name, status=True), {
                "apiVersion": API_VERSION, "kind": "LockClaim",
                "metadata": {"name": name, "namespace": self.ns, "uid": created["metadata"]["uid"],
                             "resourceVersion": created["metadata"]["resourceVersion"]},
                "status": {key: v for key, v in held.items() if v is not None}})
            await agent.delete(paths.claims(self.ns, name))
            await operator.delete(paths.locks(self.ns, name), uid=made["metadata"]["uid"])

        await timed(f"cycle@{caller}", [self.name("y") for _ in range(count)], cycle)

    async def statuses(self, client: KubeClient, targets: list[Body], count: int,
                       timed: Callable[..., Awaitable[list[Any]]], caller: str) -> None:
        """`count` status PUTs spread over `targets` (one writer per claim at a time)."""
        per = count // len(targets)

        async def writes(target: Body) -> Body:
            for k in range(per):
                self.serial[0] += 1
                written = status(self.serial[0], k % 2 == 0)
                body = {"apiVersion": API_VERSION, "kind": "LockClaim",
                        "metadata": {"name": target["metadata"]["name"], "namespace": self.ns,
                                     "uid": target["metadata"]["uid"],
                                     "resourceVersion": target["metadata"]["resourceVersion"]},
                        "status": {key: v for key, v in written.items() if v is not None}}
                stored = await client.replace(paths.claims(self.ns, target["metadata"]["name"], status=True), body)
                target["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
            return target

        await timed(f"status-put@{caller}", targets, writes, count=per * len(targets))


def top(profile: Path) -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    apiserver = find_binaries() / "kube-apiserver"
    parts = []
    for flags in (["-top", "-nodecount=45"], ["-top", "-cum", "-nodecount=70"]):
        done = subprocess.run([go, "tool", "pprof", *flags, str(apiserver), str(profile)],
                              capture_output=True, text=True, check=False)
        parts.append(done.stdout or done.stderr)
    return "\n".join(parts)


def opener(credentials: config.Credentials) -> urllib.request.OpenerDirector:
    context = credentials.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))


def seconds_of(text: str) -> float:
    """A pprof duration ("1.31s", "950ms", "20us") in seconds."""
    for unit, scale in (("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


def plugin_share(profile: Path) -> tuple[float, float]:
    """(CPU seconds in the validating-policy plugin's Dispatch, CPU seconds sampled) of a profile."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    apiserver = find_binaries() / "kube-apiserver"
    done = subprocess.run([go, "tool", "pprof", "-top", "-cum", "-nodecount=100000", str(apiserver), str(profile)],
                          capture_output=True, text=True, check=True)
    total = seconds_of(done.stdout.split("Total samples = ", 1)[1].split()[0])
    dispatch = [line.split() for line in done.stdout.splitlines() if "validating.(*dispatcher).Dispatch" in line]
    return (seconds_of(dispatch[0][3]) if dispatch else 0.0), total


def fetch_profile(credentials: config.Credentials, seconds: int, out: Path) -> None:
    url = f"{credentials.server}/debug/pprof/profile?seconds={seconds}"
    with opener(credentials).open(url, timeout=seconds + 30) as response:
        out.write_bytes(response.read())


async def measure(plane: ControlPlane, sets: dict[str, Path], requests: int, rounds: int, only: list[str],
                  profile: str | None, out: Path, plugin_profiles: int = 0, profile_seconds: int = 10,
                  profile_callers: tuple[str, ...] = ("deployed",)) -> dict[str, dict[str, list[float]]]:
    credentials = config.load(plane.kubeconfig)
    apiserver = children_by_name(["kube-apiserver"])["kube-apiserver"]
    names = ["none", *sets]
    namespaces = [f"ac-{n}" for n in names]
    async with new_client(credentials, RequestTally()) as masters, contextlib.AsyncExitStack() as stack:
        for ns, set_name in [(ACCOUNTS, ""), *zip(namespaces, names, strict=True)]:
            labels = {LABEL: set_name} if set_name else {}
            await masters.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": ns, "labels": labels}})
        for set_name, directory in sets.items():
            for doc in policy_set(set_name, directory):
                await apply(masters, doc)
        tokens = {"agent": await account(masters, "agents", "kubelock-agent", namespaces),
                  "admin": await account(masters, "admins", "kubelock-admin", namespaces),
                  "operator": await account(masters, "operator", "kubelock-operator", namespaces, cluster=True)}
        clients = {"masters": masters}
        for caller, bearer in tokens.items():
            clients[caller] = await stack.enter_async_context(
                new_client(identities.as_token(credentials, bearer), RequestTally()))
            await identities.wait_until_allowed(clients[caller], namespaces[-1])
        holders = {"agent": f"sa:{ACCOUNTS}/agents/w-1", "admin": f"sa:{ACCOUNTS}/admins/w-1",
                   "masters": "agent-1"}
        serial = [0]
        # Claims whose status the status writes rewrite, one per concurrent writer.
        targets = {ns: [await masters.create(paths.claims(ns), claim(f"t-{j}", "agent-1"))
                        for j in range(CONCURRENCY)] for ns in namespaces}
        await asyncio.sleep(3)  # the policies' bindings reach the admission plugin through an informer

        results: dict[str, dict[str, list[float]]] = {n: {} for n in names}

        async def one_round(round_: int, record: bool) -> None:
            shift = round_ % len(names)
            for set_name in names[shift:] + names[:shift]:
                ns = f"ac-{set_name}"
                writes = Writes(ns, serial)

                async def timed(kind: str, items: list[Any], step: Callable[[Any], Awaitable[Any]],
                                count: int | None = None, set_name: str = set_name) -> list[Any]:
                    queue = list(enumerate(items))
                    done: list[Any] = [None] * len(items)

                    async def worker() -> None:
                        while queue:
                            i, item = queue.pop(0)
                            done[i] = await step(item)

                    before = cpu_seconds(apiserver)
                    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
                    if record:
                        figure = (cpu_seconds(apiserver) - before) * 1000 / (count or len(items))
                        results[set_name].setdefault(kind, []).append(figure)
                    return done

                for caller, agent, operator in (("deployed", "agent", "operator"), ("masters", "masters", "masters")):
                    if not only or f"cycle@{caller}" in only:
                        await writes.cycles(clients[agent], clients[operator], holders[agent], requests, timed, caller)
                for caller in ("agent", "admin", "masters"):
                    if not only or f"claim-create@{caller}" in only:
                        await writes.claims(clients[caller], holders[caller], requests, timed, caller)
                for caller in ("operator", "masters"):
                    if not only or f"status-put@{caller}" in only:
                        await writes.statuses(clients[caller], targets[ns], requests, timed, caller)
                    if not only or f"lock-create@{caller}" in only:
                        await writes.locks(clients[caller], requests, timed, caller)
            if record:
                line = {s: {k: round(v[-1], 3) for k, v in kinds.items()} for s, kinds in results.items()}
                print(f"round {round_}: {json.dumps(line)} ms, load {os.getloadavg()[0]:.1f}", flush=True)

        await one_round(0, record=False)  # warm-up: connections, caches, the CEL programs' first runs
        for round_ in range(rounds):
            await one_round(round_, record=True)

        for round_, caller in ((r, c) for r in range(plugin_profiles) for c in profile_callers):
            # The plugin's own CPU per cycle: a CPU profile of each set's cycles in turn.
            agent, operator = ("agent", "operator") if caller == "deployed" else (caller, caller)
            shift = round_ % len(names)
            for set_name in names[shift:] + names[:shift]:
                path = out / f"plugin-{set_name}.pb.gz"
                fetch = asyncio.get_running_loop().run_in_executor(None, fetch_profile, credentials,
                                                                   profile_seconds, path)
                cycles = 0
                writes = Writes(f"ac-{set_name}", serial)

                async def counted(kind: str, items: list[Any], step: Callable[[Any], Awaitable[Any]],
                                  count: int | None = None) -> list[Any]:
                    return list(await asyncio.gather(*(step(item) for item in items)))

                await asyncio.sleep(0.5)  # the profile's start
                while not fetch.done():
                    if caller == "locks":  # the operator's lock writes: create, update (renewal), delete
                        await writes.locks(clients["operator"], CONCURRENCY, counted, "operator")
                    else:
                        await writes.cycles(clients[agent], clients[operator], holders[agent], CONCURRENCY,
                                            counted, caller)
                    cycles += CONCURRENCY
                await fetch
                dispatch, total = plugin_share(path)
                figure = "locks@operator" if caller == "locks" else f"cycle@{caller}"
                results[set_name].setdefault(f"{figure}/plugin-cpu", []).append(dispatch * 1000 / cycles)
                results[set_name].setdefault(f"{figure}/profiled-cpu", []).append(total * 1000 / cycles)
                path.unlink()
            line = {s: {k: round(v[-1], 3) for k, v in kinds.items() if k.endswith("-cpu")}
                    for s, kinds in results.items()}
            print(f"profiles {round_}: {json.dumps(line)} ms, load {os.getloadavg()[0]:.1f}", flush=True)

        if profile:
            path = out / f"profile-{profile}.pb.gz"
            fetch = asyncio.get_running_loop().run_in_executor(None, fetch_profile, credentials, 20, path)
            round_ = 0
            while not fetch.done():
                writes = Writes(f"ac-{profile}", serial)

                async def untimed(kind: str, items: list[Any], step: Callable[[Any], Awaitable[Any]],
                                  count: int | None = None) -> list[Any]:
                    return list(await asyncio.gather(*(step(item) for item in items)))

                await writes.claims(clients["agent"], holders["agent"], 50, untimed, "agent")
                await writes.statuses(clients["operator"], targets[f"ac-{profile}"], 50, untimed, "operator")
                await writes.locks(clients["operator"], 50, untimed, "operator")
                round_ += 1
            await fetch
            (out / f"profile-{profile}.txt").write_text(top(path))
        return results


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=DIR",
                        help="a directory of admission policies to install as NAME "
                        "(default: deployed=config/admission)")
    parser.add_argument("--requests", type=int, default=300, help="writes of each kind per round and set")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--only", default="", help="comma-separated kinds: cycle@deployed, cycle@masters, "
                        "claim-create@CALLER (and its deletes), status-put@CALLER, lock-create@CALLER (and its "
                        "updates and deletes); default: all")
    parser.add_argument("--profile", default=None, metavar="SET",
                        help="a CPU profile of the writes in ac-SET at the end")
    parser.add_argument("--plugin-profiles", type=int, default=0, metavar="N",
                        help="N rounds of 10 s CPU profiles of each set's agent cycles in turn: "
                        "the plugin's CPU per cycle")
    parser.add_argument("--profile-seconds", type=int, default=10, help="the length of each of those profiles")
    parser.add_argument("--profile-callers", default="deployed",
                        help="whose cycles those profiles see, comma-separated: deployed (an agent and the "
                        "operator's ServiceAccount), masters (the bench's clients and operator), locks (no "
                        "cycles: the operator's ServiceAccount creates, updates and deletes locks; a figure "
                        "per lock, locks@operator)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets = dict(s.split("=", 1) for s in args.set) if args.set else {"deployed": str(REPO / "config/admission")}
    plane = ControlPlane(args.out / "control-plane", bin_dir=find_binaries(),
                         manifests=[REPO / "crds", REPO / "config/rbac"],
                         profiling=args.profile is not None or args.plugin_profiles > 0)
    plane.start()
    started = time.time()
    load_before = os.getloadavg()
    try:
        results = asyncio.run(measure(plane, {k: Path(v) for k, v in sets.items()}, args.requests, args.rounds,
                                      [k for k in args.only.split(",") if k], args.profile, args.out,
                                      args.plugin_profiles, args.profile_seconds,
                                      tuple(args.profile_callers.split(","))))
    finally:
        plane.stop()
    medians = {s: {k: round(statistics.median(v), 3) for k, v in kinds.items()} for s, kinds in results.items()}
    added = {s: {k: round(statistics.median([a - b for a, b in zip(v, results["none"][k], strict=True)]), 3)
                 for k, v in kinds.items()} for s, kinds in results.items() if s != "none"}
    print("median ms per write:", json.dumps(medians, indent=1))
    print("median of the rounds' differences to none:", json.dumps(added, indent=1))
    (args.out / "admission-costs.json").write_text(json.dumps({
        "sets": sets, "requests": args.requests, "rounds": results, "median_ms": medians,
        "added_ms_median_of_paired_differences": added, "load_before": load_before, "load_after": os.getloadavg(),
        "seconds": round(time.time() - started)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
