"""Tools for LLM agents: plain arguments, short text results.

`acquire_lock` and `release_lock` take one resource; `acquire_locks` and `release_locks` take several
at once, all or none (an agent that needs an issue and its branch together asks for both in one call
rather than one after the other, which is how two agents deadlock). Register the functions with your
agent framework as they are (their docstrings describe the arguments). They never raise: every
outcome is one sentence that tells the agent what to do next, and any failure says plainly that the
lock was NOT acquired (fail closed).

The client is built on first use from the environment (in a pod: nothing to configure); call
`use(LockClient(...))` first to choose another one. A client the tools built themselves is closed
when it is replaced and when the interpreter exits, so no HTTP session is left open.
"""

from __future__ import annotations

import atexit
import contextlib
import threading

from kubelock.sdk.errors import Deadlock, LockError, Lost, NotFound, TimedOut
from kubelock.sdk.model import format_time
from kubelock.sdk.sync import LockClient
from kubelock.sdk.targets import Uris

_client: LockClient | None = None
_built: LockClient | None = None  # the client the tools built (and so must close), if any
_guard = threading.Lock()


def use(client: LockClient | None) -> None:
    """Make the tools act through `client` (None: build one from the environment on next use).
    A client passed here stays the caller's to close."""
    global _client
    with _guard:
        _client = client
        _close_built()


def _get() -> LockClient:
    global _client, _built
    with _guard:
        if _client is None:
            _client = _built = LockClient()
        return _client


def _close_built() -> None:
    global _built
    built, _built = _built, None
    if built is not None:
        with contextlib.suppress(Exception):  # closing must not turn into an agent's error
            built.close()


@atexit.register
def _close_at_exit() -> None:
    global _client
    with _guard:
        if _client is _built:
            _client = None
        _close_built()


def acquire_lock(resource_key: str, ttl_seconds: int | None = None, wait_seconds: float | None = None) -> str:
    """Acquire an exclusive lock on a resource before working on it.

    Args:
        resource_key: The resource as a URI, e.g. "github://acme/app/issues/42" or "deploy://api-prod".
        ttl_seconds: How long the lock lasts unless released (1-86400; default: the cluster's, 30 minutes).
        wait_seconds: Wait up to this long for another holder to release it (default: do not wait).

    Returns one sentence: "acquired …" when you hold the lock; otherwise why not and what to do.
    """
    return _acquire(resource_key, ttl_seconds, wait_seconds)


def acquire_locks(resource_keys: list[str], ttl_seconds: int | None = None, wait_seconds: float | None = None) -> str:
    """Acquire exclusive locks on several resources at once: all of them, or none.

    Args:
        resource_keys: The resources as URIs (2-16, no repeats), e.g.
            ["github://acme/app/issues/42", "git://acme/app/fix-42"].
        ttl_seconds: How long the locks last unless released (1-86400; default: the cluster's, 30 minutes).
        wait_seconds: Wait up to this long until all of them are free (default: do not wait).

    Returns one sentence: "acquired …" when you hold every lock; otherwise why not and what to do.
    """
    return _acquire(list(resource_keys), ttl_seconds, wait_seconds)


def _acquire(uris: Uris, ttl_seconds: int | None, wait_seconds: float | None) -> str:
    named = _named(uris)
    try:
        client = _get()
        if wait_seconds is None:
            result = client.try_acquire(uris, ttl=ttl_seconds)
        else:
            result = client.acquire(uris, wait=True, timeout=wait_seconds, ttl=ttl_seconds)
    except LockError as error:
        return _failure(named, error)
    if not result.ok and isinstance(uris, str):
        since = format_time(result.held_since)
        return f"{result.resource} is held by {result.holder}" + (f" since {since}" if since else "") + (
            "; skip this resource"
        )
    if not result.ok:
        return f"none of {named} acquired: {result.message}; skip them"
    expires = format_time(result.expires_at)
    if isinstance(uris, str):
        token = result.fencing_token
        return f"acquired {result.resource} (fencing token {token}, expires {expires}); call release_lock when done"
    tokens = ", ".join(f"{grant.resource} (fencing token {grant.fencing_token})" for grant in result.grants)
    return f"acquired {tokens}, all expiring {expires}; call release_locks with the same list when done"


def _named(uris: Uris) -> str:
    return uris if isinstance(uris, str) else ", ".join(uris)


def release_lock(resource_key: str) -> str:
    """Release a lock you hold, as soon as you are done with the resource.

    Args:
        resource_key: The same URI you passed to acquire_lock.

    Returns one sentence saying whether a lock was released.
    """
    return _release(resource_key)


def release_locks(resource_keys: list[str]) -> str:
    """Release the locks you acquired together with acquire_locks, as soon as you are done.

    Args:
        resource_keys: The same list of URIs you passed to acquire_locks.

    Returns one sentence saying whether the locks were released.
    """
    return _release(list(resource_keys))


def _release(uris: Uris) -> str:
    named = _named(uris)
    try:
        result = _get().release(uris)
    except Lost as error:
        return (
            f"the lock on {named} had already been lost ({error.message}); another instance may have "
            "worked on it meanwhile — check before relying on your changes"
        )
    except NotFound as error:
        return f"nothing to release: {error.message}"
    except LockError as error:
        return f"could not release {named}: {error.message}; it expires by itself when its TTL runs out"
    return f"released {_named(result.resources) if result.resources else result.resource}"


def _failure(named: str, error: LockError) -> str:
    if isinstance(error, Deadlock):
        return f"{error.message}; release your locks and retry"
    if isinstance(error, TimedOut):
        held = f" (held by {error.holder})" if error.holder else ""
        return f"gave up waiting for {named}{held}; skip this resource"
    return f"lock on {named} NOT acquired: {_in_tool_words(error.message)}; do not work on this resource now"


# The SDK's checks name its own arguments; a model calling a tool knows only the tool's.
_TOOL_ARGUMENTS = (("ttl ", "ttl_seconds "), ("timeout ", "wait_seconds "))


def _in_tool_words(message: str) -> str:
    for sdk_name, tool_name in _TOOL_ARGUMENTS:
        if message.startswith(sdk_name):
            return tool_name + message.removeprefix(sdk_name)
    return message
