"""Who the SDK acts as, from arguments and the environment (no request when none is needed)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from kubelock.kube.client import KubeClient
from kubelock.kube.config import Credentials
from kubelock.sdk import Deadlock, InvalidInput, NotFound, Rejected, TimedOut, Unreachable, identity, tools


@pytest.fixture
async def nowhere() -> AsyncIterator[KubeClient]:
    """A client of a server that does not exist: any request would raise, so passing tests prove
    that none was made."""
    async with KubeClient(Credentials(server="https://127.0.0.1:1"), retries=0) as client:
        yield client


@pytest.mark.parametrize(
    ("holder", "env", "expected"),
    [
        ("explicit", {"KUBELOCK_HOLDER": "env", "POD_NAME": "pod"}, ("explicit", "pod", "uid")),
        (None, {"KUBELOCK_HOLDER": "env", "POD_NAME": "pod"}, ("env", "pod", "uid")),
        ("x", {"POD_NAME": "pod", "POD_NAMESPACE": "elsewhere"}, ("x", None, None)),  # podRef is same-namespace
    ],
)
async def test_an_explicit_holder_is_used_as_it_is(
    nowhere: KubeClient, holder: str | None, env: dict[str, str], expected: tuple[str, str | None, str | None]
) -> None:
    env = {**env, "POD_UID": "uid"}
    got = await identity.resolve(nowhere, holder=holder, namespace="agents", env=env)
    assert (got.holder, got.pod_name, got.pod_uid) == expected
    assert got.namespace == "agents"


async def test_without_an_explicit_holder_the_api_server_is_asked(nowhere: KubeClient) -> None:
    # POD_NAME no longer names the holder: the identity comes from the API server only.
    with pytest.raises(Unreachable):
        await identity.resolve(nowhere, holder=None, namespace="agents", env={"POD_NAME": "pod"})


async def test_an_invalid_holder_is_refused(nowhere: KubeClient) -> None:
    with pytest.raises(InvalidInput):
        await identity.resolve(nowhere, holder=None, namespace="a", env={"KUBELOCK_HOLDER": "a b"})


POD = identity.UserInfo("system:serviceaccount:agents:worker", "worker-0", "3f2a1b4c-1111-2222-3333-444455556666")
ALICE = identity.UserInfo("alice")


@pytest.mark.parametrize(
    ("who", "given", "env", "expected"),
    [
        (POD, None, {}, "3f2a1b4c"),
        (POD, "w2", {}, "3f2a1b4c.w2"),  # several processes of one pod
        (ALICE, "laptop", {}, "laptop"),
        (ALICE, None, {"POD_NAME": "web-0", "POD_UID": "abcdef012345"}, "web-0.abcdef01"),  # unbound token in a pod
    ],
)
def test_instance(who: identity.UserInfo, given: str | None, env: dict[str, str], expected: str) -> None:
    assert identity.instance_for(who, given, env, generate=False) == expected


def test_in_a_pod_the_instance_names_the_container_unless_one_is_given() -> None:
    assert identity.instance_for(POD, None, {}, generate=False, container="left") == "3f2a1b4c.left"
    assert identity.instance_for(POD, None, {}, generate=False, container="right") == "3f2a1b4c.right"
    assert identity.instance_for(POD, "w2", {}, generate=False, container="left") == "3f2a1b4c.w2"
    assert identity.instance_for(POD, None, {}, generate=False, container=None) == "3f2a1b4c"
    # A container's name may have 63 characters; the instance 63 in all: the start and a hash.
    long_a, long_b = (identity.instance_for(POD, None, {}, generate=False, container="c" * 62 + x) for x in "ab")
    assert len(long_a) == 63 and long_a.startswith("3f2a1b4c.ccc") and long_a != long_b
    # Outside a pod the container is not asked for.
    assert identity.instance_for(ALICE, "laptop", {}, generate=False, container="left") == "laptop"


def test_instance_outside_a_pod_is_generated_per_process_or_required() -> None:
    generated = identity.instance_for(ALICE, None, {}, generate=True)
    assert generated == identity.instance_for(ALICE, None, {}, generate=True)  # one per process
    assert f"-{os.getpid()}-" in generated
    with pytest.raises(identity.InstanceRequired, match="export KUBELOCK_INSTANCE=<name>"):
        identity.instance_for(ALICE, None, {}, generate=False)
    with pytest.raises(InvalidInput, match="instance 'a/b' is invalid"):
        identity.instance_for(ALICE, "a/b", {}, generate=False)
    with pytest.raises(InvalidInput, match="at most 54 characters"):
        identity.instance_for(POD, "w" * 55, {}, generate=False)


def test_a_forked_child_is_another_instance() -> None:
    parent = identity.process_instance()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, identity.process_instance().encode())
        os._exit(0)
    os.waitpid(child, 0)
    os.close(write)
    assert os.read(read, 200).decode() not in ("", parent)


@pytest.mark.parametrize(
    ("explicit", "env", "default", "expected"),
    [
        ("x", {"KUBELOCK_NAMESPACE": "y", "POD_NAMESPACE": "z"}, "d", "x"),
        (None, {"KUBELOCK_NAMESPACE": "y", "POD_NAMESPACE": "z"}, "d", "y"),
        (None, {"POD_NAMESPACE": "z"}, "d", "z"),
        (None, {}, "d", "d"),
    ],
)
def test_namespace_precedence(explicit: str | None, env: dict[str, str], default: str, expected: str) -> None:
    assert identity.namespace_from(explicit, default, env) == expected


RETRY = "release your locks and retry"
DONT = "do not work on this resource now"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (Deadlock(["a", "r://1", "b", "r://2", "a"]), f"deadlock: a → r://1 → b → r://2 → a; {RETRY}"),
        (TimedOut("slow", holder="b"), "gave up waiting for r://2 (held by b); skip this resource"),
        (Unreachable("cannot reach"), f"lock on r://2 NOT acquired: cannot reach; {DONT}"),
        (Rejected("bad pod", reason="PodNotFound"), f"lock on r://2 NOT acquired: bad pod; {DONT}"),
    ],
)
def test_tool_sentences_for_failures(error: Exception, text: str) -> None:
    assert tools._failure("r://2", error) == text  # type: ignore[arg-type]


def test_release_tool_never_raises() -> None:
    class Broken:
        def release(self, uri: str) -> None:
            raise NotFound(f"you hold no lock on {uri}")

    tools.use(Broken())  # type: ignore[arg-type]
    try:
        assert tools.release_lock("r://1") == "nothing to release: you hold no lock on r://1"
    finally:
        tools.use(None)
