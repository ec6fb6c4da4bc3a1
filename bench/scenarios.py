"""The kubelock side of each benchmark, driven the way an agent drives it: create a LockClaim, wait on
a watch for `Held` (or for the ResourceLock), release by deleting the claim.

The same functions drive the naive kopf comparator, which answers the same API.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from anchors import Cycles, pod_body, pod_running, run_cycles
from harness import (
    OPERATOR_SOURCE,
    REPO,
    Env,
    OperatorProcess,
    Predicate,
    Seen,
    Watch,
    added,
    apiserver_refusals,
    cpu_seconds,
    current_version,
    delete_quietly,
    deleted,
    gather_limited,
    phase_is,
    unique,
    wait_until,
)

from kubelock.api.constants import GROUP, RENEW_ANNOTATION, VERSION
from kubelock.domain.resource import lock_name, normalise
from kubelock.domain.timefmt import from_rfc3339
from kubelock.kube import paths
from kubelock.kube.client import Body, KubeClient

sys.path.insert(0, str(REPO))  # the chaos suite's identities: an unprivileged agent ServiceAccount
from chaos import identities

CHURN_ACCOUNT = "bench-agents"

HELD = phase_is("Held")
PENDING = phase_is("Pending")
# #4's aiming pass: renewals in flight (not paced: a backlog in the operator would make the lag of
# each renewal longer than the last, and every aim miss by it), and the most aiming
# passes made when one runs late (the last is kept, late or not).
AIM_IN_FLIGHT = 16
AIM_PASSES = 2


def claim_body(
    name: str,
    resource: str,
    holder: str,
    *,
    wait: bool = False,
    ttl: int | None = None,
    pod: tuple[str, str] | None = None,
    labels: dict[str, str] | None = None,
    mode: str | None = None,
) -> Body:
    spec: Body = {"resource": resource, "holder": holder, "wait": wait}
    if mode is not None:
        spec["mode"] = mode
    if ttl is not None:
        spec["ttlSeconds"] = ttl
    if pod is not None:
        spec["podRef"] = {"name": pod[0], "uid": pod[1]}
    metadata: Body = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LockClaim", "metadata": metadata, "spec": spec}


def lock_of(resource: str) -> str:
    return lock_name(normalise(resource))


def modified(seen: Seen) -> bool:
    return seen.type == "MODIFIED"


def owned_by(claim: str) -> Predicate:
    return lambda s: added(s) and ((s.obj.get("spec") or {}).get("claimRef") or {}).get("name") == claim


async def settle_locks(env: Env, namespace: str, within: float = 120.0) -> None:
    """Waits until no ResourceLock is left: the operator (or the garbage collector) caught up."""

    async def none_left() -> bool:
        listing = await env.client.list(paths.locks(namespace), limit=1)
        return not listing.get("items")

    await wait_until(none_left, within=within, what=f"every ResourceLock in {namespace} to be deleted")


# ---- 1: uncontended acquire --------------------------------------------------------------------


@dataclass(frozen=True)
class Acquired:
    held: list[float]  # create → Held seen on the claim's watch
    lock: list[float]  # create → the ResourceLock seen on its watch


async def acquire(env: Env, namespace: str, samples: int) -> Acquired:
    held: list[float] = []
    lock: list[float] = []
    for _ in range(samples):
        name = unique("a")
        resource = f"bench://acquire/{name}"
        lname = lock_of(resource)
        async with (
            Watch(env.client, paths.claims(namespace), fieldSelector=f"metadata.name={name}") as claims,
            Watch(env.client, paths.locks(namespace), fieldSelector=f"metadata.name={lname}") as locks,
        ):
            began = time.perf_counter()
            await env.client.create(paths.claims(namespace), claim_body(name, resource, "agent"))
            seen_held = await claims.wait_for(name, HELD, env.timeout)
            seen_lock = await locks.wait_for(lname, added, env.timeout)
            held.append(seen_held.at - began)
            lock.append(seen_lock.at - began)
            await env.client.delete(paths.claims(namespace, name))
            # Wait for the lock to go, so the next sample meets an idle operator.
            await locks.wait_for(lname, deleted, env.timeout)
    return Acquired(held, lock)


# ---- 2: acquire+release cycles -----------------------------------------------------------------


async def claim_cycles(env: Env, namespace: str, agents: int, seconds: float, warmup: float) -> Cycles:
    """N agents, each on its own resources: create claim → Held seen → delete claim.

    One namespace-wide watch serves every agent (its own connection pool): a watch per agent per
    cycle would cost a TLS handshake each time and measure the client, not the operator.
    """
    tag = unique("c")
    version = await current_version(env.client, paths.claims(namespace))
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:

        async def cycle(index: int, k: int) -> None:
            name = f"{tag}-{index}-{k}"
            resource = f"bench://cycle/{tag}/{index}/{k}"
            await env.client.create(paths.claims(namespace), claim_body(name, resource, f"agent-{index}"))
            await watch.wait_for(name, HELD, env.timeout)
            await env.client.delete(paths.claims(namespace, name))
            watch.forget(name)

        return await run_cycles(agents, seconds, warmup, cycle)


# ---- 3: contended handoff ----------------------------------------------------------------------


@dataclass
class Handoffs:
    held: list[float] = field(default_factory=list)  # holder's delete → next waiter's Held seen
    lock: list[float] = field(default_factory=list)  # holder's delete → the lock seen with the next waiter
    fifo_violations: int = 0


async def handoff(env: Env, namespace: str, waiters: int, *, queued: Predicate = PENDING) -> Handoffs:
    """A holder and `waiters` queued claims on one resource; each new holder releases as soon as it
    sees Held. `queued` tells when a waiter has been seen by the operator (kubelock: Pending; the
    naive comparator has no queue and only records its retry on the claim)."""
    tag = unique("h")
    resource = f"bench://handoff/{tag}"
    lname = lock_of(resource)
    names = [f"{tag}-{i}" for i in range(waiters + 1)]  # names[0] holds first
    watches = {n: Watch(env.client, paths.claims(namespace), fieldSelector=f"metadata.name={n}") for n in names}
    locks = Watch(env.client, paths.locks(namespace), fieldSelector=f"metadata.name={lname}")
    out = Handoffs()
    try:
        for watch in [*watches.values(), locks]:
            await watch.start()
        await env.client.create(paths.claims(namespace), claim_body(names[0], resource, names[0], wait=True))
        await watches[names[0]].wait_for(names[0], HELD, env.timeout)
        for name in names[1:]:
            # One at a time, each seen queued, so the queue order is the creation order.
            await env.client.create(paths.claims(namespace), claim_body(name, resource, name, wait=True))
            await watches[name].wait_for(name, queued, env.timeout)
        holder = names[0]
        remaining = names[1:]
        while remaining:
            began = time.perf_counter()
            await env.client.delete(paths.claims(namespace, holder))
            waits = {
                asyncio.ensure_future(watches[n].wait_for(n, HELD, env.timeout)): n for n in remaining
            }
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            first = min(done, key=lambda t: t.result().at)
            winner = waits[first]
            out.held.append(first.result().at - began)
            seen_lock = await locks.wait_for(lname, owned_by(winner), env.timeout)
            out.lock.append(seen_lock.at - began)
            if winner != remaining[0]:
                out.fifo_violations += 1
            remaining.remove(winner)
            holder = winner
        await env.client.delete(paths.claims(namespace, holder))
        await locks.wait_for(lname, lambda s: deleted(s) and s.at > began, env.timeout)
    finally:
        for watch in [*watches.values(), locks]:
            await watch.close()
    return out


# ---- 10: shared acquire -------------------------------------------------------------------------


async def shared_acquire(env: Env, namespace: str, holders: int, samples: int) -> list[float]:
    """`holders` Shared claims hold one resource; each sample is one more Shared claim on it, created
    → `Held` seen, then released (its grant is added to the lock the others hold, not a new lock)."""
    tag = unique("s")
    resource = f"bench://shared/{tag}"
    version = await current_version(env.client, paths.claims(namespace))
    held: list[float] = []
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:
        readers = [f"{tag}-r{i}" for i in range(holders)]
        for name in readers:
            await env.client.create(paths.claims(namespace), claim_body(name, resource, name, mode="Shared"))
        for name in readers:
            await watch.wait_for(name, HELD, env.timeout)
        for k in range(samples):
            name = f"{tag}-s{k}"
            began = time.perf_counter()
            await env.client.create(paths.claims(namespace), claim_body(name, resource, name, mode="Shared"))
            seen = await watch.wait_for(name, HELD, env.timeout)
            held.append(seen.at - began)
            await env.client.delete(paths.claims(namespace, name))
            await watch.wait_for(name, deleted, env.timeout)
            watch.forget(name)
        for name in readers:
            await env.client.delete(paths.claims(namespace, name))
    await settle_locks(env, namespace)
    return held


# ---- 11: semaphore handoff ---------------------------------------------------------------------


SEMAPHORE_PREFIX = "bench://semaphore/"


async def ensure_semaphore_policy(env: Env, namespace: str, capacity: int) -> None:
    """A LockPolicy giving every resource under SEMAPHORE_PREFIX `capacity` permits."""
    body: Body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LockPolicy", "metadata": {"name": "bench-semaphore"},
        "spec": {"resourcePrefix": SEMAPHORE_PREFIX, "capacity": capacity},
    }
    await delete_quietly(env.client, paths.policies(namespace, "bench-semaphore"))
    await env.client.create(paths.policies(namespace), body)


async def semaphore_handoff(env: Env, namespace: str, capacity: int, waiters: int) -> Handoffs:
    """`capacity` holders fill a resource's permits and `waiters` queue behind them; the oldest
    holder releases, the first waiter must be granted the freed permit (`Held` seen), and so on until
    every waiter held. FIFO: the waiter granted is the first in line."""
    tag = unique("m")
    resource = f"{SEMAPHORE_PREFIX}{tag}"
    names = [f"{tag}-{i}" for i in range(capacity + waiters)]
    out = Handoffs()
    version = await current_version(env.client, paths.claims(namespace))
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:
        for name in names[:capacity]:
            await env.client.create(paths.claims(namespace), claim_body(name, resource, name, wait=True))
            await watch.wait_for(name, HELD, env.timeout)
        for name in names[capacity:]:
            # One at a time, each seen queued, so the queue order is the creation order.
            await env.client.create(paths.claims(namespace), claim_body(name, resource, name, wait=True))
            await watch.wait_for(name, PENDING, env.timeout)
        holding = list(names[:capacity])
        remaining = names[capacity:]
        while remaining:
            began = time.perf_counter()
            await env.client.delete(paths.claims(namespace, holding.pop(0)))
            waits = {asyncio.ensure_future(watch.wait_for(n, HELD, env.timeout)): n for n in remaining}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            first = min(done, key=lambda t: t.result().at)
            winner = waits[first]
            out.held.append(first.result().at - began)
            if winner != remaining[0]:
                out.fifo_violations += 1
            remaining.remove(winner)
            holding.append(winner)
        for name in holding:
            await env.client.delete(paths.claims(namespace, name))
    await settle_locks(env, namespace)
    return out


# ---- 5: pod deleted → its lock granted to the next waiter --------------------------------------


async def pod_handoff(env: Env, namespace: str, samples: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(samples):
        tag = unique("p")
        pod, holder, waiter = f"{tag}-pod", f"{tag}-holder", f"{tag}-waiter"
        resource = f"bench://pod/{tag}"
        async with (
            Watch(env.client, paths.pods(namespace), fieldSelector=f"metadata.name={pod}") as pods,
            Watch(env.client, paths.claims(namespace), fieldSelector=f"metadata.name={holder}") as held,
            Watch(env.client, paths.claims(namespace), fieldSelector=f"metadata.name={waiter}") as waits,
        ):
            created = await env.client.create(paths.pods(namespace), pod_body(pod, env.node, holder_label=True))
            uid = str(created["metadata"]["uid"])
            await pods.wait_for(pod, pod_running, env.timeout)
            await env.client.create(
                paths.claims(namespace), claim_body(holder, resource, holder, pod=(pod, uid))
            )
            await held.wait_for(holder, HELD, env.timeout)
            await env.client.create(paths.claims(namespace), claim_body(waiter, resource, waiter, wait=True))
            await waits.wait_for(waiter, PENDING, env.timeout)
            began = time.perf_counter()
            await env.client.delete(paths.pods(namespace, pod))
            seen = await waits.wait_for(waiter, HELD, env.timeout)
            latencies.append(seen.at - began)
            await pods.wait_for(pod, deleted, env.timeout)
            await env.client.delete(paths.claims(namespace, waiter))
            await env.client.delete(paths.claims(namespace, holder))
    await settle_locks(env, namespace)
    return latencies


# ---- 6: deadlock in a chain --------------------------------------------------------------------


async def build_chain(env: Env, namespace: str, length: int, tag: str) -> None:
    """Holder i holds r_i and waits for r_{i+1}, for i < length-1; everything seen settled."""
    version = await current_version(env.client, paths.claims(namespace))
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:
        holds = [f"{tag}-hold-{i}" for i in range(length)]
        await gather_limited(
            range(length),
            lambda i: env.client.create(
                paths.claims(namespace), claim_body(holds[i], f"bench://chain/{tag}/{i}", f"{tag}-agent-{i}")
            ),
            32,
        )
        await gather_limited(holds, lambda n: watch.wait_for(n, HELD, env.timeout * 5), len(holds))
        waits = [f"{tag}-wait-{i}" for i in range(length - 1)]
        await gather_limited(
            range(length - 1),
            lambda i: env.client.create(
                paths.claims(namespace),
                claim_body(waits[i], f"bench://chain/{tag}/{i + 1}", f"{tag}-agent-{i}", wait=True),
            ),
            32,
        )
        await gather_limited(waits, lambda n: watch.wait_for(n, PENDING, env.timeout * 5), len(waits))


async def deadlock(env: Env, namespace: str, length: int, samples: int, tag: str) -> list[float]:
    """Closing claims (the last holder asks for r_0): create → `Deadlocked` seen, one at a time."""
    latencies: list[float] = []
    for k in range(samples):
        name = f"{tag}-close-{k}"
        async with Watch(env.client, paths.claims(namespace), fieldSelector=f"metadata.name={name}") as watch:
            began = time.perf_counter()
            await env.client.create(
                paths.claims(namespace),
                claim_body(name, f"bench://chain/{tag}/0", f"{tag}-agent-{length - 1}", wait=True),
            )
            seen = await watch.wait_for(name, phase_is("Deadlocked", "Held", "Pending"), env.timeout)
            if seen.phase == "Pending":  # allowed transiently; the verdict must follow
                seen = await watch.wait_for(name, phase_is("Deadlocked", "Held"), env.timeout)
            if seen.phase != "Deadlocked":
                raise RuntimeError(f"closing claim {name} became {seen.phase}, not Deadlocked")
            latencies.append(seen.at - began)
        await env.client.delete(paths.claims(namespace, name))
    return latencies


# ---- 7, 8, 4: many live locks ------------------------------------------------------------------


async def populate(env: Env, namespace: str, count: int, tag: str, start: int = 0) -> float:
    """Creates held claims `tag-start .. tag-(count-1)` (long TTL) and waits until all are Held; seconds."""
    began = time.perf_counter()
    version = await current_version(env.client, paths.claims(namespace))
    names = [f"{tag}-{i}" for i in range(start, count)]
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:
        await gather_limited(
            names,
            lambda n: env.client.create(paths.claims(namespace), claim_body(n, f"bench://live/{n}", f"holder-{n}")),
            32,
        )
        await gather_limited(names, lambda n: watch.wait_for(n, HELD, 600), len(names))
    return time.perf_counter() - began


@dataclass(frozen=True)
class Expiry:
    lateness: list[float]  # seconds between status.expiresAt and the client seeing Expired
    window: float  # seconds between the first and the last expiresAt (the ends' actual spread)
    aimed: float = 0.0  # the window the ends were aimed into (0: the old, create-paced scenario)
    outside: int = 0  # leases whose end the aiming could not bring into that window
    busiest_second: int = 0  # the most leases ending within any one second
    renewed_late: int = 0  # aiming renewals the operator took after the window had opened (in the storm)


async def expiry(env: Env, namespace: str, count: int, rate: float, window: float = 0.0) -> Expiry:
    """`count` claims whose leases end within `window` seconds of each other, among the live ones.

    The claims are created at `rate` a second with a long lease and granted at whatever pace the
    machine holds; only then are their ends set, by a renewal of each (one merge patch: a new
    `ttlSeconds` and the renewal annotation), whose TTL is computed from when the operator observed
    the claim's previous renewal, so that each end lands on its own slot of one `window` starting a
    few seconds after the last renewal is due. ttlSeconds is whole seconds and the renewal's
    observation lags its write, so a lease whose `expiresAt` falls outside the window is renewed
    again with a corrected TTL, while there is time before the window opens. The spread of the ends
    therefore does not depend on how fast the grants come, as it did with `window=0` (the scenario
    before 2026-11-27: TTLs at creation aimed at one instant, the spread left to the grants' lag).
    """
    if window <= 0:
        return await _expiry_paced(env, namespace, count, rate)
    tag = unique("x")
    version = await current_version(env.client, paths.claims(namespace))
    names = [f"{tag}-{i}" for i in range(count)]
    expires: dict[str, float] = {}
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:

        async def create(index: int) -> None:
            await asyncio.sleep(index / rate)
            body = claim_body(names[index], f"bench://expiry/{names[index]}", "agent", ttl=3600)
            await env.client.create(paths.claims(namespace), body)
            await watch.wait_for(names[index], HELD, env.timeout)

        began = time.time()
        await asyncio.gather(*(create(i) for i in range(count)))
        granted = time.time() - began
        # The window opens once the aiming pass can be over: at first, at the pace the grants came,
        # twice over (a renewal is two writes of the operator, as a grant is), plus a margin. A pass
        # whose pace says it would still run when the window opens is given up early and made again,
        # all of it, before a window placed at the pace the given-up pass went: its last renewals
        # would otherwise fall into the storm it measures, and their leases end after the window
        # (11.3 s of ends where 5.5 s were aimed, on a loaded machine, before 2026-11-28).
        aiming = _aiming_time(count, rate, granted, 0.0)
        lag = [0.2]  # write → the operator's renewal: the last one seen (the first guessed)
        for made in range(AIM_PASSES):
            aimed = await _aim_pass(env, watch, namespace, names, time.time() + aiming, window, lag, expires,
                                    may_give_up=made < AIM_PASSES - 1)
            if not aimed.given_up:
                break
            aiming = _aiming_time(count, rate, granted, aimed.seconds / max(1, aimed.renewed))
        # Waited for from now: until the window's end (a given-up pass puts it minutes off), then as long
        # as any other step.
        within = max(0.0, max(expires.values()) - time.time()) + env.timeout * 2
        seen_expired = await gather_limited(names, lambda n: watch.wait_for(n, phase_is("Expired"), within), count)
    lateness = [s.wall - expires[n] for n, s in zip(names, seen_expired, strict=True)]
    await gather_limited(names, lambda n: delete_quietly(env.client, paths.claims(namespace, n)), 32)
    summed = _summed(lateness, sorted(expires.values()), window, len(aimed.outside))
    return replace(summed, renewed_late=len(aimed.renewed_late))


@dataclass
class _Aimed:
    """One aiming pass of #4."""

    seconds: float = 0.0
    renewed: int = 0  # claims renewed at least once
    given_up: bool = False  # the pass ran late and stopped: to be made again before a later window
    outside: set[str] = field(default_factory=set)  # leases whose end is outside the window
    renewed_late: set[str] = field(default_factory=set)  # renewals the operator took after it opened


async def _aim_pass(
    env: Env, watch: Watch, namespace: str, names: list[str], opens: float, window: float, lag: list[float],
    expires: dict[str, float], *, may_give_up: bool,
) -> _Aimed:
    """Renew every claim of `names` so that its lease ends on its own slot of the `window` seconds
    from `opens` (`expires` gets the ends, `lag` the last lag seen from a write to the operator's
    renewal); if `may_give_up`, given up as soon as its pace says it would not be over before the
    window opens."""
    margin = min(0.5, window / 4)
    slots = {n: opens + margin + (window - 2 * margin) * i / max(1, len(names) - 1) for i, n in enumerate(names)}
    aimed = _Aimed()
    began = time.time()

    async def aim(name: str) -> None:
        """Renew `name` towards its slot; again while it missed the window and a renewal can still
        be seen before the window opens."""
        for attempt in range(3):
            sent = time.time()
            if attempt == 0 and aimed.given_up:
                return
            if attempt == 0 and may_give_up and aimed.renewed >= 2 * AIM_IN_FLIGHT:
                # At the pace so far, the pass would not be over, with a renewal's lag to spare, when
                # the window opens: given up while the leases renewed so far end a long way off yet
                # (the next pass renews them again first).
                over = began + (sent - began) * len(names) / aimed.renewed
                if over + 2 * lag[0] + 1.0 > opens:
                    aimed.given_up = True
                    return
            ttl = _ttl_towards(slots[name], sent + lag[0], opens, window)
            status = await _renew(env, watch, namespace, name, ttl, f"aim-{attempt}-{sent:.3f}")
            renewed = from_rfc3339(str(status["renewedAt"]))
            if renewed > opens:
                aimed.renewed_late.add(name)
            expires[name] = from_rfc3339(str(status["expiresAt"]))
            lag[0] = renewed - sent
            aimed.renewed += attempt == 0
            if opens <= expires[name] <= opens + window:
                aimed.outside.discard(name)
                return
            aimed.outside.add(name)
            if time.time() + 2 * lag[0] + 1.0 > opens:
                return

    # Renewals in flight are limited, not paced: a backlog in the operator would make the lag of each
    # renewal longer than the last, and every aim miss by it.
    await gather_limited(names, aim, AIM_IN_FLIGHT)
    aimed.seconds = time.time() - began
    return aimed


async def _renew(env: Env, watch: Watch, namespace: str, name: str, ttl: int, marker: str) -> dict[str, Any]:
    """Renew `name` with `ttl` (one merge patch of the TTL and the renewal annotation) and return its
    status once the operator has taken the renewal."""
    patch = {"metadata": {"annotations": {RENEW_ANNOTATION: marker}}, "spec": {"ttlSeconds": ttl}}
    await env.client.patch(paths.claims(namespace, name), patch)
    status: dict[str, Any] = (await watch.wait_for(name, _renewed(marker), env.timeout)).obj["status"]
    return status


def _aiming_time(count: int, rate: float, granted: float, per_renewal: float) -> float:
    """Seconds from now to the window's opening: the `count` renewals at the grants' pace (`granted`
    seconds for them, at least `count / rate`) twice over, or at the pace of a pass given up as late
    (`per_renewal` seconds each, renewals in flight included) half as much again, whichever is
    longer, plus 5 s."""
    return max(2 * max(count / rate, granted), 1.5 * per_renewal * count) + 5.0


def _ttl_towards(slot: float, renewed: float, opens: float, window: float) -> int:
    """The whole seconds from `renewed` to the end nearest `slot` that falls in the window, if one of
    the two nearest does (rounding alone would miss a 1 s window half the time)."""
    near = sorted(
        {max(1, math.floor(slot - renewed)), max(1, math.ceil(slot - renewed))}, key=lambda k: abs(renewed + k - slot)
    )
    inside = [k for k in near if opens <= renewed + k <= opens + window]
    return (inside or near)[0]


def _renewed(marker: str) -> Predicate:
    return lambda seen: seen.type != "DELETED" and (seen.obj.get("status") or {}).get("observedRenew") == marker


def _summed(lateness: list[float], ends: list[float], aimed: float, outside: int) -> Expiry:
    busiest = max((bisect.bisect_right(ends, end + 1.0) - i for i, end in enumerate(ends)), default=0)
    return Expiry(lateness, ends[-1] - ends[0], aimed, outside, busiest)


async def _expiry_paced(env: Env, namespace: str, count: int, rate: float) -> Expiry:
    """The scenario before 2026-11-27: TTLs at creation aimed at one instant, so the ends' spread is
    the grants' lag (the creates' pace under load), which the scenario does not hold."""
    tag = unique("x")
    version = await current_version(env.client, paths.claims(namespace))
    names = [f"{tag}-{i}" for i in range(count)]
    expires: dict[str, float] = {}
    async with Watch(env.watcher, paths.claims(namespace), resource_version=version) as watch:
        spread = count / rate
        target = time.time() + spread + 3.0

        async def create(index: int) -> None:
            await asyncio.sleep(index / rate)
            ttl = max(1, round(target - time.time()))
            await env.client.create(
                paths.claims(namespace), claim_body(names[index], f"bench://expiry/{names[index]}", "agent", ttl=ttl)
            )
            held = await watch.wait_for(names[index], HELD, env.timeout)
            expires[names[index]] = from_rfc3339(str(held.obj["status"]["expiresAt"]))

        await asyncio.gather(*(create(i) for i in range(count)))
        seen = await gather_limited(names, lambda n: watch.wait_for(n, phase_is("Expired"), env.timeout * 2), count)
    lateness = [s.wall - expires[n] for n, s in zip(names, seen, strict=True)]
    await gather_limited(names, lambda n: delete_quietly(env.client, paths.claims(namespace, n)), 32)
    return _summed(lateness, sorted(expires.values()), 0.0, 0)


async def restart(env: Env, operator: OperatorProcess, namespace: str, *, within: float) -> float:
    """SIGKILL the operator, start a new process at once, ask for a new lock: seconds until Held."""
    name = unique("r")
    async with Watch(env.client, paths.claims(namespace), fieldSelector=f"metadata.name={name}") as watch:
        began = time.perf_counter()
        operator.kill()
        operator.spawn()
        await env.client.create(paths.claims(namespace), claim_body(name, f"bench://restart/{name}", "agent"))
        seen = await watch.wait_for(name, HELD, within)
        elapsed = seen.at - began
    await operator.wait_ready(60)
    await env.client.delete(paths.claims(namespace, name))
    return elapsed


# ---- 9: churn at fan-in ----------------------------------------------------------------------


@dataclass
class Churn:
    in_window: int  # acquires that returned within the measured window
    seconds: float  # the window
    took: list[float]  # acquire → Held, as the SDK returned it, within the window
    errors: dict[str, int]
    cores: dict[str, float]  # CPU seconds per second of the window, per process
    processes: int
    # The API server's refusals (see harness.apiserver_refusals) counted once every agent knew its
    # identity, before any of them made a claim: what the start-up itself was refused.
    refused_at_ready: Counter[tuple[str, ...]] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.in_window / self.seconds


async def churn(
    client: KubeClient, kubeconfig: Path, namespace: str, log_dir: Path, pids: dict[str, int], *,
    agents: int, processes: int, resources: int, seconds: float, warmup: float,
) -> Churn:
    """`agents` SDK clients in `processes` agent processes (`bench/churn.py`) acquire and release
    random resources among `resources`, waiting in their queues. The window opens `warmup` seconds
    after every process was told to go and lasts `seconds`; CPU is read at both ends of it."""
    tag = unique("ch")
    # The agents are an unprivileged ServiceAccount, as real agents are, not the bench's admin: the API
    # server's priority and fairness then queues their requests apart from the operator's.
    await identities.ensure_agent_account(client, namespace, CHURN_ACCOUNT)
    bearer = await identities.token(client, namespace, account=CHURN_ACCOUNT)
    per = -(-agents // processes)
    counts = [min(per, agents - i * per) for i in range(processes) if agents - i * per > 0]
    env = {**os.environ, "PYTHONPATH": str(OPERATOR_SOURCE[0]), "BENCH_AGENT_TOKEN": bearer}
    procs = []
    try:
        for i, n in enumerate(counts):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, str(REPO / "bench" / "churn.py"), "--kubeconfig", str(kubeconfig),
                "--namespace", namespace, "--agents", str(n), "--prefix", f"{tag}-{i}", "--tag", tag,
                "--resources", str(resources),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=_log_file(log_dir, f"churn-{tag}-{i}.log"), env=env,
            ))
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 180)
            if not line:
                raise RuntimeError(f"a churn agent process exited before it was ready (logs in {log_dir})")
        refused_at_ready = await apiserver_refusals(client.credentials)
        go = time.time()
        stop = go + warmup + seconds
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{stop}\n".encode())
            await proc.stdin.drain()
        await asyncio.sleep(warmup)
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        opened = time.time()
        await asyncio.sleep(max(0.0, stop - time.time()))
        cores = {k: (cpu_seconds(p) - before[k]) / (time.time() - opened) for k, p in pids.items()}
        outputs = [json.loads((await asyncio.wait_for(proc.stdout.readline(), 300)) or b"{}")  # type: ignore[union-attr]
                   for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    done = [t for o in outputs for t in o.get("done", [])]
    took = [d for o in outputs for t, d in zip(o.get("done", []), o.get("took", []), strict=True) if t >= opened]
    errors: dict[str, int] = {}
    for o in outputs:
        for kind, n in (o.get("errors") or {}).items():
            errors[kind] = errors.get(kind, 0) + n
    in_window = sum(1 for t in done if opened <= t <= stop)
    return Churn(in_window, stop - opened, took, errors, cores, len(procs), refused_at_ready)


def _log_file(log_dir: Path, name: str) -> IO[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    return (log_dir / name).open("wb")
