"""The synchronous facade: the async client run on a private event loop thread.

No lock logic lives here. Each call is a task on the private loop; if the calling thread is
interrupted (KeyboardInterrupt, or SIGTERM/SIGHUP during an acquire: see `kubelock.sdk.signals`)
while it waits, the task is cancelled and given time to clean up (leave the queue, release) before
the interruption continues.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from kubelock.kube.config import Credentials, Impersonation
from kubelock.sdk import signals
from kubelock.sdk.client import DECISION_TIMEOUT, AsyncLockClient, tell_unanswered
from kubelock.sdk.errors import LockError
from kubelock.sdk.identity import Identity, UserInfo
from kubelock.sdk.lease import AsyncLease
from kubelock.sdk.model import AcquireResult, ClaimInfo, GrantInfo, ReleaseResult, RenewResult, RevocationInfo
from kubelock.sdk.targets import Uris, listed

T = TypeVar("T")
CLEANUP_SECONDS = 30.0


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kubelock-sdk", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        result: concurrent.futures.Future[T] = concurrent.futures.Future()
        finished = threading.Event()
        tasks: list[asyncio.Task[T]] = []

        def copy(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                result.set_exception(concurrent.futures.CancelledError())
            elif (error := task.exception()) is not None:
                result.set_exception(error)
            else:
                result.set_result(task.result())
            finished.set()

        def start() -> None:
            task = self.loop.create_task(coro)
            task.add_done_callback(copy)
            tasks.append(task)

        def cancel() -> None:
            for task in tasks:  # callbacks run in order, so start() has run
                task.cancel()

        self.loop.call_soon_threadsafe(start)
        try:
            return result.result()
        except BaseException:
            if not result.done():
                self.loop.call_soon_threadsafe(cancel)
                finished.wait(CLEANUP_SECONDS)
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CLEANUP_SECONDS)
        if not self.loop.is_running():
            self.loop.close()


def _closer(ref: weakref.ref[LockClient]) -> Callable[[], None]:
    def close_at_exit() -> None:
        client = ref()
        if client is not None:
            with contextlib.suppress(Exception):  # the process is ending: nothing to report it to
                client.close()

    return close_at_exit


class LockClient:
    """Blocking twin of AsyncLockClient (same arguments, same methods, same errors)."""

    def __init__(
        self,
        *,
        namespace: str | None = None,
        holder: str | None = None,
        instance: str | None = None,
        generate_instance: bool = True,
        kubeconfig: str | None = None,
        context: str | None = None,
        credentials: Credentials | None = None,
        impersonate: Impersonation | None = None,
        retries: int = 4,
        request_timeout: float = 30.0,
        decision_timeout: float = DECISION_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._runner = _LoopThread()
        try:
            self.aio = self._runner.run(
                _construct(
                    namespace=namespace,
                    holder=holder,
                    instance=instance,
                    generate_instance=generate_instance,
                    kubeconfig=kubeconfig,
                    context=context,
                    credentials=credentials,
                    impersonate=impersonate,
                    retries=retries,
                    request_timeout=request_timeout,
                    decision_timeout=decision_timeout,
                    env=env,
                )
            )
        except BaseException:
            self._runner.stop()
            raise
        self.namespace = self.aio.namespace
        # A client made without `with` and never closed (`client = LockClient()`, as in a script)
        # would leave its HTTP session to the interpreter's teardown, where aiohttp prints
        # "Unclosed client session" on stderr: it is closed at exit instead. The hook holds only a
        # weak reference, and `close()` removes it.
        self._closed = False
        self._close_at_exit = _closer(weakref.ref(self))
        atexit.register(self._close_at_exit)

    def __enter__(self) -> LockClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session and stop the private loop; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        try:
            self._runner.run(self.aio.close())
        finally:
            self._runner.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run any coroutine of `self.aio` on the private loop."""
        return self._runner.run(coro)

    def identity(self) -> Identity:
        return self.run(self.aio.identity())

    def whoami(self) -> str:
        return self.run(self.aio.whoami())

    def who(self) -> UserInfo:
        return self.run(self.aio.who())

    def try_acquire(
        self, uri: Uris, ttl: int | None = None, *, mode: str = "Exclusive", permits: int = 1,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> AcquireResult:
        """`on_unanswered` runs in a thread of its own (`off_loop`)."""
        with signals.raising():  # SIGTERM/SIGHUP: withdraw, then end the process (see sdk.signals)
            return self.run(self.aio.try_acquire(uri, ttl, mode=mode, permits=permits,
                                                 on_unanswered=off_loop(on_unanswered)))

    def try_acquire_all(
        self, uris: Sequence[str], ttl: int | None = None, *, mode: str = "Exclusive", permits: int = 1
    ) -> AcquireResult:
        with signals.raising():
            return self.run(self.aio.try_acquire_all(uris, ttl, mode=mode, permits=permits))

    def acquire(
        self,
        uri: Uris,
        *,
        wait: bool = True,
        timeout: float | None = None,
        ttl: int | None = None,
        on_update: Callable[[ClaimInfo], object] | None = None,
        mode: str = "Exclusive",
        permits: int = 1,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> AcquireResult:
        """`on_update` runs on the client's event loop thread: keep it short. `on_unanswered` runs in a
        thread of its own (`off_loop`)."""
        with signals.raising():
            return self.run(self.aio.acquire(uri, wait=wait, timeout=timeout, ttl=ttl, on_update=on_update,
                                             mode=mode, permits=permits, priority=priority,
                                             on_unanswered=off_loop(on_unanswered)))

    def acquire_all(
        self,
        uris: Sequence[str],
        *,
        wait: bool = True,
        timeout: float | None = None,
        ttl: int | None = None,
        on_update: Callable[[ClaimInfo], object] | None = None,
        mode: str = "Exclusive",
        permits: int = 1,
        priority: int = 0,
    ) -> AcquireResult:
        """Every resource of `uris` at once, or none (see `AsyncLockClient.acquire_all`)."""
        with signals.raising():
            return self.run(self.aio.acquire_all(uris, wait=wait, timeout=timeout, ttl=ttl, on_update=on_update,
                                                 mode=mode, permits=permits, priority=priority))

    def release(self, uri: Uris) -> ReleaseResult:
        return self.run(self.aio.release(uri))

    def heartbeat(self, uri: Uris, *, confirm: bool = True) -> RenewResult:
        return self.run(self.aio.heartbeat(uri, confirm=confirm))

    def get(self, uri: Uris) -> ClaimInfo:
        return self.run(self.aio.get(uri))

    def list(self, *, all_instances: bool = False) -> builtins.list[ClaimInfo]:
        return self.run(self.aio.list(all_instances=all_instances))

    def lock(
        self,
        uri: Uris,
        *,
        ttl: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_lost: Callable[[LockError], object] | None = None,
        renew_deadline: float | None = None,
        mode: str = "Exclusive",
        permits: int = 1,
        on_revocation: Callable[[RevocationInfo], object] | None = None,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> Lease:
        """`with client.lock(uri, ttl=60) as lease:` — acquire, renew in the background, release on exit.
        With `renew_deadline` (seconds, less than `ttl`) the lease is lost when no renewal was accepted
        within it, before the TTL runs out. `mode` and `permits` as for `acquire`. `on_revocation` is
        called (in its own thread) when the holder is asked to give the lock back. `on_unanswered` as
        for the asynchronous `lock` (default: a logged warning), run in a thread of its own (`off_loop`)."""
        aio = self.aio.lock(
            uri, ttl=ttl, wait=wait, timeout=timeout, renew_deadline=renew_deadline, mode=mode, permits=permits,
            priority=priority, on_unanswered=off_loop(on_unanswered),
        )
        lease = Lease(self, aio, on_lost)
        if on_revocation is not None:
            lease.add_revocation_listener(on_revocation)
        return lease

    def lock_all(
        self,
        uris: Sequence[str],
        *,
        ttl: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
        on_lost: Callable[[LockError], object] | None = None,
        renew_deadline: float | None = None,
        mode: str = "Exclusive",
        permits: int = 1,
        on_revocation: Callable[[RevocationInfo], object] | None = None,
        priority: int = 0,
        on_unanswered: Callable[[ClaimInfo], object] | None = None,
    ) -> Lease:
        """`with client.lock_all([uri1, uri2], ttl=60) as lease:` — every resource at once or none,
        renewed and released as one; `lease.fencing_tokens` has each one's token (see `lock`)."""
        return self.lock(listed(uris), ttl=ttl, wait=wait, timeout=timeout, on_lost=on_lost,
                         renew_deadline=renew_deadline, mode=mode, permits=permits, on_revocation=on_revocation,
                         priority=priority, on_unanswered=on_unanswered)


def off_loop(hook: Callable[[ClaimInfo], object] | None) -> Callable[[ClaimInfo], object] | None:
    """`hook` (an `on_unanswered`) run in a daemon thread of its own rather than on the client's loop.
    On the loop, a hook that blocks (a slow log handler, a prompt, a call back into this client, which
    waits for the loop it is blocking and so never returns) would stall the wait it reports on: the
    decision timeout and the caller's own could not fire, and every other lease of the client would go
    unrenewed. A daemon thread does not hold up the process's exit either."""
    if hook is None:
        return None

    def start(info: ClaimInfo) -> None:
        threading.Thread(target=tell_unanswered, args=(hook, info), name="kubelock-on-unanswered",
                         daemon=True).start()

    return start


async def _construct(**kwargs: Any) -> AsyncLockClient:
    # Built on the loop that will use it (its asyncio primitives and HTTP session live there).
    return AsyncLockClient(**kwargs)


class Lease:
    """The blocking twin of AsyncLease. `lost` is a threading.Event; `on_lost` runs in its own
    thread the moment the loss is seen, so a slow callback delays nothing."""

    def __init__(self, client: LockClient, lease: AsyncLease, on_lost: Callable[[LockError], object] | None) -> None:
        self._client = client
        self._lease = lease
        self._listeners = [on_lost] if on_lost is not None else []
        self.lost = threading.Event()
        lease.add_listener(self._signal)

    def add_listener(self, callback: Callable[[LockError], object]) -> None:
        """Also call `callback(error)` when the lease is lost (in its own thread, as `on_lost`)."""
        self._listeners.append(callback)

    def add_revocation_listener(self, callback: Callable[[RevocationInfo], object]) -> None:
        """Call `callback(revocation)` (in its own thread) when the holder is asked to give the lock back."""

        def start(revocation: RevocationInfo) -> None:
            threading.Thread(target=callback, args=(revocation,), name="kubelock-on-revocation", daemon=True).start()

        self._lease.add_revocation_listener(start)

    @property
    def revocation_requested(self) -> RevocationInfo | None:
        """The request to give the lock back, once seen (None: nobody asked)."""
        return self._lease.revocation_requested

    def _signal(self, error: LockError) -> None:
        self.lost.set()
        for callback in self._listeners:
            threading.Thread(target=callback, args=(error,), name="kubelock-on-lost", daemon=True).start()

    @property
    def claim(self) -> ClaimInfo:
        return self._lease.claim

    @property
    def fencing_token(self) -> int | None:
        return self._lease.fencing_token

    @property
    def fencing_tokens(self) -> dict[str, int]:
        return self._lease.fencing_tokens

    @property
    def grants(self) -> tuple[GrantInfo, ...]:
        return self._lease.grants

    @property
    def resource(self) -> str:
        return self._lease.resource

    @property
    def resources(self) -> tuple[str, ...]:
        return self._lease.resources

    @property
    def claim_name(self) -> str:
        return self._lease.claim_name

    @property
    def expires_at(self) -> datetime | None:
        return self._lease.expires_at

    @property
    def error(self) -> LockError | None:
        return self._lease.error

    @property
    def release_error(self) -> LockError | None:
        return self._lease.release_error

    @property
    def renew_deadline(self) -> float | None:
        return self._lease.renew_deadline

    def check(self) -> None:
        """Raise the loss (Expired, Revoked ...) if the lock is no longer held."""
        self._lease.check()

    def __enter__(self) -> Lease:
        with signals.raising():
            self._client.run(self._lease.__aenter__())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._client.run(self._lease.__aexit__(exc_type, exc, tb))
