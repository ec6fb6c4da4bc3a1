"""LISTs started from a thread at the very start of the process, before the slow imports.

A restarted operator decides nothing before it has listed every claim and lock it watches, and that
time is mostly the API server's: encoding 10 000 claims and 10 000 locks took it 1.5–2.0 s of CPU.
The asynchronous client (aiohttp) and kopf take 0.4–0.7 s of CPU to import, 1–2 s of wall time on a
busy machine, and with them the LISTs could only start after the imports. Here the standard
library's HTTP client asks for the pages as soon as the credentials are read, so the API server
encodes them while the process imports the rest; the event loop takes the pages in later
(`Prelist.pages`), as it would take them from `KubeClient.pages`.

The thread keeps each page as the bytes it received (parsing is left to the event loop, which would
parse them anyway). To ask for the next page it needs the page's continue token only: the API
server writes a list's keys in sorted order, so the list's `metadata` is the last member of the
document, and only that tail is parsed (`_tail`). The event loop parses the whole page and checks it
carries the same token and version; any difference, and any failure of the thread (an HTTP error,
a lost connection, credentials it cannot use), ends the early LIST with `EarlyListFailed`, and the
caller lists again with its own client from the start.

Credentials the thread cannot use by itself (an exec plugin, a TLS server name other than the
host's) start no early LIST: the operator then lists as it always did.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from kubelock.kube.config import Credentials
from kubelock.kube.jsondecode import loads

log = logging.getLogger("kubelock.prelist")
Body = dict[str, Any]
RequestHook = Callable[[str, int, float], None]
DateHook = Callable[[str | None, float, float], None]
# What to list: a collection's path, or its path with query parameters (a field selector).
Listing = str | tuple[str, Mapping[str, str]]
TIMEOUT_SECONDS = 30.0
_DONE = object()


class EarlyListFailed(Exception):
    """The early LIST could not be completed: list again from the start."""


def _tail(body: bytes) -> Body:
    """The list's own `metadata` (continue token, resourceVersion), found without parsing the items:
    it is the last member of the document. Anything else there (an item's metadata, when the members
    come in another order) does not parse as one object and fails."""
    at = body.rfind(b'"metadata":')
    end = body.rfind(b"}")
    if at < 0 or end < at:
        raise EarlyListFailed("no list metadata at the end of the page")
    try:
        meta = loads(body[at + len(b'"metadata":'):end])
    except ValueError as error:
        raise EarlyListFailed(f"the page's tail is not the list's metadata: {error}") from None
    if not isinstance(meta, dict) or not meta.get("resourceVersion"):
        raise EarlyListFailed("the page's tail is not the list's metadata")
    return meta


def _headers(credentials: Credentials, user_agent: str) -> dict[str, str] | None:
    headers = {"Accept": "application/json", "User-Agent": user_agent}
    if credentials.exec is not None or credentials.tls_server_name:
        return None  # an exec plugin's token comes from the asynchronous client's refresh
    token = credentials.bearer()
    if credentials.token_file and not token:
        return None  # an empty token file: the asynchronous client refuses it, naming the file (never anonymous)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif credentials.username and credentials.password:
        raw = f"{credentials.username}:{credentials.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    return headers


def key(path: str, params: Mapping[str, str] | None = None) -> str:
    """The name a LIST is started and taken under: its path and sorted query parameters."""
    return f"{path}?{urlencode(sorted(params.items()))}" if params else path


def _split(listing: Listing) -> tuple[str, Mapping[str, str]]:
    return (listing, {}) if isinstance(listing, str) else listing


class _Fetch:
    """One path's pages, fetched one after another on a thread of its own."""

    def __init__(self, connect: Callable[[], http.client.HTTPConnection], prefix: str, listing: Listing,
                 headers: dict[str, str], page: int) -> None:
        self.pages: queue.SimpleQueue[Any] = queue.SimpleQueue()  # (bytes, meta, seconds), an error, _DONE
        self.stopped = False
        # The latest answer's `Date` and the monotonic moments its request went and its answer came
        # (`ServerClock.record`): a restarted operator's first decisions are taken from these pages,
        # before its own client has had an answer, and its clock is held to the server's by them.
        self.date: tuple[str | None, float, float] | None = None
        path, params = _split(listing)
        self._connect, self._url, self._headers, self._page = connect, prefix + path, headers, page
        self._params = dict(params)
        self._name = key(path, params)
        self._thread = threading.Thread(target=self._run, name=f"kubelock-prelist {self._name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            began = time.perf_counter()
            connection = self._connect()
            token = ""
            pages = 0
            while not self.stopped:
                query = self._params | {"limit": self._page} | ({"continue": token} if token else {})
                started = time.perf_counter()
                sent = time.monotonic()
                connection.request("GET", f"{self._url}?{urlencode(query)}", headers=self._headers)
                response = connection.getresponse()
                self.date = (response.getheader("Date"), sent, time.monotonic())
                body = response.read()
                if response.status != 200:
                    raise EarlyListFailed(f"HTTP {response.status}")
                meta = _tail(body)
                self.pages.put((body, meta, time.perf_counter() - started))
                pages += 1
                token = str(meta.get("continue") or "")
                if not token:
                    break
            connection.close()
            log.debug("early LIST of %s: %d pages in %.3f s", self._name, pages, time.perf_counter() - began)
            self.pages.put(_DONE)
        except Exception as error:  # any failure: the event loop lists again itself
            self.pages.put(error if isinstance(error, EarlyListFailed) else EarlyListFailed(repr(error)))


class Prelist:
    """LISTs started now, each on a thread, to be taken in by the event loop (`take`)."""

    def __init__(self, fetches: dict[str, _Fetch]) -> None:
        self._fetches = fetches

    @classmethod
    def start(cls, credentials: Credentials, listings: Sequence[Listing], *, page: int = 500,
              user_agent: str = "kubelock-operator") -> Prelist | None:
        """Start the LISTs of `listings` (each on a thread of its own, in this order); None when these
        credentials need the asynchronous client (or cannot be read now)."""
        try:
            headers = _headers(credentials, user_agent)
            if headers is None:
                return None
            server = urlsplit(credentials.server)
            host, port = server.hostname or "", server.port
            if server.scheme == "https":
                context = credentials.ssl_context()

                def connect() -> http.client.HTTPConnection:
                    return http.client.HTTPSConnection(host, port, timeout=TIMEOUT_SECONDS, context=context)
            else:

                def connect() -> http.client.HTTPConnection:
                    return http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
        except Exception as error:  # the asynchronous client will say what is wrong, with its retries
            log.debug("no early LIST: %s", error)
            return None
        prefix = server.path.rstrip("/")
        return cls({key(*_split(listing)): _Fetch(connect, prefix, listing, headers, page) for listing in listings})

    def take(self, path: str, on_request: RequestHook | None = None,
             params: Mapping[str, str] | None = None, *,
             on_date: DateHook | None = None) -> AsyncIterator[tuple[list[Body], str]] | None:
        """The pages of the early LIST of `path` with `params`, once (None: none was started for it).
        `on_request` is told of each page's request, as the asynchronous client tells of its own;
        `on_date` of each page's `Date` header and moments (`ServerClock.record`)."""
        fetch = self._fetches.pop(key(path, params), None)
        return None if fetch is None else _pages(fetch, on_request, on_date)

    def stop(self) -> None:
        """Ask the threads of the LISTs not taken to stop after their current page."""
        for fetch in self._fetches.values():
            fetch.stopped = True
        self._fetches.clear()


async def _pages(fetch: _Fetch, on_request: RequestHook | None,
                 on_date: DateHook | None = None) -> AsyncIterator[tuple[list[Body], str]]:
    """As `KubeClient.pages`: each page's items with the list's resourceVersion."""
    try:
        while True:
            try:
                got = fetch.pages.get_nowait()
            except queue.Empty:
                got = await asyncio.to_thread(fetch.pages.get)
            else:
                # The pages came in while the loop was busy (the imports, another page): parsing them
                # one after another would not let the loop run anything else until the last (the early
                # path's requests and answers, which are what a restart waits for).
                await asyncio.sleep(0)
            if got is _DONE:
                return
            if isinstance(got, EarlyListFailed):
                raise got
            body, meta, seconds = got
            if on_request is not None:
                on_request("list", 200, seconds)
            if on_date is not None and fetch.date is not None:
                on_date(*fetch.date)
            result = loads(body)
            del body
            listed = result.get("metadata") or {}
            if listed.get("continue") != meta.get("continue") or listed.get("resourceVersion") != meta.get(
                "resourceVersion"
            ):
                raise EarlyListFailed("the page's metadata is not what its tail said")
            yield result.get("items") or [], str(listed.get("resourceVersion") or "")
    finally:
        fetch.stopped = True
