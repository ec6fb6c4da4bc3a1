"""Identity attacks for the bad-input corpus: what a hostile or careless agent would try.

A pod in another namespace with the same name as a holder pod, a user named like a pod, a holder name
from before instances, a pod claiming with another incarnation's instance, finalizers on one's own
claim, two instances of one identity, SIGTERM while an `rlock --wait` is queued, and a claim whose
lease ran out while the operator was stopped. Each must fail, and say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chaos import identities
from chaos.agents import create_pod
from kubelock.domain.resource import claim_name, normalise
from kubelock.kube import config, paths
from kubelock.kube import errors as kube_errors
from kubelock.kube.client import KubeClient
from kubelock.sdk import AsyncLockClient

if TYPE_CHECKING:
    from chaos.badinput import Corpus
    from chaos.faults import Operator
    from chaos.scenarios import Env

Body = dict[str, Any]
RESOURCE = "chaos://attack/victim"


async def _refused(c: Corpus, case: str, call: Callable[[], Awaitable[object]], mentions: str) -> None:
    try:
        await call()
    except kube_errors.ApiError as error:
        clear = error.status == 403 and mentions.lower() in (error.message or "").lower()
        c.add(case, "admission", f"403 naming {mentions}", f"refused {error.status}: {error.message}", clear)
        return
    c.add(case, "admission", f"403 naming {mentions}", "accepted", False)


def _claim(name: str, holder: str, *, pod: tuple[str, str] | None = None, extra: Body | None = None) -> Body:
    spec: Body = {"resource": RESOURCE, "holder": holder}
    if pod is not None:
        spec["podRef"] = {"name": pod[0], "uid": pod[1]}
    return {"apiVersion": "kubelock.dev/v1alpha1", "kind": "LockClaim", "metadata": {"name": name, **(extra or {})},
            "spec": spec}


async def _bind(kube: KubeClient, namespace: str, name: str, subject: Body) -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": identities.ROLE},
        "subjects": [subject],
    }
    with contextlib.suppress(kube_errors.Conflict):
        await kube.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", binding)


async def _pod_client(c: Corpus, admin: config.Credentials, namespace: str, pod: str, node: str) -> tuple[KubeClient,
                                                                                                          str]:
    uid = await create_pod(c.kube, namespace, pod, node, agent="attack")
    bearer = await identities.token(c.kube, namespace, pod=(pod, uid))
    client = KubeClient(identities.as_token(admin, bearer))
    await identities.wait_until_allowed(client, c.namespace)
    return client, uid


def _command(c: Corpus, env: Env, instance: str, *args: str) -> tuple[list[str], dict[str, str]]:
    argv = [sys.executable, "-c", "import sys; from kubelock.cli.compat import rlock; sys.exit(rlock())", *args]
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBELOCK_"))}
    variables.update(KUBECONFIG=str(env.plane.user_kubeconfig("alice")), KUBELOCK_NAMESPACE=c.namespace,
                     KUBELOCK_INSTANCE=instance)
    return argv, variables


async def _rlock(c: Corpus, env: Env, instance: str, *args: str) -> tuple[int, Body]:
    argv, variables = _command(c, env, instance, *args)
    process = await asyncio.create_subprocess_exec(*argv, env=variables, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    return int(process.returncode or 0), json.loads(out.decode().strip().splitlines()[-1] or "{}")


async def _phase(c: Corpus, name: str) -> str | None:
    try:
        body = await c.kube.get(paths.claims(c.namespace, name))
    except kube_errors.NotFound:
        return None
    return str((body.get("status") or {}).get("phase") or "")


async def identity_attacks(c: Corpus, env: Env, operator: Operator) -> None:
    ns, other = c.namespace, f"{c.namespace}-x"
    admin = config.load(env.plane.kubeconfig)
    await c.kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    clients: list[KubeClient] = []
    try:
        for where in (ns, other):
            await identities.ensure_agent_account(c.kube, where)
        await _bind(c.kube, ns, "from-other", {"kind": "ServiceAccount", "name": identities.SERVICE_ACCOUNT,
                                              "namespace": other})
        await _bind(c.kube, ns, "alice", {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"})
        here, uid = await _pod_client(c, admin, ns, "agent-a", env.node)
        twin, _ = await _pod_client(c, admin, other, "agent-a", env.node)
        namesake, namesake_uid = await _pod_client(c, admin, ns, "alice", env.node)
        alice = KubeClient(config.load(env.plane.user_kubeconfig("alice")))
        clients += [here, twin, namesake, alice]
        await identities.wait_until_allowed(alice, ns)
        claims = paths.claims(ns)
        mine = f"pod:{ns}/agent-a/{uid[:8]}"
        await here.create(claims, _claim("victim", mine, pod=("agent-a", uid)))
        await namesake.create(claims, _claim("pod-alice", f"pod:{ns}/alice/{namesake_uid[:8]}",
                                             pod=("alice", namesake_uid)))
        await alice.create(claims, _claim("user-alice", "user:alice/laptop"))
        renew = {"metadata": {"annotations": {"kubelock.dev/renew": "attack"}}}
        victim = paths.claims(ns, "victim")

        await _refused(c, "pod of one name in another namespace claims as the pod here",
                       lambda: twin.create(claims, _claim("forged", mine)), "identity")
        await _refused(c, "... renews the pod's claim", lambda: twin.patch(victim, renew), "only the holder")
        await _refused(c, "... shortens its TTL", lambda: twin.patch(victim, {"spec": {"ttlSeconds": 1}}),
                       "only the holder")
        await _refused(c, "... deletes it", lambda: twin.delete(victim), "only the holder")
        await _refused(c, "user named like a pod renews the pod's claim",
                       lambda: alice.patch(paths.claims(ns, "pod-alice"), renew), "only the holder")
        await _refused(c, "user named like a pod deletes the pod's claim",
                       lambda: alice.delete(paths.claims(ns, "pod-alice")), "only the holder")
        await _refused(c, "pod named like a user deletes the user's claim",
                       lambda: namesake.delete(paths.claims(ns, "user-alice")), "only the holder")
        await _refused(c, "holder name from before instances (the pod name)",
                       lambda: here.create(claims, _claim("legacy", "agent-a", pod=("agent-a", uid))), "identity")
        await _refused(c, "a pod claims with an instance not of its uid",
                       lambda: here.create(claims, _claim("other-uid", f"pod:{ns}/agent-a/0000beef",
                                                          pod=("agent-a", uid))), "instance")
        await _refused(c, "finalizer on one's own claim",
                       lambda: alice.patch(paths.claims(ns, "user-alice"), {"metadata": {"finalizers": ["x/keep"]}}),
                       "finalizers")
        await _instances(c, env)
        await _sigterm(c, env)
        await _expired(c, env, operator)
    finally:
        for client in clients:
            await client.close()
        with contextlib.suppress(kube_errors.ApiError, kube_errors.Unreachable):
            await c.kube.delete(f"/api/v1/namespaces/{other}")


async def _instances(c: Corpus, env: Env) -> None:
    kubeconfig = str(env.plane.user_kubeconfig("alice"))
    async with AsyncLockClient(kubeconfig=kubeconfig, namespace=c.namespace, instance="w1") as first, \
            AsyncLockClient(kubeconfig=kubeconfig, namespace=c.namespace, instance="w2") as second:
        got = await first.try_acquire("chaos://attack/busy", ttl=600)
        again = await first.try_acquire("chaos://attack/busy")
        other = await second.try_acquire("chaos://attack/busy")
    ok = got.ok and again.ok and again.fencing_token == got.fencing_token and not other.ok \
        and other.holder == "user:alice/w1"
    c.add("two instances of one identity", "sdk", "the first holds (again: same token); the second is refused, "
          "naming the first", f"first {got.ok}/{got.fencing_token}, again {again.ok}/{again.fencing_token}, second "
          f"{other.ok} (holder {other.holder})", ok)


async def _sigterm(c: Corpus, env: Env) -> None:
    argv, variables = _command(c, env, "w3", "--wait", "chaos://attack/busy")
    process = await asyncio.create_subprocess_exec(*argv, env=variables, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    name = claim_name("user:alice/w3", normalise("chaos://attack/busy"))
    for _ in range(300):  # until it waits in the queue (30 s at most)
        if await _phase(c, name) == "Pending":
            break
        await asyncio.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode().strip()
    left = await _phase(c, name)
    ok = process.returncode == 128 + signal.SIGTERM and '"error": "Terminated"' in text and left is None
    c.add("SIGTERM while rlock --wait is queued", "cli", "exit 143, Terminated, no claim left",
          f"exit {process.returncode}: {text[:200]}; claim {'left: ' + left if left is not None else 'gone'}", ok)


EXPIRING_TTLS = (2, 6, 15)  # a longer lease each time the first ran out before the operator was stopped


async def _expired(c: Corpus, env: Env, operator: Operator) -> None:
    """The lease must run out while the operator is stopped. On a loaded machine the first `rlock` can
    take longer to exit than its lease: the operator, still running, expired it before the pause, and
    the second `rlock` found its claim ended, claimed anew and waited for the stopped operator (exit
    6). Then the case is set up again with a longer lease, not judged on what it did not set up."""
    for ttl in EXPIRING_TTLS:
        code, got = await _rlock(c, env, "w4", "--ttl", str(ttl), "chaos://attack/expiring")
        if code != 0:
            c.add("lease ran out while the operator was stopped", "cli", "exit 8", f"could not take it: {got}", False)
            return
        operator.pause()
        try:
            if await _phase(c, str(got.get("claim"))) == "Held":
                await asyncio.sleep(ttl + 1.5)
                code, got = await _rlock(c, env, "w4", "chaos://attack/expiring")
                break
        finally:
            operator.resume()
        await c.delete(str(got.get("claim")))  # the ended claim, before trying again
    else:
        c.add("lease ran out while the operator was stopped, acquired again", "cli", "exit 8, LeaseExpired",
              f"not set up: each lease ({', '.join(map(str, EXPIRING_TTLS))} s) ran out before the operator "
              "was stopped", False)
        return
    ok = code == 8 and got.get("error") == "LeaseExpired" and got.get("ok") is False
    c.add("lease ran out while the operator was stopped, acquired again", "cli", "exit 8, LeaseExpired",
          f"exit {code}: {got.get('error')}: {got.get('message')}", ok)
