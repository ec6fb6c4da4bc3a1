"""The grant store: which writes each grant operation makes, and the outcome of each answer the
protocol expects (asserted through a recording fake; the real API server's side is in
tests/integration)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from kubelock.domain.model import Claim, CreateLock, Lock, RenewLock
from kubelock.domain.resource import lock_name
from kubelock.kube import paths
from kubelock.kube.codec import ClaimRecord, lock_view
from kubelock.kube.errors import Conflict, NotFound
from kubelock.operator.grants import GrantStore, LockNameTaken, Stale, Taken, Written
from tests.support.fakeapi import FakeApi

R = "deploy://api-prod"
NOW = 1_800_000_000.0
LOCK = paths.locks("a", lock_name(R))


def _claim() -> Claim:
    return Claim(name="c1", uid="u1", resource=R, holder="agent", sequence=7, created_at=NOW)


def _record() -> ClaimRecord:
    return ClaimRecord(namespace="a", claim=_claim(), resource_version="7", generation=1, conditions=(), pod_uid=None,
                       deleting=False)


def _create() -> CreateLock:
    return CreateLock(_claim(), NOW, 60)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_grant_is_one_create_and_its_token_is_the_creation_revision() -> None:
    api = FakeApi()
    outcome = run(GrantStore(api).create("a", _create(), _record()))  # type: ignore[arg-type]
    assert isinstance(outcome, Written) and outcome.body is not None
    assert api.requests == [("create", paths.locks("a"))]
    assert lock_view(outcome.body).fencing_token == int(outcome.body["metadata"]["resourceVersion"])


def test_a_create_that_meets_the_lock_reads_it_and_says_taken() -> None:
    api = FakeApi()
    store = GrantStore(api)  # type: ignore[arg-type]
    first = run(store.create("a", _create(), _record()))
    api.requests.clear()
    outcome = run(store.create("a", _create(), _record()))
    assert api.requests == [("create", paths.locks("a")), ("get", LOCK)]
    assert isinstance(outcome, Taken) and outcome.body == first.body


def test_a_create_that_meets_another_resources_lock_of_its_name_is_refused() -> None:
    # Another resource whose lock name is the same (a digest collision): the lock met is not this
    # resource's, so it is neither taken for a grant race nor decided on again (the view would never
    # change), but refused as a create the API server refuses.
    api = FakeApi()
    store = GrantStore(api)  # type: ignore[arg-type]
    run(store.create("a", _create(), _record()))
    lock = api.objects[LOCK]
    lock["spec"]["resource"] = "deploy://another"
    try:
        run(store.create("a", _create(), _record()))
    except LockNameTaken as refusal:
        assert (refusal.claim_uid, refusal.lock) == ("u1", lock_name(R))
        assert "deploy://another" in refusal.explanation and R in refusal.explanation
    else:
        raise AssertionError("not refused")


def test_a_create_that_meets_a_lock_gone_right_after_is_stale() -> None:
    api = FakeApi()

    async def taken(path: str, body: Any, default: Any) -> Any:
        raise Conflict(409, "AlreadyExists", "exists")

    api.react("create", taken)
    outcome = run(GrantStore(api).create("a", _create(), _record()))  # type: ignore[arg-type]
    assert isinstance(outcome, Stale)
    assert api.requests == [("create", paths.locks("a")), ("get", LOCK)]


def test_a_create_refused_otherwise_is_raised_for_the_caller_to_retry() -> None:
    api = FakeApi()

    async def unavailable(path: str, body: Any, default: Any) -> Any:
        raise NotFound(404, "NotFound", "namespace gone")

    api.react("create", unavailable)
    try:
        run(GrantStore(api).create("a", _create(), _record()))  # type: ignore[arg-type]
    except NotFound:
        pass
    else:
        raise AssertionError("a refusal that is no protocol answer must reach the caller")


def _granted(api: FakeApi) -> Lock:
    outcome = run(GrantStore(api).create("a", _create(), _record()))  # type: ignore[arg-type]
    api.requests.clear()
    return lock_view(outcome.body)


def test_a_renewal_on_the_version_seen_records_the_token() -> None:
    api = FakeApi()
    lock = _granted(api)
    version = api.objects[LOCK]["metadata"]["resourceVersion"]
    outcome = run(GrantStore(api).renew("a", RenewLock(lock, NOW + 10, 60), version))  # type: ignore[arg-type]
    assert isinstance(outcome, Written) and outcome.body is not None
    assert api.requests == [("patch", LOCK)]
    assert outcome.body["spec"]["fencingToken"] == lock.fencing_token == int(version)


def test_a_renewal_on_a_version_overtaken_or_unseen_is_stale() -> None:
    api = FakeApi()
    lock = _granted(api)
    store = GrantStore(api)  # type: ignore[arg-type]
    assert isinstance(run(store.renew("a", RenewLock(lock, NOW + 10, 60), "1")), Stale)
    assert isinstance(run(store.renew("a", RenewLock(lock, NOW + 10, 60), None)), Stale)
    assert api.requests == [("patch", LOCK)]  # nothing sent without a version


def test_a_deletion_is_uid_conditional_and_a_lock_already_gone_is_deleted() -> None:
    api = FakeApi()
    lock = _granted(api)
    store = GrantStore(api)  # type: ignore[arg-type]
    assert isinstance(run(store.delete("a", replace(lock, uid="another"))), Stale)
    assert LOCK in api.objects
    assert isinstance(run(store.delete("a", lock)), Written)
    assert isinstance(run(store.delete("a", lock)), Written)
    assert LOCK not in api.objects
