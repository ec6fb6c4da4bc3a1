"""The early LIST's reading of a page's tail and its check of each page (`kubelock.kube.prelist`)."""

from __future__ import annotations

import asyncio
import json
import queue
from types import SimpleNamespace
from typing import Any

import pytest

from kubelock.kube.prelist import _DONE, EarlyListFailed, _pages, _tail, key


def _page(names: list[str], version: str, token: str = "", *, sort: bool = True) -> bytes:
    meta = {"resourceVersion": version} | ({"continue": token} if token else {})
    items = [{"metadata": {"name": n, "resourceVersion": "7"}, "spec": {"note": '"metadata":{}'}} for n in names]
    doc: dict[str, Any] = {"kind": "LockClaimList", "apiVersion": "kubelock.dev/v1alpha1", "metadata": meta,
                           "items": items}
    return json.dumps(doc, sort_keys=sort, separators=(",", ":")).encode() + b"\n"


def test_the_tail_of_a_sorted_list_is_its_metadata() -> None:
    assert _tail(_page(["a", "b"], "42", "next")) == {"resourceVersion": "42", "continue": "next"}
    assert _tail(_page([], "42")) == {"resourceVersion": "42"}


def test_a_tail_that_is_not_the_lists_metadata_fails() -> None:
    with pytest.raises(EarlyListFailed):
        _tail(_page(["a", "b"], "42", "next", sort=False))  # items last: the tail is inside an item
    with pytest.raises(EarlyListFailed):
        _tail(b'{"items":[]}')
    with pytest.raises(EarlyListFailed):
        _tail(b'{"items":[],"metadata":{}}')  # no resourceVersion: not a list's


def _fetch(*got: object) -> Any:
    pages: queue.SimpleQueue[object] = queue.SimpleQueue()
    for item in got:
        pages.put(item)
    return SimpleNamespace(pages=pages, stopped=False, date=None)


async def _names(fetch: Any) -> list[tuple[list[str], str]]:
    return [([i["metadata"]["name"] for i in page], version) async for page, version in _pages(fetch, None)]


def test_pages_are_handed_over_with_the_lists_version_and_the_thread_is_stopped() -> None:
    fetch = _fetch((_page(["a"], "9", "t"), {"resourceVersion": "9", "continue": "t"}, 0.1),
                   (_page(["b"], "9"), {"resourceVersion": "9"}, 0.1), _DONE)
    assert asyncio.run(_names(fetch)) == [(["a"], "9"), (["b"], "9")]
    assert fetch.stopped


def test_a_page_unlike_its_tail_or_a_failed_thread_ends_the_list() -> None:
    fetch = _fetch((_page(["a"], "9", "t"), {"resourceVersion": "9", "continue": "other"}, 0.1))
    with pytest.raises(EarlyListFailed):
        asyncio.run(_names(fetch))
    with pytest.raises(EarlyListFailed, match="HTTP 500"):
        asyncio.run(_names(_fetch((_page(["a"], "9", "t"), {"resourceVersion": "9", "continue": "t"}, 0.1),
                                  EarlyListFailed("HTTP 500"))))


def test_pages_already_in_let_the_loop_run_between_them() -> None:
    """Pages that came in while the loop was busy are parsed one a turn: another task (the early
    path's requests) runs between them, not only after the last."""
    meta = {"resourceVersion": "9", "continue": "t"}
    fetch = _fetch(*((_page([f"p{i}"], "9", "t"), meta, 0.1) for i in range(3)),
                   (_page(["last"], "9"), {"resourceVersion": "9"}, 0.1), _DONE)
    order: list[str] = []

    async def other() -> None:
        for _ in range(3):
            order.append("other")
            await asyncio.sleep(0)

    async def run() -> None:
        task = asyncio.create_task(other())
        async for page, _ in _pages(fetch, None):
            order.append(page[0]["metadata"]["name"])
        await task

    asyncio.run(run())
    assert order.index("other") < order.index("p0") and order.count("other") == 3
    assert order.index("last") > max(i for i, step in enumerate(order) if step == "other")


def test_a_listing_is_taken_under_its_path_and_query() -> None:
    assert key("/apis/x/lockclaims") == "/apis/x/lockclaims"
    selected = key("/apis/x/lockclaims", {"fieldSelector": "status.phase="})
    assert selected == "/apis/x/lockclaims?fieldSelector=status.phase%3D"
