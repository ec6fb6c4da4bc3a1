"""The machinery every scenario shares: the client with request counting, watches stamped on arrival,
operator processes, /proc readings and Prometheus scrapes.

Anchors and kubelock rounds use the same `KubeClient`, the same watch code and the same event loop,
so the client's own cost is identical on both sides of every ratio.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import contextvars
import os
import re
import secrets
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiohttp

from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.kube.errors import Conflict, NotFound
from kubelock.testbed import ControlPlane, find_binaries
from kubelock.testbed.processes import ManagedProcess, free_port, start_process

REPO = Path(__file__).resolve().parents[1]
# The kubelock operator under test: this checkout's, or another tree's (`run.py --operator DIR`), so
# that two versions are measured by the same harness.
OPERATOR_SOURCE = [REPO / "operator"]
# A second operator tree (`--operator-b`): #4 and #8 measure it too, in the same run, alternating.
OPERATOR_SOURCE_B: list[Path | None] = [None]


# What every install applies: the CRDs, the roles and the admission policies (their CEL is part of
# what a write costs the API server).
DEPLOYED = ("crds", "config/rbac", "config/admission")


def deployed_plane(workdir: Path, *, profiling: bool = False) -> ControlPlane:
    """A control plane (not yet started) in `workdir`/control-plane with kubelock applied as deployed."""
    return ControlPlane(workdir / "control-plane", bin_dir=find_binaries(), profiling=profiling,
                        manifests=[REPO / m for m in DEPLOYED])


def measured_on_deployed_plane(
    workdir: Path, measure: Callable[[ControlPlane], Coroutine[Any, Any, R]]
) -> tuple[R, dict[str, list[float]]]:
    """Start a control plane as deployed (`deployed_plane`) in `workdir`, run `measure` on it and stop
    it: its result, and the load averages before and after (`load_before`, `load_after`) that every
    figure of a loaded machine needs beside it."""
    load_before = os.getloadavg()
    plane = deployed_plane(workdir)
    plane.start()
    try:
        result = asyncio.run(measure(plane))
    finally:
        plane.stop()
    return result, {"load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]}


def compile_operators() -> None:
    """Compile the operator trees to bytecode once, as the image does (`compileall` in the Dockerfile):
    where PYTHONDONTWRITEBYTECODE is set, every operator start (#8 times several) would otherwise
    compile kubelock's modules from source again, which a deployed operator never does."""
    for source in (OPERATOR_SOURCE[0], OPERATOR_SOURCE_B[0]):
        if source is not None:
            compileall.compile_dir(str(source / "kubelock"), quiet=1)
Body = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Set by a watch task for itself: the client's request hook fires when the watch's response headers
# arrive, which the API server sends only once the watcher is registered. Waiting for that before
# the timed write means no event can be missed and no watch set-up time is counted.
_ESTABLISHED: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("established", default=None)


class RequestTally:
    """The client's own requests by verb (the KubeClient request hook)."""

    def __init__(self) -> None:
        self.by_verb: Counter[str] = Counter()

    def __call__(self, verb: str, status: int, seconds: float) -> None:
        self.by_verb[verb] += 1
        if verb == "watch":
            established = _ESTABLISHED.get()
            if established is not None:
                established.set()

    def snapshot(self) -> Counter[str]:
        return Counter(self.by_verb)


@dataclass
class Env:
    """What every scenario needs; `watcher` is a second connection pool for long-lived watches."""

    credentials: Credentials
    client: KubeClient
    watcher: KubeClient
    tally: RequestTally
    node: str
    quick: bool
    timeout: float = 60.0


def new_client(credentials: Credentials, tally: RequestTally, *, agent: str = "kubelock-bench") -> KubeClient:
    # A few retries of transient errors (429, 5xx, resets): a noisy machine must not end a round.
    return KubeClient(credentials, timeout=60.0, retries=3, on_request=tally, user_agent=agent)


# ---- watches ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One watch event and when it arrived (monotonic for latencies, wall clock for deadlines)."""

    at: float
    wall: float
    type: str
    obj: Body

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    @property
    def phase(self) -> str | None:
        return (self.obj.get("status") or {}).get("phase")


Predicate = Callable[[Seen], bool]


class Watch:
    """One watch request read by its own task; waiters are keyed by object name, so a namespace-wide
    watch can serve hundreds of agents without testing every event against every waiter."""

    resumed_total: ClassVar[int] = 0  # watches the server ended and that were resumed, all instances

    def __init__(self, client: KubeClient, path: str, *, resource_version: str | None = None, **params: Any) -> None:
        self._client = client
        self._path = path
        self._version = resource_version
        self._params = params
        self.history: dict[str, list[Seen]] = {}
        self._waiters: dict[str, list[tuple[Predicate, asyncio.Future[Seen]]]] = {}
        self._established = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.resumed = 0

    async def __aenter__(self) -> Watch:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, within: float = 30.0) -> Watch:
        self._task = asyncio.create_task(self._run(), name=f"watch {self._path}")
        established = asyncio.create_task(self._established.wait())
        done, _ = await asyncio.wait({established, self._task}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        if established not in done:
            established.cancel()
            await self.close()
            raise TimeoutError(f"watch on {self._path} not established within {within:.0f} s: {self.error!r}")
        return self

    async def _run(self) -> None:
        _ESTABLISHED.set(self._established)
        try:
            while True:
                await self._stream()
                # The server ended the watch (its timeout, or it dropped a watcher it found slow):
                # resume from the last version seen, as any informer does.
        except Exception as error:  # reported to every waiter below
            self.error = error
        finally:
            for waiters in self._waiters.values():
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(RuntimeError(f"watch on {self._path} ended: {self.error!r}"))

    async def _stream(self) -> None:
        async for event in self._client.watch(
            self._path, resource_version=self._version, timeout_seconds=1800, **self._params
        ):
            at, wall = time.perf_counter(), time.time()
            obj = event.get("object") or {}
            self._version = (obj.get("metadata") or {}).get("resourceVersion") or self._version
            seen = Seen(at, wall, str(event.get("type")), obj)
            if seen.type == "BOOKMARK":
                continue
            self.history.setdefault(seen.name, []).append(seen)
            waiters = self._waiters.get(seen.name)
            if waiters:
                for predicate, future in list(waiters):
                    if not future.done() and predicate(seen):
                        future.set_result(seen)
                        waiters.remove((predicate, future))
        self.resumed += 1
        Watch.resumed_total += 1

    def first(self, name: str, predicate: Predicate) -> Seen | None:
        return next((s for s in self.history.get(name, ()) if predicate(s)), None)

    async def wait_for(self, name: str, predicate: Predicate, within: float) -> Seen:
        """The first event about `name` (already seen or still to come) that satisfies `predicate`."""
        seen = self.first(name, predicate)
        if seen is not None:
            return seen
        if self._task is None or self._task.done():
            raise RuntimeError(f"watch on {self._path} is not running: {self.error!r}")
        future: asyncio.Future[Seen] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.setdefault(name, []).append(entry)
        try:
            return await asyncio.wait_for(future, within)
        finally:
            waiters = self._waiters.get(name, [])
            if entry in waiters:
                waiters.remove(entry)
            if not waiters:
                self._waiters.pop(name, None)

    def forget(self, name: str) -> None:
        self.history.pop(name, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def phase_is(*phases: str) -> Predicate:
    return lambda seen: seen.type != "DELETED" and seen.phase in phases


def deleted(seen: Seen) -> bool:
    return seen.type == "DELETED"


def deleted_after(moment: float) -> Predicate:
    return lambda seen: seen.type == "DELETED" and seen.at >= moment


def added(seen: Seen) -> bool:
    return seen.type in ("ADDED", "MODIFIED")


async def current_version(client: KubeClient, path: str) -> str:
    """The collection's resourceVersion, to start a watch that skips the existing objects."""
    listing = await client.list(path, limit=1)
    return str((listing.get("metadata") or {}).get("resourceVersion", ""))


# ---- objects ------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def ensure_namespace(client: KubeClient, name: str) -> str:
    with contextlib.suppress(Conflict):
        await client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def delete_quietly(client: KubeClient, path: str) -> None:
    with contextlib.suppress(NotFound):
        await client.delete(path)


async def gather_limited(items: Iterable[T], job: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """`job(item)` for every item with at most `limit` in flight; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with semaphore:
            return await job(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def wait_until(check: Callable[[], Awaitable[bool]], *, within: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


# ---- /proc --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children_by_name(names: Iterable[str]) -> dict[str, int]:
    """Our direct children with these command names (the control plane's processes)."""
    wanted = {name[:15]: name for name in names}  # the kernel keeps 15 characters of a command name
    found: dict[str, int] = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm in wanted:
            found[wanted[comm]] = int(entry.name)
    return found


@dataclass
class CpuMeter:
    """CPU seconds per named process between `start()` and `stop()`."""

    pids: dict[str, int]
    before: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.spent = {name: cpu_seconds(pid) - self.before.get(name, 0.0) for name, pid in self.pids.items()}
        return self.spent


# ---- Prometheus scrapes -------------------------------------------------------------------------

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_counter(text: str, metric: str, keys: tuple[str, ...]) -> Counter[tuple[str, ...]]:
    """Sums of one Prometheus counter grouped by the given labels."""
    out: Counter[tuple[str, ...]] = Counter()
    prefix = metric + "{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        out[tuple(labels.get(k, "") for k in keys)] += int(float(match["value"]))
    return out


async def scrape(url: str, ssl_context: ssl.SSLContext | None = None) -> str:
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response,
    ):
        response.raise_for_status()
        return await response.text()


async def apiserver_requests(credentials: Credentials) -> Counter[tuple[str, ...]]:
    """The API server's own count of requests by (verb, resource, subresource): covers every client."""
    text = await scrape(f"{credentials.server}/metrics", credentials.ssl_context())
    return parse_counter(text, "apiserver_request_total", ("verb", "resource", "subresource"))


async def apiserver_refusals(credentials: Credentials) -> Counter[tuple[str, ...]]:
    """What the API server answered besides success: requests by HTTP code, verb and resource
    (("code", c, verb, resource)), and those API Priority and Fairness rejected (("apf", priority
    level, reason)): a 429 is throttling, and its verb says which requests were throttled."""
    text = await scrape(f"{credentials.server}/metrics", credentials.ssl_context())
    out: Counter[tuple[str, ...]] = Counter()
    answers = parse_counter(text, "apiserver_request_total", ("code", "verb", "resource"))
    for (code, verb, resource), n in answers.items():
        if not code.startswith("2"):
            out["code", code, verb, resource] += n
    for key, n in parse_counter(text, "apiserver_flowcontrol_rejected_requests_total",
                                ("priority_level", "reason")).items():
        out[("apf", *key)] += n
    return out


# ---- operator processes -------------------------------------------------------------------------


@dataclass
class OperatorProcess:
    """kubelock's operator, or the naive kopf comparator, as a child process of the bench."""

    flavour: str  # "kubelock" or "naive"
    kubeconfig: Path
    namespace: str
    log_dir: Path
    metrics_port: int = 0
    extra_args: tuple[str, ...] = ()
    process: ManagedProcess | None = None
    starts: int = 0
    source: Path | None = None  # the operator tree to run (default: OPERATOR_SOURCE)

    def argv(self) -> list[str]:
        if self.flavour == "kubelock":
            self.metrics_port = self.metrics_port or free_port()
            return [
                sys.executable, "-m", "kubelock.operator", "--kubeconfig", str(self.kubeconfig),
                "-n", self.namespace, "--health-address", f"127.0.0.1:{free_port()}",
                "--metrics-port", str(self.metrics_port), *self.extra_args,
            ]
        return [
            sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", self.namespace,
            str(REPO / "bench" / "naive_operator.py"),
        ]

    @property
    def ready_line(self) -> str:
        return "watching LockClaims" if self.flavour == "kubelock" else "naive operator started"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"the {self.flavour} operator is not running")
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.flavour}-{self.namespace}-{self.starts}.log"

    def spawn(self) -> None:
        """Starts the process without waiting for it (the restart scenario times the whole start)."""
        self.starts += 1
        source = self.source or OPERATOR_SOURCE[0]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONPATH": str(source)}
        self.process = start_process(
            self.log_path.stem, self.argv(), log_dir=self.log_dir, env=env, cwd=REPO
        )

    async def start(self, within: float = 90.0) -> OperatorProcess:
        self.spawn()
        await self.wait_ready(within)
        return self

    async def wait_ready(self, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        while True:
            if self.ready_line in self.log_text():
                return
            if self.process is None or not self.process.alive():
                raise RuntimeError(f"{self.flavour} operator exited during start:\n{self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.flavour} operator not ready in {within:.0f} s:\n{self.log_text()[-2000:]}")
            await asyncio.sleep(0.02)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as when a node dies: no cleanup at all."""
        if self.process is not None and self.process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.popen.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    async def api_requests(self) -> Counter[tuple[str, ...]]:
        """kubelock_api_requests_total by (verb, code); empty for the naive operator (no metrics)."""
        if self.flavour != "kubelock" or not self.metrics_port:
            return Counter()
        text = await scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return parse_counter(text, "kubelock_api_requests_total", ("verb", "code"))


    async def quiet(self, within: float = 60.0, interval: float = 0.15) -> float | None:
        """Waits until the operator's request counter stops moving (its Event queue drained, say),
        so that what it still owes for a block is not billed to the next one. Seconds it took, or
        None if it was still busy after `within`."""
        if self.flavour != "kubelock" or self.process is None:
            return 0.0
        began = time.monotonic()
        last = await self.api_requests()
        while time.monotonic() - began < within:
            await asyncio.sleep(interval)
            now = await self.api_requests()
            if now == last:
                return time.monotonic() - began
            last = now
        return None


def diff(after: Counter[Any], before: Counter[Any]) -> Counter[Any]:
    out: Counter[Any] = Counter()
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta:
            out[key] = delta
    return out
