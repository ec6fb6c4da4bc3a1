"""Agent processes: `python -m chaos.agents ...` runs a group of agent coroutines that contend for a few
dozen resources through the SDK (`kubelock.sdk.AsyncLockClient` and its `lock()` lease) and record
what they believed, one JSON line per fact (see `chaos.history`).

Each agent loops: pick a resource (spelled in one of several equivalent ways, so normalisation is
exercised), exclusively or Shared (a reader), try once or wait in the queue, and while holding write
to the fenced store at the start ("begin") and at the end ("commit") of its work (readers do not
write). Some iterations take a second resource while holding
the first, so wait-for cycles (Deadlocked) happen; some hold for longer than the lease, so renewals
matter. The commit write is sent without asking whether the lease still holds, as a real worker would
after a long pause between its last check and its write: fencing, not politeness, must stop it.

The agents act as an unprivileged identity (`chaos.identities`): without pods, all of them are
instances of the ServiceAccount `chaos-agents`; with `--pods` every agent lives in a kwok pod of its
own (labelled `kubelock.dev/lock-holder`, named in its claims' podRef) and authenticates with a token
bound to that pod. When the harness deletes the pod the agent dies on the spot, without releasing,
and a replacement agent starts in a new pod.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

from chaos import identities
from chaos.history import Attempt, Hold, Record, to_json
from chaos.multiclaims import MultiLease
from chaos.store import StoreClient
from kubelock.api.constants import POD_LABEL, POD_LABEL_VALUE
from kubelock.domain.resource import normalise
from kubelock.kube import config, paths
from kubelock.kube import errors as kube_errors
from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.sdk import AsyncLease, AsyncLockClient, Deadlock, LockError, Rejected
from kubelock.sdk.model import ClaimInfo

log = logging.getLogger("chaos.agents")
DECISION_TIMEOUT = 20.0  # the SDK's wait for the operator's first word on a claim
NESTED_FRACTION = 0.15
MULTI_FRACTION = 0.12  # iterations that take 2-3 resources at once with one claim of several
SHARED_FRACTION = 0.3  # of the first locks of an iteration: taken Shared, as a reader
LONG_HOLD_FRACTION = 0.1
AGENT_LABEL = "chaos.kubelock.dev/agent"


def resource_uri(index: int, rng: random.Random) -> str:
    """One of several spellings of resource `index`; all normalise to `chaos://pool/r<index>`."""
    spelling = rng.randrange(3)
    if spelling == 0:
        return f"chaos://pool/r{index:02d}"
    if spelling == 1:
        return f"CHAOS://pool/r{index:02d}/"
    return f"Chaos://pool/r{index:02d}"


class RecordingLease(AsyncLease):
    """The SDK's lease, remembering the last expiry it was told and when it learned of a loss."""

    known_expiry: float | None = None
    lost_at: float | None = None

    def _move_deadline(self, info: ClaimInfo) -> None:
        super()._move_deadline(info)
        if info.expires_at is not None:
            self.known_expiry = info.expires_at.timestamp()

    def mark_lost(self, _error: LockError) -> None:
        if self.lost_at is None:
            self.lost_at = time.time()

    async def abandon(self) -> None:
        """Stop renewing and watching without releasing: what a killed process does."""
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclasses.dataclass(frozen=True)
class Held:
    """A lock as its agent knows it: the lease and what the grant said."""

    lease: RecordingLease | MultiLease
    resource: str
    claim: str
    token: int
    mode: str = "Exclusive"
    permits: int = 1


@dataclasses.dataclass
class Settings:
    namespace: str
    resources: int
    ttl: int
    wait_timeout: int
    until: float
    store_port: int
    hold_max: float = 1.2
    pause_max: float = 0.6
    wait_fraction: float = 0.7
    capacity: int = 1  # of every resource: its LockPolicy's (1: no policy)
    permits_max: int = 1  # an Exclusive claim asks 1..permits_max permits
    holders: int = 0  # >0, without pods: agents share this many holders (see `Agent.own`); 0: each is one
    slots: int = 1  # with holders: the resources are split into this many slots, one per agent of a holder


class Recorder:
    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.count = 0

    def __call__(self, record: Record) -> None:
        self._handle.write(to_json(record) + "\n")
        self._handle.flush()  # a frozen or killed process keeps what it recorded
        self.count += 1


class Agent:
    def __init__(self, name: str, settings: Settings, record: Recorder, seed: int, index: int = 0) -> None:
        self.name = name
        self.settings = settings
        # With shared holders, agent `index` acts for holder `index % holders` and takes only the
        # resources of its slot (`index // holders`): agents of one holder never ask for one resource
        # (they would share its claim), while agents of different holders contend for each one.
        self.instance = f"h{index % settings.holders}" if settings.holders else name
        slot = index // settings.holders if settings.holders else 0
        slots = settings.slots if settings.holders else 1
        self.own = [r for r in range(settings.resources) if r % slots == slot % slots] or [0]
        self.record = record
        self.rng = random.Random(seed)
        self.store = StoreClient(settings.store_port)
        self.pod: str | None = None
        self.dead = False  # set when its pod is deleted: a dead agent releases nothing

    # ---- one iteration ----------------------------------------------------------------------

    async def run(self, client: AsyncLockClient) -> None:
        while time.time() < self.settings.until:
            await self.iteration(client)
            await asyncio.sleep(self.rng.uniform(0.05, self.settings.pause_max))

    async def iteration(self, client: AsyncLockClient) -> None:
        # Not beside a semaphore: there a later claim may rightly be granted while an earlier claim
        # of several resources waits for another of them (it fits beside it), which the history's
        # FIFO check, judging one resource at a time, cannot tell from a queue jumped.
        if self.settings.capacity == 1 and self.rng.random() < MULTI_FRACTION:
            await self.iteration_of_several(client)
            return
        first = self.rng.choice(self.own)
        wait = self.rng.random() < self.settings.wait_fraction
        mode, permits = self.request_for(first)
        async with self.holding(client, resource_uri(first, self.rng), wait=wait, mode=mode, permits=permits) as outer:
            if outer is None:
                return
            await self.write(outer, "begin")
            if self.rng.random() < NESTED_FRACTION and len(self.own) > 1:
                second = self.rng.choice([r for r in self.own if r != first])
                mode, permits = self.request_for(second)
                async with self.holding(
                    client, resource_uri(second, self.rng), wait=True, mode=mode, permits=permits
                ) as inner:
                    if inner is not None:
                        await self.write(inner, "begin")
                        await self.work(inner)
                        await self.write(inner, "commit")
            else:
                await self.work(outer)
            await self.write(outer, "commit")

    def request_for(self, resource: int) -> tuple[str, int]:
        """The mode and permits this agent always asks of `resource` (about SHARED_FRACTION of its
        resources Shared). Fixed per resource, as a real agent's request for one thing is: a claim left
        behind by an attempt whose answer was lost (the API server down, the withdrawal failing too) is
        then taken over by the next attempt, as the SDK does for a retried claim, instead of refused as
        a different request of the same holder (InvalidInput, "release it first")."""
        pick = random.Random(f"{self.name}/{resource}")
        mode = "Shared" if pick.random() < SHARED_FRACTION else "Exclusive"
        permits = pick.randint(1, self.settings.permits_max) if mode == "Exclusive" else 1
        return mode, permits

    async def iteration_of_several(self, client: AsyncLockClient) -> None:
        """Take 2-3 resources at once (exclusively) with one claim, write to each, let go of all."""
        if len(self.own) < 2:
            return
        indices = self.rng.sample(self.own, min(len(self.own), self.rng.randint(2, 3)))
        wait = self.rng.random() < self.settings.wait_fraction
        async with self.holding_all(client, [resource_uri(i, self.rng) for i in indices], wait=wait) as held:
            if not held:
                return
            for one in held:
                await self.write(one, "begin")
            await self.work(held[0])
            for one in held:
                await self.write(one, "commit")

    @contextlib.asynccontextmanager
    async def holding_all(self, client: AsyncLockClient, uris: list[str], *, wait: bool) -> AsyncIterator[list[Held]]:
        settings = self.settings
        lease = MultiLease(client, uris, ttl=settings.ttl, wait=wait,
                           wait_timeout=settings.wait_timeout if wait else None, decision_timeout=DECISION_TIMEOUT)
        first = normalise(uris[0])
        started = time.time()
        try:
            outcome, detail = await lease.acquire()
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            outcome, detail = "Unreachable", str(error)
        except LockError as error:  # from the SDK's identity() or delete, which the lease uses
            outcome, detail = outcome_of(error), error.message
        except asyncio.CancelledError:
            self.attempt(first, wait, started, "Cancelled", "the agent stopped while acquiring")
            raise
        if outcome != "Held":
            self.attempt(first, wait, started, outcome, detail)
            if outcome in ("Unreachable", "Unanswered"):
                with contextlib.suppress(kube_errors.ApiError, kube_errors.Unreachable):
                    await lease.release()
            yield []
            return
        held_from = time.time()
        held = [Held(lease, resource, lease.uid, token) for resource, token in sorted(lease.tokens.items())]
        self.attempt(first, wait, started, "Held", detail, end=held_from)
        try:
            yield held
        finally:
            until = lease.lost_at if lease.lost_at is not None else time.time()
            for one in held:
                self.record(Hold(agent=self.name, resource=one.resource, claim=one.claim, token=one.token,
                                 start=held_from, end=until, expiry=lease.known_expiry, pod=self.pod,
                                 capacity=settings.capacity))
            if self.dead:
                await lease.abandon()
            else:
                try:
                    await lease.release()
                except (kube_errors.ApiError, kube_errors.Unreachable) as error:
                    log.info("%s: release of %s failed: %s", self.name, ", ".join(uris), error)

    def hold_seconds(self) -> float:
        if self.rng.random() < LONG_HOLD_FRACTION:
            return self.rng.uniform(1.2, 2.0) * self.settings.ttl  # outlives one lease: renewals needed
        return self.rng.uniform(0.1, self.settings.hold_max)

    async def work(self, held: Held) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(held.lease.lost.wait(), self.hold_seconds())

    async def write(self, held: Held, phase: str) -> None:
        # The token of the grant, kept by the agent: after a loss the claim no longer shows one, but
        # a worker that does not know of the loss yet still writes with what it was given.
        if held.mode == "Shared" or self.settings.capacity > 1:
            # A reader, or one of several permit holders: what it holds together with others is no
            # licence to write.
            return
        try:
            await self.store.write(self.name, held.resource, held.token, phase)
        except (ConnectionError, OSError, ValueError) as error:
            log.warning("%s: store write failed: %s", self.name, error)

    @contextlib.asynccontextmanager
    async def holding(
        self, client: AsyncLockClient, uri: str, *, wait: bool, mode: str = "Exclusive", permits: int = 1
    ) -> AsyncIterator[Held | None]:
        settings = self.settings
        lease = RecordingLease(
            client, uri, ttl=settings.ttl, wait=wait, timeout=settings.wait_timeout if wait else None, mode=mode,
            permits=permits,
        )
        lease.add_listener(lease.mark_lost)
        resource = normalise(uri)
        started = time.time()
        failure: LockError | None = None
        try:
            await lease.__aenter__()
        except LockError as error:
            failure = error
        except asyncio.CancelledError:
            self.attempt(resource, wait, started, "Cancelled", "the agent stopped while acquiring")
            raise
        if failure is not None:
            self.attempt(resource, wait, started, outcome_of(failure), failure.message)
            yield None
            return
        held_from = time.time()
        claim = lease.claim
        held = Held(lease, claim.resource, claim.uid, lease.fencing_token or 0, mode, permits)
        self.attempt(resource, wait, started, "Held", f"token {held.token}", end=held_from)
        try:
            yield held
        finally:
            # Belief ends at the first sign of loss, or now, when the agent lets go.
            until = lease.lost_at if lease.lost_at is not None else time.time()
            self.record(
                Hold(
                    agent=self.name,
                    resource=held.resource,
                    claim=held.claim,
                    token=held.token,
                    start=held_from,
                    end=until,
                    expiry=lease.known_expiry,
                    pod=self.pod,
                    mode=mode,
                    permits=permits,
                    capacity=settings.capacity,
                )
            )
            if self.dead:
                await lease.abandon()
            else:
                try:
                    await lease.__aexit__(None, None, None)
                except LockError as error:  # the lease runs out by itself; the checker judges the lock
                    log.info("%s: release of %s failed: %s", self.name, resource, error)

    def attempt(self, resource: str, wait: bool, started: float, outcome: str, detail: str,
                end: float | None = None) -> None:
        self.record(
            Attempt(
                agent=self.name,
                resource=resource,
                wait=wait,
                start=started,
                end=end if end is not None else time.time(),
                outcome=outcome,
                detail=detail[:300],
                pod=self.pod,
            )
        )


def outcome_of(error: LockError) -> str:
    if isinstance(error, Deadlock):
        return "Deadlocked"
    if isinstance(error, Rejected) and error.reason != "HeldByAnotherHolder":
        return f"Rejected:{error.reason}"
    return type(error).__name__


# ---- pods ------------------------------------------------------------------------------------------


def pod_manifest(name: str, node: str, agent: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {POD_LABEL: POD_LABEL_VALUE, AGENT_LABEL: agent}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "agent", "image": "registry.invalid/chaos-agent:never-pulled"}],
            "serviceAccountName": identities.SERVICE_ACCOUNT,
            "terminationGracePeriodSeconds": 0,
        },
    }


class PodWatch:
    """One watch per process on its agents' pods: an agent dies the moment its pod is deleted."""

    def __init__(self, kube: KubeClient, namespace: str, agents: Sequence[str]) -> None:
        self._kube = kube
        self._namespace = namespace
        self._selector = f"{AGENT_LABEL} in ({','.join(agents)})"
        self._deaths: dict[str, asyncio.Event] = {}

    def death(self, pod: str) -> asyncio.Event:
        return self._deaths.setdefault(pod, asyncio.Event())

    async def run(self) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    listing = await self._kube.list(paths.pods(self._namespace), labelSelector=self._selector)
                    for item in listing.get("items") or []:
                        self._observe("ADDED", item)
                    version = str((listing.get("metadata") or {}).get("resourceVersion") or "") or None
                stream = self._kube.watch(
                    paths.pods(self._namespace), resource_version=version, labelSelector=self._selector
                )
                async for event in stream:
                    obj = event.get("object") or {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event.get("type") != "BOOKMARK":
                        self._observe(str(event.get("type")), obj)
            except kube_errors.ApiError as error:
                if error.status == 410:
                    version = None
                    continue
                await asyncio.sleep(0.5)
            except kube_errors.Unreachable:
                await asyncio.sleep(0.5)

    def _observe(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            self.death(str(meta.get("name"))).set()


async def create_pod(kube: KubeClient, namespace: str, name: str, node: str, agent: str) -> str:
    for attempt in range(30):
        try:
            body = await kube.create(paths.pods(namespace), pod_manifest(name, node, agent))
            return str(body["metadata"]["uid"])
        except kube_errors.Conflict:
            body = await kube.get(paths.pods(namespace, name))
            if not (body.get("metadata") or {}).get("deletionTimestamp"):
                return str(body["metadata"]["uid"])
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            log.info("creating pod %s failed (%s); retrying", name, error)
        await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
    raise RuntimeError(f"could not create pod {name}")


async def run_in_pods(agent: Agent, credentials: Credentials, kube: KubeClient, watch: PodWatch, node: str) -> None:
    """Incarnations of one agent, each in a fresh pod, until the run ends."""
    generation = 0
    namespace = agent.settings.namespace
    while time.time() < agent.settings.until:
        pod = f"{agent.name}-g{generation}"
        uid = await create_pod(kube, namespace, pod, node, agent.name)
        agent.pod, agent.dead = pod, False
        try:  # the pod's own token, as its kubelet would mount it: holder pod:<namespace>/<pod>/<uid prefix>
            bound = await identities.token(kube, namespace, pod=(pod, uid), seconds=agent.settings.until - time.time())
        except (kube_errors.ApiError, kube_errors.Unreachable) as error:
            log.info("no token for pod %s (%s); next pod", pod, error)
            generation += 1
            continue
        client = AsyncLockClient(
            credentials=identities.as_token(credentials, bound), namespace=namespace, env={},
            decision_timeout=DECISION_TIMEOUT,
        )
        death = watch.death(pod)
        work = asyncio.create_task(agent.run(client))
        dying = asyncio.create_task(death.wait())
        try:
            await asyncio.wait({work, dying}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                agent.dead = death.is_set()
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            dying.cancel()
            await client.close()
        failure = work.exception() if work.done() and not work.cancelled() else None
        if failure is not None:
            raise failure
        generation += 1
        await asyncio.sleep(agent.rng.uniform(0.2, 1.0))  # the replacement pod takes a moment


# ---- the process -----------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, handle: IO[str]) -> int:
    credentials = config.load(args.kubeconfig)
    if args.server:
        credentials = dataclasses.replace(credentials, server=args.server)
    settings = Settings(
        namespace=args.namespace,
        resources=args.resources,
        ttl=args.ttl,
        wait_timeout=args.wait_timeout,
        until=args.until,
        store_port=args.store_port,
        hold_max=args.hold_max,
        pause_max=args.pause_max,
        capacity=args.capacity,
        permits_max=args.permits_max,
        holders=args.holders,
        slots=args.slots,
    )
    record = Recorder(handle)
    names = [f"{args.prefix}{i:03d}" for i in range(args.first, args.first + args.count)]
    agents = [Agent(name, settings, record, seed=args.seed * 100_000 + i, index=args.first + i)
              for i, name in enumerate(names)]
    kube = KubeClient(credentials, retries=4, user_agent="kubelock-chaos-agents")
    # The agents act under unprivileged identities (see chaos.identities), not as the admin: one
    # ServiceAccount, or with --holders one per holder, since quotas count an identity's instances
    # together (each holder is then one identity of its own, as in a real lock space).
    def account_of(agent: Agent) -> str:
        return f"{identities.SERVICE_ACCOUNT}-{agent.instance}" if settings.holders else identities.SERVICE_ACCOUNT

    async def set_up(account: str) -> Credentials:
        await identities.ensure_agent_account(kube, args.namespace, account)
        bearer = await identities.token(kube, args.namespace, account=account, seconds=args.until - time.time())
        as_account = identities.as_token(credentials, bearer)
        async with KubeClient(as_account) as probe:
            await identities.wait_until_allowed(probe, args.namespace)
        return as_account

    account_credentials: dict[str, Credentials] = {}
    for account in sorted({account_of(agent) for agent in agents}):
        account_credentials[account] = await identities.through_outages(partial(set_up, account))
    tasks: list[asyncio.Task[None]] = []
    watcher: asyncio.Task[None] | None = None
    clients: list[AsyncLockClient] = []
    if args.pods:
        pods = PodWatch(kube, args.namespace, names)
        watcher = asyncio.create_task(pods.run())
        tasks = [asyncio.create_task(run_in_pods(a, credentials, kube, pods, args.node)) for a in agents]
    else:
        # Every agent is one instance of its identity: instances conflict like any two holders.
        for agent in agents:
            client = AsyncLockClient(
                credentials=account_credentials[account_of(agent)], namespace=args.namespace, instance=agent.instance,
                decision_timeout=DECISION_TIMEOUT,
            )
            clients.append(client)
            tasks.append(asyncio.create_task(agent.run(client)))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: [t.cancel() for t in tasks])
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    for failure in failures:
        log.error("agent failed: %r", failure)
    if watcher is not None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    for client in clients:
        await client.close()
    for agent in agents:
        await agent.store.close()
    await kube.close()
    print(f"agents {names[0]}..{names[-1]}: {record.count} records, {len(failures)} failures", file=sys.stderr)
    return 1 if failures else 0


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos.agents", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--server", default="", help="API server URL to use instead of the kubeconfig's (a proxy)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--prefix", default="agent-")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--resources", type=int, required=True)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--wait-timeout", type=int, default=6)
    parser.add_argument("--hold-max", type=float, default=1.2)
    parser.add_argument("--pause-max", type=float, default=0.6)
    parser.add_argument("--until", type=float, required=True, help="wall-clock time to stop starting iterations")
    parser.add_argument("--store-port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pods", action="store_true")
    parser.add_argument("--capacity", type=int, default=1, help="every resource's capacity (its LockPolicy's)")
    parser.add_argument("--permits-max", type=int, default=1, help="Exclusive claims ask 1..N permits")
    parser.add_argument("--node", default="")
    parser.add_argument("--holders", type=int, default=0,
                        help="agents share this many holders (instances), each agent on its slot's resources")
    parser.add_argument("--slots", type=int, default=1, help="with --holders: slots the resources are split into")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    # The standard event loop, as most SDK users run it (the operator runs on uvloop, its own choice).
    with Path(args.out).open("a", encoding="utf-8") as handle:
        return asyncio.run(main_async(args, handle))


if __name__ == "__main__":
    sys.exit(main())
