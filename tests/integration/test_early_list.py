"""The early LIST (`kubelock.kube.prelist`) against the real API server: the pages it takes in are
the collection the asynchronous client lists, and a collection whose pages it cannot follow, or a
request the API server refuses, ends it with `EarlyListFailed` instead of a partial listing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient

from kubelock.kube import config, paths
from kubelock.kube.client import KubeClient
from kubelock.kube.prelist import EarlyListFailed, Prelist
from tests.support.claims import Locks
from tests.support.namespaces import temporary_namespace

CLAIMS = 7


@pytest.fixture
def listed_ns(admin_api: ApiClient) -> Iterator[str]:
    """A namespace no operator watches, holding CLAIMS claims."""
    with temporary_namespace(admin_api, "klp-") as name:
        locks = Locks(admin_api, name)
        for i in range(CLAIMS):
            locks.claim(f"c{i}", f"prelist://r{i}", "h")
        yield name


async def _take(prelist: Prelist, path: str) -> tuple[list[str], str, list[str]]:
    requests: list[str] = []
    pages = prelist.take(path, lambda verb, status, _: requests.append(f"{verb} {status}"))
    assert pages is not None
    names: list[str] = []
    version = ""
    async for page, listed_at in pages:
        names += [item["metadata"]["name"] for item in page]
        version = listed_at
    return names, version, requests


def test_early_pages_are_the_collection_the_client_lists(control_plane, listed_ns: str) -> None:
    credentials = config.load(str(control_plane.kubeconfig))
    prelist = Prelist.start(credentials, [paths.claims(listed_ns)], page=3)
    assert prelist is not None

    async def both() -> tuple[tuple[list[str], str, list[str]], list[str]]:
        early = await _take(prelist, paths.claims(listed_ns))
        client = KubeClient(credentials)
        try:
            items, _ = await client.list_all(paths.claims(listed_ns))
        finally:
            await client.close()
        return early, [item["metadata"]["name"] for item in items]

    (names, version, requests), listed = asyncio.run(both())
    assert sorted(names) == sorted(listed) == sorted(f"c{i}" for i in range(CLAIMS))
    assert int(version) > 0
    assert requests == ["list 200"] * 3  # 7 claims, 3 a page
    assert prelist.take(paths.claims(listed_ns)) is None  # taken once


def test_a_collection_it_cannot_follow_or_a_refusal_ends_it_with_a_failure(control_plane) -> None:
    credentials = config.load(str(control_plane.kubeconfig))
    # Built-in types put the list's metadata before the items: the tail is an item's, not the list's.
    prelist = Prelist.start(credentials, ["/api/v1/namespaces", "/apis/kubelock.dev/v1alpha1/nosuchthings"],
                            page=1)
    assert prelist is not None

    async def fails(path: str) -> str:
        pages = prelist.take(path)
        assert pages is not None
        with pytest.raises(EarlyListFailed) as failure:
            async for _ in pages:
                pass
        return str(failure.value)

    assert "metadata" in asyncio.run(fails("/api/v1/namespaces"))
    assert "HTTP 404" in asyncio.run(fails("/apis/kubelock.dev/v1alpha1/nosuchthings"))
