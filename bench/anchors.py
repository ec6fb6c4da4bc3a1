"""The physical floor: what the same API server does at best with `coordination.k8s.io/v1` Leases and
pods, measured with the same client, the same watches and the same event loop as kubelock.

W  Lease create → 201                      O  Lease create → seen on a separate watch
H  holder deletes its Lease → waiter sees DELETED → waiter creates → 201
T(N)  Lease create+delete cycles/s with N clients on distinct names
L  LIST + parse of many Leases (paginated as the operator lists)
P  pod delete → the deletion seen on a watch
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from harness import Env, Seen, Watch, added, delete_quietly, deleted_after, gather_limited, unique

from kubelock.api.constants import GROUP, VERSION
from kubelock.domain.timefmt import to_rfc3339
from kubelock.kube import paths
from kubelock.kube.client import Body


def leases(namespace: str, name: str | None = None) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases" + (f"/{name}" if name else "")


def lease_body(name: str, holder: str = "bench") -> Body:
    now = to_rfc3339(time.time())
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1800, "acquireTime": now, "renewTime": now},
    }


def pod_body(name: str, node: str, *, holder_label: bool) -> Body:
    labels = {"kubelock.dev/lock-holder": "true"} if holder_label else {"bench.kubelock.dev/anchor": "true"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "agent", "image": "registry.invalid/agent:bench"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }


def pod_gone(seen: Seen) -> bool:
    """The first sign a watcher gets that a pod is going: DELETED, or deletionTimestamp set."""
    return seen.type == "DELETED" or bool((seen.obj.get("metadata") or {}).get("deletionTimestamp"))


def pod_running(seen: Seen) -> bool:
    return seen.type != "DELETED" and (seen.obj.get("status") or {}).get("phase") == "Running"


@dataclass(frozen=True)
class CreateSeen:
    w: list[float]  # create → 201
    o: list[float]  # create → seen on the watch


async def create_seen(env: Env, namespace: str, samples: int) -> CreateSeen:
    w: list[float] = []
    o: list[float] = []
    for _ in range(samples):
        name = unique("o")
        async with Watch(env.client, leases(namespace), fieldSelector=f"metadata.name={name}") as watch:
            began = time.perf_counter()
            await env.client.create(leases(namespace), lease_body(name))
            created = time.perf_counter()
            seen = await watch.wait_for(name, added, env.timeout)
        w.append(created - began)
        o.append(seen.at - began)
        await env.client.delete(leases(namespace, name))
    return CreateSeen(w, o)


@dataclass(frozen=True)
class Cycles:
    in_window: int  # cycles completed within the measured window (after the warm-up)
    total: int  # every cycle run, warm-up and stragglers included (the unit of per-cycle costs)
    seconds: float

    @property
    def rate(self) -> float:
        return self.in_window / self.seconds


CycleFn = Callable[[int, int], Awaitable[None]]  # (agent, k) -> one complete cycle


async def run_cycles(agents: int, seconds: float, warmup: float, cycle: CycleFn) -> Cycles:
    """`agents` loops of `cycle`; the rate is the cycles that end within the measured window.

    The window opens once every agent has finished a cycle and `warmup` has passed (N agents that
    start at the same instant first meet cold connections and a burst, which is not the steady rate)
    and closes after `seconds`, but not before `agents` cycles ended in it: under load the cycles
    come in waves, and a window shorter than one wave measures the wave, not the rate. After the
    window each agent finishes the cycle it is in (those count in `total` only).
    """
    began = time.perf_counter()
    window: list[float] = []  # [start] once open, [start, end] once closed
    warmed = 0
    in_window = 0
    total = 0
    everyone = asyncio.Event()

    def closed() -> bool:
        return len(window) == 2

    async def agent(index: int) -> None:
        nonlocal warmed, in_window, total
        k = 0
        while not closed():
            await cycle(index, k)
            k += 1
            total += 1
            if k == 1:
                warmed += 1
                if warmed == agents:
                    everyone.set()
            if len(window) == 1:
                in_window += 1
                now = time.perf_counter()
                if now - window[0] >= seconds and in_window >= agents:
                    window.append(now)

    async def open_window() -> None:
        await everyone.wait()
        await asyncio.sleep(max(0.0, began + warmup - time.perf_counter()))
        window.append(time.perf_counter())

    opener = asyncio.create_task(open_window())
    try:
        await asyncio.gather(*(agent(i) for i in range(agents)))
    finally:
        opener.cancel()
    return Cycles(in_window, total, window[1] - window[0] if closed() else seconds)


async def lease_cycles(env: Env, namespace: str, agents: int, seconds: float, warmup: float) -> Cycles:
    tag = unique("t")

    async def cycle(index: int, k: int) -> None:
        name = f"{tag}-{index}-{k}"
        await env.client.create(leases(namespace), lease_body(name))
        await env.client.delete(leases(namespace, name))

    return await run_cycles(agents, seconds, warmup, cycle)


def resource_lock_body(name: str) -> Body:
    now = to_rfc3339(time.time())
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResourceLock",
        "metadata": {"name": name},
        "spec": {
            "resource": f"bench://floor/{name}", "holder": "bench", "claimRef": {"name": name, "uid": name},
            "leaseDurationSeconds": 1800, "acquireTime": now, "renewTime": now, "fencingToken": 1,
        },
    }


async def custom_resource_cycles(env: Env, namespace: str, agents: int, seconds: float, warmup: float) -> Cycles:
    """T(N) with a custom resource (a bare ResourceLock, no operator): what the CRD alone costs."""
    tag = unique("cr")

    async def cycle(index: int, k: int) -> None:
        name = f"{tag}-{index}-{k}"
        await env.client.create(paths.locks(namespace), resource_lock_body(name))
        await env.client.delete(paths.locks(namespace, name))

    return await run_cycles(agents, seconds, warmup, cycle)


async def lease_handoff(env: Env, namespace: str, waiters: int) -> list[float]:
    """A chain of raw handoffs: each waiter watches the Lease; the next in line re-creates it on DELETED.

    Every waiter keeps its watch open, so the fan-out of events matches kubelock's queue of waiters.
    """
    name = unique("h")
    watches = [Watch(env.client, leases(namespace), fieldSelector=f"metadata.name={name}") for _ in range(waiters)]
    for watch in watches:
        await watch.start()
    latencies: list[float] = []
    try:
        await env.client.create(leases(namespace), lease_body(name, "holder"))
        for index, watch in enumerate(watches):
            began = time.perf_counter()
            await env.client.delete(leases(namespace, name))
            await watch.wait_for(name, deleted_after(began), env.timeout)
            await env.client.create(leases(namespace), lease_body(name, f"waiter-{index}"))
            latencies.append(time.perf_counter() - began)
        await delete_quietly(env.client, leases(namespace, name))
    finally:
        for watch in watches:
            await watch.close()
    return latencies


async def create_leases(env: Env, namespace: str, count: int, prefix: str = "l") -> None:
    await gather_limited(range(count), lambda i: env.client.create(leases(namespace), lease_body(f"{prefix}-{i}")), 32)


async def list_leases(env: Env, namespace: str) -> tuple[float, int]:
    """LIST (500 a page, as the operator's resync) and parse every Lease; (seconds, items)."""
    began = time.perf_counter()
    items, _ = await env.client.list_all(leases(namespace), page=500)
    return time.perf_counter() - began, len(items)


async def pod_delete_seen(env: Env, namespace: str, node: str, samples: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(samples):
        name = unique("p")
        async with Watch(env.client, paths.pods(namespace), fieldSelector=f"metadata.name={name}") as watch:
            await env.client.create(paths.pods(namespace), pod_body(name, node, holder_label=False))
            await watch.wait_for(name, pod_running, env.timeout)
            began = time.perf_counter()
            await env.client.delete(paths.pods(namespace, name))
            seen = await watch.wait_for(name, pod_gone, env.timeout)
            latencies.append(seen.at - began)
            await watch.wait_for(name, lambda s: s.type == "DELETED", env.timeout)
    return latencies
