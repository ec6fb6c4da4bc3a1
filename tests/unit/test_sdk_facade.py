"""The blocking LockClient is the AsyncLockClient's twin: every documented method exists on both,
with the same parameters and defaults (docs/sdk.md, "The client")."""

from __future__ import annotations

import inspect

import pytest

from kubelock.sdk import AsyncLockClient, LockClient

DOCUMENTED = ("try_acquire", "acquire", "release", "heartbeat", "get", "list", "lock", "identity", "whoami", "who")


def parameters(function: object) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", ["__init__", *DOCUMENTED])
def test_the_blocking_client_has_the_async_clients_methods_and_parameters(name: str) -> None:
    assert hasattr(LockClient, name), f"LockClient lacks {name}()"
    assert parameters(getattr(LockClient, name)) == parameters(getattr(AsyncLockClient, name))
