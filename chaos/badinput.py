"""The hostile-input corpus: malformed and hostile URIs, TTL edge values, wrong types, missing and unknown
fields, abusive renewals, identity attacks (`chaos.attacks`) and a flood of claims from one holder, sent at
admission (raw API requests), through the SDK and through the CLI, while an operator runs.

Each case states what must happen: refused with an error that names what is wrong, or accepted and
decided by the operator (with the phase it must reach). Afterwards the operator must still be the same
process, with no traceback in its log, and every accepted claim must have had its verdict: nothing
crashes, nothing is lost, every refusal says why. Every case's outcome is kept in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from chaos import attacks
from chaos.faults import Operator
from chaos.history import Report, Violation
from chaos.results import Row
from chaos.scenarios import Env
from kubelock.api.constants import API_VERSION, CLAIM_KIND, RENEW_ANNOTATION
from kubelock.domain.resource import lock_name, normalise
from kubelock.kube import errors as kube_errors
from kubelock.kube import paths
from kubelock.kube.client import KubeClient
from kubelock.sdk import AsyncLockClient, LockError

TITLE = "bad input at admission, through the SDK and the CLI"
VERDICT_SECONDS = 15.0
HOLDER = "bad-input"
Body = dict[str, Any]


@dataclass
class Result:
    case: str
    channel: str  # admission, sdk, cli
    expected: str
    outcome: str
    ok: bool


@dataclass
class Corpus:
    kube: KubeClient
    namespace: str
    kubeconfig: str
    quick: bool
    results: list[Result] = field(default_factory=list)
    seq: int = 0

    def name(self) -> str:
        self.seq += 1
        return f"bad-{self.seq:03d}-{secrets.token_hex(2)}"

    def add(self, case: str, channel: str, expected: str, outcome: str, ok: bool) -> None:
        self.results.append(Result(case, channel, expected, outcome.replace("\n", " ")[:400], ok))

    # ---- admission --------------------------------------------------------------------------

    def body(self, name: str, spec: Any, extra: Body | None = None) -> Body:
        return {"apiVersion": API_VERSION, "kind": CLAIM_KIND, "metadata": {"name": name}, "spec": spec,
                **(extra or {})}

    async def create(self, body: Body, *, strict: bool = True) -> Body:
        params = {"fieldValidation": "Strict"} if strict else {}
        return await self.kube.create(paths.claims(self.namespace), body, **params)

    async def verdict(self, name: str, want: Callable[[Body], bool] | None = None) -> Body | None:
        """The claim once the operator has given it a phase (and `want` holds), or None."""
        deadline = time.monotonic() + VERDICT_SECONDS
        while time.monotonic() < deadline:
            try:
                body = await self.kube.get(paths.claims(self.namespace, name))
            except kube_errors.NotFound:
                return None
            except kube_errors.Unserved:  # a restarting API server: nothing known yet, look again
                await asyncio.sleep(0.1)
                continue
            phase = (body.get("status") or {}).get("phase")
            if phase and (want is None or want(body)):
                return body
            await asyncio.sleep(0.1)
        return None

    async def delete(self, name: str) -> None:
        with contextlib.suppress(kube_errors.NotFound):
            await self.kube.delete(paths.claims(self.namespace, name))

    async def refused(self, case: str, spec: Any, mentions: str, *, strict: bool = True) -> None:
        """The API server must refuse it, and its message must name `mentions`."""
        name = self.name()
        try:
            await self.create(self.body(name, spec), strict=strict)
        except kube_errors.ApiError as error:
            message = error.message or str(error)
            clear = mentions.lower() in message.lower()
            self.add(case, "admission", f"refused, naming {mentions}", f"refused {error.status}: {message}", clear)
            return
        body = await self.verdict(name)
        status = (body or {}).get("status") or {}
        self.add(case, "admission", f"refused, naming {mentions}",
                 f"accepted; operator: {status.get('phase')} {status.get('reason')}: {status.get('message')}", False)
        await self.delete(name)

    async def decided(self, case: str, spec: Any, phases: tuple[str, ...], *, strict: bool = True,
                      keep: bool = False, extra: Body | None = None) -> Body | None:
        """The API server must accept it and the operator decide it, reaching one of `phases`."""
        name = self.name()
        try:
            await self.create(self.body(name, spec, extra), strict=strict)
        except kube_errors.ApiError as error:
            self.add(case, "admission", f"accepted, then {'/'.join(phases)}", f"refused {error.status}: "
                     f"{error.message}", False)
            return None
        body = await self.verdict(name, lambda b: (b.get("status") or {}).get("phase") in phases)
        status = (body or {}).get("status") or {}
        outcome = (f"accepted; operator: {status.get('phase')} ({status.get('reason')}), token "
                   f"{status.get('fencingToken')}") if body else f"accepted; no verdict in {VERDICT_SECONDS:g}s"
        self.add(case, "admission", f"accepted, then {'/'.join(phases)}", outcome, body is not None)
        if not keep:
            await self.delete(name)
        return body

    # ---- SDK and CLI ------------------------------------------------------------------------

    async def sdk_refuses(self, case: str, call: Callable[[AsyncLockClient], Awaitable[object]]) -> None:
        async with AsyncLockClient(kubeconfig=self.kubeconfig, namespace=self.namespace, holder=HOLDER) as client:
            try:
                await call(client)
            except LockError as error:
                ok = error.reason == "InvalidInput" and bool(error.message)
                self.add(case, "sdk", "InvalidInput before any request", f"{type(error).__name__}: {error.message}",
                         ok)
                return
            except Exception as error:  # anything but a LockError is a bug in the SDK
                self.add(case, "sdk", "InvalidInput before any request", f"crashed: {error!r}", False)
                return
        self.add(case, "sdk", "InvalidInput before any request", "accepted", False)

    async def cli(self, case: str, args: list[str], expected_code: int) -> None:
        argv = [sys.executable, "-m", "kubelock.cli.main", "--kubeconfig", self.kubeconfig, "-n", self.namespace,
                "--holder", HOLDER, "--json", *args]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        text = (out or err).decode(errors="replace").strip()
        try:
            message = str(json.loads(text.splitlines()[-1]).get("message", "")) if text else ""
        except ValueError:
            message = text
        ok = process.returncode == expected_code and (expected_code == 0 or bool(message))
        self.add(case, "cli", f"exit {expected_code}", f"exit {process.returncode}: {message or text}", ok)


# ---- the corpus -------------------------------------------------------------------------------------


def spec(resource: Any = "chaos://bad/ok", holder: Any = HOLDER, **fields: Any) -> Body:
    return {"resource": resource, "holder": holder, "ttlSeconds": 30, **fields}


async def uris(c: Corpus) -> None:
    await c.refused("resource with NUL", spec("chaos://a\x00b"), "resource")
    await c.refused("resource with newline", spec("chaos://a\nb"), "resource")
    await c.refused("resource with DEL", spec("chaos://a\x7fb"), "resource")
    await c.refused("resource with right-to-left override", spec("chaos://invoice\u202efdp.exe"), "resource")
    await c.refused("resource with zero-width space", spec("chaos://a\u200bb"), "resource")
    await c.refused("resource with space", spec("chaos://a b"), "resource")
    await c.refused("resource of 10 kB", spec("chaos://" + "a" * 10240), "resource")
    await c.refused("resource of 1025 characters", spec("chaos://" + "a" * (1025 - 8)), "resource")
    await c.decided("resource of exactly 1024 characters", spec("chaos://" + "a" * (1024 - 8)), ("Held",))
    await c.refused("no scheme", spec("no-scheme-here"), "resource")
    await c.refused("empty scheme", spec("://x"), "resource")
    await c.refused("nothing after ://", spec("chaos://"), "resource")
    await c.refused("single slash", spec("chaos:/x"), "resource")
    await c.refused("scheme with a Cyrillic letter", spec("\u0441haos://x"), "resource")
    await c.refused("empty resource", spec(""), "resource")
    await c.refused("dot-dot path (RFC 3986 removes it: another spelling of file://../etc/passwd)",
                    spec("file://../../etc/passwd"), "dot segment")
    await c.decided("percent-encoded traversal", spec("chaos://a%2F..%2Fb"), ("Held",))
    # Confusables in the path are different bytes, hence different locks: both can be held at once.
    latin = await c.decided("path with Latin a", spec("chaos://bad/apple", holder="bad-input"), ("Held",), keep=True)
    cyrillic = await c.decided("path with Cyrillic a (a confusable)", spec("chaos://bad/\u0430pple",
                               holder="bad-input-2"), ("Held",), keep=True)
    distinct = latin is not None and cyrillic is not None and (latin["status"].get("lockName")
                                                              != cyrillic["status"].get("lockName"))
    c.add("confusables are distinct locks", "admission", "two locks, both Held",
          f"lock names {(latin or {}).get('status', {}).get('lockName')} / "
          f"{(cyrillic or {}).get('status', {}).get('lockName')}", distinct)
    for body in (latin, cyrillic):
        if body is not None:
            await c.delete(body["metadata"]["name"])
    # A quote-laden resource is data, never structure: the lock names the claim's own holder.
    injected = await c.decided("JSON-looking resource", spec('chaos://x","holder":"evil'), ("Held",), keep=True)
    if injected is not None:
        lock = await c.kube.get(paths.locks(c.namespace, lock_name(normalise('chaos://x","holder":"evil'))))
        holder = (lock.get("spec") or {}).get("holder")
        c.add("JSON-looking resource: lock holder", "admission", f"lock held by {HOLDER}", f"lock held by {holder}",
              holder == HOLDER)
        await c.delete(injected["metadata"]["name"])
    # Normalisation: another spelling of a held resource is the same lock.
    first = await c.decided("upper-case scheme, trailing slash", spec("CHAOS://bad/same/"), ("Held",), keep=True)
    await c.decided("same resource, other spelling, other holder", spec("chaos://bad/same", holder="bad-input-2"),
                    ("Rejected",))
    if first is not None:
        await c.delete(first["metadata"]["name"])


async def holders(c: Corpus) -> None:
    await c.refused("empty holder", spec(holder=""), "holder")
    await c.refused("holder of 254 characters", spec(holder="h" * 254), "holder")
    await c.decided("holder of 253 characters", spec("chaos://bad/h253", holder="h" * 253), ("Held",))
    await c.refused("holder with a space", spec(holder="two words"), "holder")
    await c.refused("holder with a control character", spec(holder="a\x1bb"), "holder")


async def numbers(c: Corpus) -> None:
    for value in (0, -1, 86401, 2**31, 2**63, 10**30):
        await c.refused(f"ttlSeconds {value}", spec(ttlSeconds=value), "ttlSeconds")
    for odd in ("30", 1.5, True, 1e100):
        await c.refused(f"ttlSeconds {odd!r} ({type(odd).__name__})", spec(ttlSeconds=odd), "ttlSeconds")
    await c.decided("ttlSeconds 1 (then the lease runs out)", spec("chaos://bad/ttl1", ttlSeconds=1), ("Expired",))
    await c.decided("ttlSeconds 86400", spec("chaos://bad/ttlmax", ttlSeconds=86400), ("Held",))
    await c.decided("ttlSeconds omitted (operator default)", {"resource": "chaos://bad/ttldefault", "holder": HOLDER},
                    ("Held",))
    for value in (0, -5, 86401):
        await c.refused(f"waitTimeoutSeconds {value}", spec(wait=True, waitTimeoutSeconds=value), "waitTimeoutSeconds")
    await c.refused("waitTimeoutSeconds without wait", spec(waitTimeoutSeconds=5), "wait")


async def shapes(c: Corpus) -> None:
    await c.refused("resource is a number", spec(42), "resource")
    await c.refused("resource is a list", spec(["chaos://a"]), "resource")
    await c.refused("resource is an object", spec({"uri": "chaos://a"}), "resource")
    await c.refused("holder is a number", spec(holder=7), "holder")
    await c.refused("wait is a string", spec(wait="yes"), "wait")
    await c.refused("podRef is a string", spec(podRef="pod"), "podRef")
    await c.refused("podRef without a name", spec(podRef={}), "name")
    await c.refused("podRef with an invalid name", spec(podRef={"name": "Not_A_Pod"}), "name")
    await c.decided("podRef to a pod that does not exist", spec("chaos://bad/nopod", podRef={"name": "no-such-pod"}),
                    ("Rejected", "Revoked"))
    await c.refused("no spec", None, "spec")
    await c.refused("spec without resource", {"holder": HOLDER}, "resource")
    await c.refused("spec without holder", {"resource": "chaos://bad/x"}, "holder")
    await c.refused("unknown spec field (strict)", spec(color="red"), "color")
    pruned = await c.decided("unknown spec field (not strict: pruned)", spec("chaos://bad/pruned", color="red"),
                             ("Held",), strict=False, keep=True)
    if pruned is not None:
        c.add("unknown field is not stored", "admission", "no spec.color", f"spec keys {sorted(pruned['spec'])}",
              "color" not in pruned["spec"])
        await c.delete(pruned["metadata"]["name"])
    forged = {"status": {"phase": "Held", "holder": HOLDER, "fencingToken": 999_999_999}}
    body = await c.decided("forged status on create", spec("chaos://bad/forged"), ("Held",), keep=True, extra=forged)
    if body is not None:
        token = body["status"].get("fencingToken")
        c.add("forged status is ignored", "admission", "a real token", f"fencingToken {token}", token != 999_999_999)
        await c.delete(body["metadata"]["name"])


async def mutations(c: Corpus) -> None:
    held = await c.decided("claim for mutation cases", spec("chaos://bad/mutate"), ("Held",), keep=True)
    if held is None:
        return
    name = held["metadata"]["name"]
    path = paths.claims(c.namespace, name)
    for case, patch, mentions in (
        ("change resource", {"spec": {"resource": "chaos://bad/other"}}, "immutable"),
        ("change holder", {"spec": {"holder": "someone-else"}}, "immutable"),
        ("turn wait on", {"spec": {"wait": True}}, "wait"),
    ):
        try:
            await c.kube.patch(path, patch)
            c.add(case, "admission", f"refused, naming {mentions}", "accepted", False)
        except kube_errors.ApiError as error:
            c.add(case, "admission", f"refused, naming {mentions}", f"refused {error.status}: {error.message}",
                  mentions.lower() in error.message.lower())
    # Renewal abuse: a 200 kB marker, then a burst of renewals. The lock must survive both.
    for case, markers in (("renewal marker of 200 kB", ["r" * 200_000]),
                          ("100 renewals in a burst", [f"burst-{i}" for i in range(100)])):
        try:
            await asyncio.gather(*(c.kube.patch(path, {"metadata": {"annotations": {RENEW_ANNOTATION: m}}})
                                   for m in markers))
            outcome = "accepted"
        except kube_errors.ApiError as error:
            outcome = f"refused {error.status}: {error.message[:120]}"
        except kube_errors.Unreachable as error:
            # A burst of 100 writes on a loaded machine: the API server may drop a connection after
            # the client's retries. What is checked is the claim, which must stay Held either way.
            outcome = f"not answered: {str(error)[:120]}"
        await asyncio.sleep(1.0)
        after = await c.kube.get(path)
        phase = (after.get("status") or {}).get("phase")
        c.add(case, "admission", "the claim stays Held", f"{outcome}; claim {phase}", phase == "Held")
    await c.delete(name)


def flood_wait_seconds(count: int) -> float:
    """How long the flood's claims get to be all Held, from the last create."""
    return 60 + count / 10


def flood_ttl_seconds(count: int) -> int:
    """The flood's lease: longer than the whole wait for its grants. Nobody renews a flood claim, so
    with the corpus's 30 s a claim granted early expires before the last is granted whenever the
    grants take more than 30 s (1000 of them on a loaded machine: 170 s, and all 1000 had expired
    before the check saw them all Held at once)."""
    return math.ceil(flood_wait_seconds(count)) + 120


async def flood(c: Corpus) -> int:
    """Many claims from one holder at once: all decided (Held at once), then all released."""
    count = 300 if c.quick else 1000
    names = [c.name() for _ in range(count)]
    began = time.monotonic()
    sem = asyncio.Semaphore(50)
    ttl = flood_ttl_seconds(count)

    async def create(i: int, name: str) -> None:
        async with sem:
            await c.create(c.body(name, spec(f"chaos://flood/{i}", holder="flood", ttlSeconds=ttl)))

    await asyncio.gather(*(create(i, n) for i, n in enumerate(names)))
    deadline = time.monotonic() + flood_wait_seconds(count)
    held = 0
    while time.monotonic() < deadline:
        items, _ = await c.kube.list_all(paths.claims(c.namespace))
        held = sum(1 for i in items if (i.get("status") or {}).get("phase") == "Held"
                   and i["spec"]["holder"] == "flood")
        if held == count:
            break
        await asyncio.sleep(0.5)
    granted = time.monotonic() - began
    c.add(f"{count} claims from one holder", "admission", f"all {count} Held",
          f"{held} Held after {granted:.1f}s", held == count)
    await asyncio.gather(*(c.delete(n) for n in names))
    began = time.monotonic()
    remaining = -1
    while time.monotonic() - began < 60:
        locks, _ = await c.kube.list_all(paths.locks(c.namespace))
        remaining = sum(1 for lock in locks if (lock.get("spec") or {}).get("holder") == "flood")
        if remaining == 0:
            break
        await asyncio.sleep(0.5)
    c.add(f"{count} claims released", "admission", "every lock gone",
          f"{remaining} locks left after {time.monotonic() - began:.1f}s", remaining == 0)
    return count


SdkCall = Callable[[AsyncLockClient], Awaitable[object]]


def _try(uri: str, ttl: object) -> SdkCall:
    # The values are deliberately of the wrong types: the SDK must check at run time, not trust hints.
    async def call(client: AsyncLockClient) -> object:
        return await client.try_acquire(uri, ttl=cast(Any, ttl))

    return call


def _wait(uri: str, timeout: object, *, wait: bool) -> SdkCall:
    async def call(client: AsyncLockClient) -> object:
        return await client.acquire(uri, wait=wait, timeout=cast(Any, timeout))

    return call


async def sdk_and_cli(c: Corpus) -> None:
    bad_uris = {
        "control character": "chaos://a\x07b",
        "10 kB": "chaos://" + "a" * 10240,
        "no scheme": "github.com/acme",
        "Cyrillic scheme": "\u0441haos://x",
        "empty": "",
    }
    for label, uri in bad_uris.items():
        await c.sdk_refuses(f"SDK try_acquire, {label} URI", _try(uri, None))
    for ttl in (0, -1, 86401, 1.5, "30", True, math.nan):
        await c.sdk_refuses(f"SDK try_acquire, ttl={ttl!r}", _try("chaos://x", ttl))
    for timeout in (0, -1, math.inf, math.nan):
        await c.sdk_refuses(f"SDK acquire, timeout={timeout!r}", _wait("chaos://x", timeout, wait=True))
    await c.sdk_refuses("SDK acquire, timeout without wait", _wait("chaos://x", 5, wait=False))

    async def bad_holder(_client: AsyncLockClient) -> object:
        return AsyncLockClient(kubeconfig=c.kubeconfig, namespace=c.namespace, holder="two words")

    await c.sdk_refuses("SDK client, holder with a space", bad_holder)
    await c.cli("CLI acquire, control character", ["acquire", "chaos://a\x07b"], 4)
    await c.cli("CLI acquire, no scheme", ["acquire", "no-scheme"], 4)
    await c.cli("CLI acquire, 10 kB URI", ["acquire", "chaos://" + "a" * 10240], 4)
    await c.cli("CLI acquire, --ttl 0", ["acquire", "chaos://x", "--ttl", "0"], 4)
    await c.cli("CLI acquire, --ttl abc", ["acquire", "chaos://x", "--ttl", "abc"], 4)
    await c.cli("CLI acquire, --timeout without --wait", ["acquire", "chaos://x", "--timeout", "5"], 4)
    await c.cli("CLI acquire, 1024-character URI", ["acquire", "chaos://" + "b" * 1016], 0)
    await c.cli("CLI release of it", ["release", "chaos://" + "b" * 1016], 0)


async def run(env: Env) -> Row:
    began = time.time()
    namespace = f"chaos-badinput-{secrets.token_hex(3)}"
    workdir = env.workdir / namespace
    await env.kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": namespace}})
    operator = Operator("operator-0", env.plane.kubeconfig, workdir / "logs", [namespace])
    await operator.start()
    pid = operator.pid
    corpus = Corpus(env.kube, namespace, str(env.plane.kubeconfig), env.quick)
    flooded = 0
    try:
        for part in (uris, holders, numbers, shapes, mutations, sdk_and_cli):
            await part(corpus)
        await attacks.identity_attacks(corpus, env, operator)
        flooded = await flood(corpus)
    finally:
        alive = operator.alive and operator.pid == pid
        crashes = operator.crashes()
        await operator.stop()
        with contextlib.suppress(kube_errors.ApiError, kube_errors.Unreachable):
            await env.kube.delete(f"/api/v1/namespaces/{namespace}")
    report = Report()
    for result in corpus.results:
        if not result.ok:
            report.violations.append(Violation("bad-input", f"{result.channel}: {result.case}: expected "
                                               f"{result.expected}; got {result.outcome}"))
    if not alive:
        report.violations.append(Violation("bad-input", "the operator did not survive the corpus"))
    for crash in crashes:
        report.violations.append(Violation("bad-input", f"traceback in the operator log: {crash[:500]}"))
    (workdir / "cases.json").write_text(json.dumps([r.__dict__ for r in corpus.results], indent=2,
                                                   ensure_ascii=False))
    details = [str(v) for v in report.violations[:30]]
    return Row(
        name="badinput",
        title=TITLE,
        runs=len(corpus.results),
        operations=len(corpus.results) + 2 * flooded,
        violations=len(report.violations),
        recovery=None,
        seconds=time.time() - began,
        notes=[f"{len(corpus.results)} cases; operator pid unchanged: {alive}; cases in {workdir / 'cases.json'}"],
        details=details,
        stats={"cases": [r.__dict__ for r in corpus.results]},
    )
