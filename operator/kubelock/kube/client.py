"""A small asynchronous Kubernetes REST client on aiohttp.

Why not the official client here: it is synchronous (a thread per call) and builds model objects
for every response; the operator and the SDK only need JSON dicts, merge patches with
preconditions and watches, at the lowest latency the API server allows.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp.http_exceptions import LineTooLong
from multidict import CIMultiDict

from kubelock.kube.auth import Authenticator, CredentialError
from kubelock.kube.config import Credentials
from kubelock.kube.errors import ApiError, BadAnswer, Unauthorized, Unreachable, from_response, transient
from kubelock.kube.jsondecode import loads
from kubelock.kube.keepalive import connection_socket
from kubelock.kube.serverclock import ServerClock

Body = dict[str, Any]
RequestHook = Callable[[str, int, float], None]  # verb, HTTP status (0: unreachable), seconds
# A watch asks the API server to end it after WATCH_SECONDS (`timeoutSeconds`; the server ends an idle
# watch cleanly then, and the watcher resumes from its last version). One that has not ended
# WATCH_GRACE_SECONDS after that is dead, whatever it delivered: a frozen path (a stuck proxy, a
# frozen process behind a TCP load balancer) leaves the connection open with its kernel still
# acknowledging, so neither an error nor keepalive (`keepalive.py`) ends it. client-go ends such
# connections with HTTP/2 pings; an HTTP/1.1 client cannot ping, so the timeout is the bound: a watch
# left silent is replaced WATCH_SECONDS + WATCH_GRACE_SECONDS after it started at the latest.
# Re-watching every minute costs the API server little (bench/README.md, "Watch timeouts").
WATCH_SECONDS = 60
WATCH_GRACE_SECONDS = 15
# A pooled keep-alive connection idle longer than this is closed rather than reused (aiohttp checks at
# reuse, oldest first). A frozen path leaves every connection idle at that moment silent, and a request
# sent on one ends only with its timeout; past this age none of them is picked any more. It is below
# the operator's LIST timeout plus the resync's retry (30 s + 5 s, `operator/runtime.py`), so a resync
# pass that timed out on a silent pooled connection is retried on fresh ones, not on the next silent one
# (tests/integration/test_frozen_pod_watch.py). Was 60 s: a reconnect costs one TLS handshake.
POOLED_IDLE_SECONDS = 30
# An answer is read whole into memory before it is decoded. Unbounded, a broken or hostile server (or a
# proxy in front of one) that streamed a body without end made `kubelock status` grow to 11 GB in 100 s.
# The largest claim an agent can make is 490 kB as JSON (tests/integration/test_hostile_eleventh.py),
# so a page of 500 of them (`pages`) is 245 MB: the bound is above it.
MAX_ANSWER_BYTES = 256 * 2**20
# One watch event is one line. aiohttp reads a line into at most 512 KiB by default, 34 kB above that
# largest claim; a longer line (an object near etcd's 1.5 MiB) raised LineTooLong out of the watch,
# killing the operator's watch task and the SDK's wait with it. Lines are read up to this (the
# StreamReader's limit is twice its buffer size).
WATCH_LINE_BYTES = 8 * 2**20


# Throttled answers (429) are retried up to this many times when a client retries at all, as
# client-go does: the API server did not run the request, and its Retry-After says when to come back.
THROTTLED_RETRIES = 10


def retry_delay(error: BaseException, attempt: int, retries: int) -> float | None:
    """Seconds to wait before retry number `attempt + 1` of a request that failed with `error`, or
    None to give up. Other transient failures back off exponentially with full jitter (0.1 s, 0.2 s
    ... capped at 3.2 s) for `retries` attempts. A 429 waits what the API server asked (its
    Retry-After, plus up to half of it again, so that the clients it throttled together do not come
    back together), for up to THROTTLED_RETRIES attempts: giving up after a few tenths of a second,
    under a burst of clients the API server queues fairly, turned throttling into failed requests
    that were then made again from the start."""
    if retries <= 0 or not transient(error):
        return None
    backoff = random.uniform(0, min(3.2, 0.1 * 2**attempt))
    if isinstance(error, ApiError) and error.status == 429:
        if attempt >= max(retries, THROTTLED_RETRIES):
            return None
        asked = error.retry_after
        return backoff if asked is None else asked * random.uniform(1.0, 1.5)
    return backoff if attempt < retries else None


class KubeClient:
    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float = 30.0,
        list_timeout: float | None = None,
        retries: int = 0,
        on_request: RequestHook | None = None,
        user_agent: str = "kubelock",
        connections: int = 200,
        watch_grace: float = WATCH_GRACE_SECONDS,
        in_flight: int | None = None,
    ) -> None:
        self.credentials = credentials
        self._connections = connections
        # Requests (not watches, which hold a connection for minutes) under way at once: the rest wait
        # their turn in the order they came, untimed until sent. None: only `connections` bounds them.
        self._in_flight = asyncio.Semaphore(in_flight) if in_flight else None
        self._timeout = timeout
        self._watch_grace = watch_grace
        # A LIST page of hundreds of bodies can take seconds on a busy API server, and trying it
        # again costs the server the most: it may have a longer timeout than a write or a GET.
        self._list_timeout = timeout if list_timeout is None else list_timeout
        self._retries = retries
        self._on_request = on_request
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self.auth = Authenticator(credentials)
        self._cert_changes = 0
        # Bounds on the API server's clock, from its answers (`serverclock`): a lease's time left is
        # counted on it, not on this machine's wall clock.
        self.server_clock = ServerClock()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is not None and self._cert_changes != self.auth.cert_changes:
            # An exec plugin handed out a new client certificate: new connections must present it.
            await self._session.close()
            self._session = None
        if self._session is None or self._session.closed:
            self._cert_changes = self.auth.cert_changes
            cert = self.auth.client_certificate()
            try:
                context = self.credentials.ssl_context(*(cert or (None, None)))
            except (ssl.SSLError, OSError) as error:  # a missing file, or one that holds no certificate or key
                c = self.credentials
                files = ", ".join(f"{what} {path}" for what, path in (
                    ("CA", c.ca_file), ("client certificate", (cert or (c.cert_file, None))[0]),
                    ("client key", (cert or (None, c.key_file))[1])) if path)
                raise CredentialError(f"cannot load the kubeconfig's TLS files ({files}): {error}") from None
            # Keepalive probes end a connection whose path went dark (see kubelock.kube.keepalive).
            connector = aiohttp.TCPConnector(ssl=context, limit=self._connections,
                                             keepalive_timeout=POOLED_IDLE_SECONDS, socket_factory=connection_socket)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _headers(self, content_type: str | None = None) -> CIMultiDict[str]:
        headers = CIMultiDict({"Accept": "application/json", "User-Agent": self._user_agent,
                               **await self.auth.headers()})
        if content_type:
            headers["Content-Type"] = content_type
        if self.credentials.impersonate is not None:
            headers.extend(self.credentials.impersonate.headers())  # Impersonate-Group repeats
        return headers

    async def _after_unauthorized(self, headers: Mapping[str, str]) -> bool:
        """A 401: refresh the credential (as client-go does); True when one more try is worth it."""
        sent = headers.get("Authorization", "")
        return await self.auth.refresh(rejected=sent.removeprefix("Bearer ") if sent else None)

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return f"{self.credentials.server}{path}" + (f"?{urlencode(query)}" if query else "")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        verb: str | None = None,
        retry: bool = True,
    ) -> Body:
        """One request, retried as `retry_delay` says. With `retry` False only a throttled answer
        (429: the API server did not run the request) is tried again, so that a failure leaves no
        doubt that this request was made once at most. A 401 is retried once with a refreshed
        credential either way."""
        attempt = 0
        reauthenticated = False
        while True:
            try:
                async with self._in_flight or contextlib.nullcontext():
                    return await self._request_once(method, path, params, body, content_type, verb or method.lower())
            except Unauthorized as error:
                if reauthenticated or not await self._after_unauthorized(error.sent_headers):
                    raise
                reauthenticated = True
            except (ApiError, Unreachable) as error:
                throttled = isinstance(error, ApiError) and error.status == 429
                delay = retry_delay(error, attempt, self._retries) if retry or throttled else None
                if delay is None:
                    raise
                attempt += 1
                await asyncio.sleep(delay)

    async def _request_once(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any, content_type: str, verb: str
    ) -> Body:
        session = await self._ensure_session()
        started = time.perf_counter()
        data = None if body is None else json.dumps(body)
        headers = await self._headers(content_type if data is not None else None)
        sent = time.monotonic()
        try:
            async with session.request(
                method,
                self._url(path, params),
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._list_timeout if verb == "list" else self._timeout),
                server_hostname=self.credentials.tls_server_name,
            ) as response:
                self.server_clock.record(response.headers.get("Date"), sent, time.monotonic())
                status = response.status
                try:
                    raw = await self._read_bounded(response, method, path)
                except BadAnswer:
                    self._record(verb, status, started)
                    raise
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self._record(verb, 0, started)
            unreachable = Unreachable(f"cannot reach the API server at {self.credentials.server}: {error}")
            connect_failed = isinstance(error, aiohttp.ClientConnectorError)
            unreachable.connect_failed = connect_failed and not self.credentials.in_cluster
            raise unreachable from error
        self._record(verb, status, started)
        parsed: Any = None
        if raw:
            try:
                parsed = loads(raw)
            except ValueError:
                parsed = None
        if status >= 400:
            refused = from_response(status, parsed, raw.decode("utf-8", errors="replace"))
            refused.sent_headers = headers
            refused.retry_after_header = retry_after
            raise refused
        if raw and not isinstance(parsed, dict):
            raise BadAnswer(f"the API server at {self.credentials.server} answered {method} {path} with "
                            f"{_sample(raw)}: not a JSON object")
        return parsed if isinstance(parsed, dict) else {}

    async def _read_bounded(self, response: aiohttp.ClientResponse, method: str, path: str) -> bytes:
        """The answer's body, refused past MAX_ANSWER_BYTES (announced or as it comes)."""
        too_long = BadAnswer(f"the API server at {self.credentials.server} answered {method} {path} with more "
                             f"than {MAX_ANSWER_BYTES} bytes: not read")
        if (response.content_length or 0) > MAX_ANSWER_BYTES:
            raise too_long
        body = bytearray()
        async for chunk in response.content.iter_chunked(2**20):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise too_long
        return bytes(body)

    def _record(self, verb: str, status: int, started: float) -> None:
        if self._on_request is not None:
            self._on_request(verb, status, time.perf_counter() - started)

    # ---- verbs -------------------------------------------------------------------------------

    async def get(self, path: str) -> Body:
        return await self.request("GET", path, verb="get")

    async def list(self, path: str, **params: Any) -> Body:
        return await self.request("GET", path, params=params, verb="list")

    async def list_all(self, path: str, *, page: int = 500, **params: Any) -> tuple[builtins.list[Body], str]:
        """Every item of a collection (paginated) and the collection's resourceVersion."""
        items: builtins.list[Body] = []
        version = ""
        async for chunk, listed_at in self.pages(path, page=page, **params):
            items.extend(chunk)
            version = listed_at
        return items, version

    async def pages(
        self, path: str, *, page: int = 500, **params: Any
    ) -> AsyncIterator[tuple[builtins.list[Body], str]]:
        """A collection one page at a time, each with the list's resourceVersion (all pages of one
        list come from the same snapshot), so a caller never holds more than two pages of bodies.
        The next page is requested before this one is handed over: the API server encodes it while
        the caller takes this one in."""
        version = ""
        following: asyncio.Task[Body] | None = None
        try:
            result = await self.list(path, limit=page, **params)
            while True:
                items = result.get("items") or []
                if not isinstance(items, builtins.list) or not all(isinstance(x, dict) for x in items):
                    raise BadAnswer(f"the API server at {self.credentials.server} listed {path} with items "
                                    f"that are not all objects")
                meta = result.get("metadata") or {}
                version = meta.get("resourceVersion") or version
                token = meta.get("continue")
                if token:
                    following = asyncio.ensure_future(self.list(path, limit=page, **{"continue": token}, **params))
                yield items, version
                if following is None:
                    return
                result = await following
                following = None
        finally:
            if following is not None and not following.done():
                following.cancel()  # the caller stopped early
            elif following is not None and not following.cancelled():
                following.exception()  # retrieved: a failure nobody waits for is not logged as lost

    async def create(self, path: str, body: Body, **params: Any) -> Body:
        return await self.request("POST", path, body=body, params=params, verb="create")

    async def patch(self, path: str, patch: Body, **params: Any) -> Body:
        """A JSON merge patch. Put `metadata.resourceVersion` in it to make it conditional."""
        return await self.request(
            "PATCH", path, body=patch, params=params, content_type="application/merge-patch+json", verb="patch"
        )

    async def replace(self, path: str, body: Body) -> Body:
        """A PUT of the whole object (or, at a `/status` path, of its status): the API server takes the
        body as it is instead of reading the stored object, applying a patch to it and decoding the
        result again. Put `metadata.resourceVersion` in it to make it conditional."""
        return await self.request("PUT", path, body=body, verb="update")

    async def delete(
        self, path: str, *, uid: str | None = None, resource_version: str | None = None, retry: bool = True
    ) -> Body:
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions} if preconditions else None
        return await self.request("DELETE", path, body=body, verb="delete", retry=retry)

    async def watch(
        self, path: str, *, resource_version: str | None = None, timeout_seconds: int = WATCH_SECONDS, **params: Any
    ) -> AsyncGenerator[Body, None]:
        """Events of one watch request until the server closes it; raises ApiError (e.g. 410 Gone).
        A 401 when the watch starts refreshes the credential and tries once more."""
        for attempt in range(2):
            try:
                async for event in self._watch_once(path, resource_version, timeout_seconds, params):
                    yield event
                return
            except Unauthorized as error:
                if attempt or not await self._after_unauthorized(error.sent_headers):
                    raise

    async def _watch_once(
        self, path: str, resource_version: str | None, timeout_seconds: int, params: Mapping[str, Any]
    ) -> AsyncGenerator[Body, None]:
        session = await self._ensure_session()
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true",
            **params,
        }
        started = time.perf_counter()
        headers = await self._headers()
        sent = time.monotonic()
        try:
            # The answer's headers come at once from a live server; a request sent on a pooled
            # connection that a partition left silent would otherwise wait out the whole watch.
            async with asyncio.timeout(self._timeout):
                response = await session.get(
                    self._url(path, query),
                    headers=headers,
                    # The server ends the watch after timeout_seconds: one still open `watch_grace`
                    # later is on a path that went silent (see WATCH_SECONDS), however it began.
                    timeout=aiohttp.ClientTimeout(total=timeout_seconds + self._watch_grace,
                                                  sock_connect=self._timeout),
                    server_hostname=self.credentials.tls_server_name,
                    read_bufsize=WATCH_LINE_BYTES // 2,
                )
            async with response:
                self._record("watch", response.status, started)
                self.server_clock.record(response.headers.get("Date"), sent, time.monotonic())
                if response.status >= 400:
                    text = await response.text()
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        parsed = None
                    error = from_response(response.status, parsed, text)
                    error.sent_headers = headers
                    error.retry_after_header = response.headers.get("Retry-After")
                    raise error
                try:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = self._event(line, path)
                        if event.get("type") == "ERROR":
                            obj = event.get("object")
                            obj = obj if isinstance(obj, dict) else {}
                            code = obj.get("code")
                            raise from_response(code if isinstance(code, int) and code >= 400 else 500, obj)
                        yield event
                except LineTooLong:
                    raise BadAnswer(f"the API server at {self.credentials.server} sent a watch event on {path} "
                                    f"longer than {WATCH_LINE_BYTES} bytes: not read") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise Unreachable(f"watch on {path} failed: {error}") from error

    def _event(self, line: bytes, path: str) -> Body:
        try:
            event = loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise BadAnswer(f"the API server at {self.credentials.server} sent a watch line on {path} that is not "
                            f"a JSON event: {_sample(line)}")
        return event


def _sample(raw: bytes) -> str:
    """A short, printable rendering of a body that could not be used, for an error message."""
    head = raw[:80].decode("utf-8", errors="replace")
    return f"{len(raw)} bytes beginning {head!r}" + ("…" if len(raw) > 80 else "")
