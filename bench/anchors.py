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
from dataclasses import dataclass

from harness import Env, Seen, Watch, added, delete_quietly, gather_limited, unique
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
    in_window: int  # cycles completed within the window
    total: int  # every cycle started in the window, all completed
    seconds: float

    @property
    def rate(self) -> float:
        return self.in_window / self.seconds


async def lease_cycles(env: Env, namespace: str, agents: int, seconds: float) -> Cycles:
    tag = unique("t")
    end = time.perf_counter() + seconds
    in_window = 0
    total = 0

    async def agent(index: int) -> None:
        nonlocal in_window, total
        k = 0
        while time.perf_counter() < end:
            name = f"{tag}-{index}-{k}"
            k += 1
            await env.client.create(leases(namespace), lease_body(name))
            await env.client.delete(leases(namespace, name))
            total += 1
            if time.perf_counter() <= end:
                in_window += 1

    await asyncio.gather(*(agent(i) for i in range(agents)))
    return Cycles(in_window, total, seconds)


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
            await watch.wait_for(name, lambda s, t=began: s.type == "DELETED" and s.at >= t, env.timeout)
            await env.client.create(leases(namespace), lease_body(name, f"waiter-{index}"))
            latencies.append(time.perf_counter() - began)
        await delete_quietly(env.client, leases(namespace, name))
    finally:
        for watch in watches:
            await watch.close()
    return latencies


async def create_leases(env: Env, namespace: str, count: int, prefix: str = "l") -> None:
    await gather_limited(
        (lambda i=i: env.client.create(leases(namespace), lease_body(f"{prefix}-{i}")) for i in range(count)), 32
    )


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
