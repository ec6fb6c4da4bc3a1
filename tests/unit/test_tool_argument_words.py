"""The LLM tools answer bad arguments in the tools' own words: a model that passed
`wait_seconds=-1` is told about wait_seconds, not about the SDK's `timeout` it never saw."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelock.sdk import LockClient, tools

NOWHERE = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: agents}}]
current-context: x
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[LockClient]:
    """A client of a server that does not exist: bad input is refused before any request."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(NOWHERE)
    with LockClient(kubeconfig=str(kubeconfig), instance="w1", retries=0) as client:
        tools.use(client)
        try:
            yield client
        finally:
            tools.use(None)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"wait_seconds": -1}, "wait_seconds must be more than 0 and at most 86400 seconds, not -1"),
        ({"ttl_seconds": 0}, "ttl_seconds must be between 1 and 86400 seconds, not 0"),
        ({"ttl_seconds": 0, "wait_seconds": 5}, "ttl_seconds must be between 1 and 86400 seconds, not 0"),
    ],
)
def test_bad_tool_arguments_are_named_as_the_tool_names_them(
    client: LockClient, arguments: dict[str, float], words: str
) -> None:
    answer = tools.acquire_lock("r://1", **arguments)  # type: ignore[arg-type]
    assert answer == f"lock on r://1 NOT acquired: {words}; do not work on this resource now"


def test_a_message_about_something_else_is_left_as_it_is(client: LockClient) -> None:
    answer = tools.acquire_lock("no-scheme")
    assert "resource 'no-scheme' has no '://'" in answer
