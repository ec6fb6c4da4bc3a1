"""Acting as another user, as kubectl does (a kubeconfig's `as`/`as-groups`, or --as/--as-group),
against the real control plane: the SDK and the commands must send the impersonation, so that the
API server authorizes and admits every request as that user, and the holder is that user's.

docs/install.md binds `kubelock-admin` to a group (`oncall`); an administrator checking what a
member of that group may do impersonates one. Were the impersonation dropped, the commands would
run with the administrator's own rights: a lock broken where the group has no rights, a claim in
the administrator's name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    RbacAuthorizationV1Api,
    RbacV1Subject,
    V1ObjectMeta,
    V1RoleBinding,
)

from kubelock.cli.exitcodes import ExitCode
from kubelock.sdk import Forbidden, Impersonation, LockClient
from kubelock.testbed import wait_until
from tests.support.access import cluster_role, wait_allowed
from tests.support.claims import Locks
from tests.support.commands import environment, run
from tests.support.namespaces import temporary_namespace
from tests.support.operator import OperatorProcess

Cluster = Any
URI = "deploy://prod"
OTHER = "deploy://staging"
DEADLINE = 60.0


def held(locks: Locks, uri: str) -> bool:
    return any(lock["spec"]["resource"] == uri for lock in locks.locks())


def impersonating(source: Path, path: Path, user: str, groups: list[str]) -> Path:
    """A copy of a kubeconfig whose user acts as `user`, a member of `groups`."""
    config = yaml.safe_load(source.read_text())
    for entry in config["users"]:
        entry["user"]["as"] = user
        entry["user"]["as-groups"] = groups
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def lock_space(control_plane: Cluster, admin_api: ApiClient, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two namespaces: in the first the group `oncall` is bound to kubelock-admin, in the second it has
    nothing; and the operator serving both."""
    with temporary_namespace(admin_api, "oncall") as bound, temporary_namespace(admin_api, "other") as unbound:
        binding = V1RoleBinding(
            metadata=V1ObjectMeta(name="oncall-locks"),
            role_ref=cluster_role("kubelock-admin"),
            subjects=[RbacV1Subject(kind="Group", name="oncall", api_group="rbac.authorization.k8s.io")],
        )
        RbacAuthorizationV1Api(admin_api).create_namespaced_role_binding(bound, binding)
        wait_allowed(admin_api, "dave", bound, "delete", "resourcelocks", groups=("oncall",))
        with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(bound, unbound)):
            yield bound, unbound


def test_a_kubeconfig_that_impersonates_claims_and_breaks_as_that_user(
    control_plane: Cluster, admin_api: ApiClient, lock_space: tuple[str, str], tmp_path: Path
) -> None:
    bound, unbound = lock_space
    dave = impersonating(control_plane.kubeconfig, tmp_path / "dave.kubeconfig", "dave", ["oncall"])

    # The SDK: the identity is the impersonated user's, and so is the claim.
    with LockClient(kubeconfig=str(dave), namespace=bound, instance="pager") as client:
        assert client.identity().holder == "user:dave/pager"
        assert client.acquire(URI, ttl=60).holder == "user:dave/pager"
        client.release(URI)

    # The commands: a lock of someone else broken where the group is a lock admin ...
    with LockClient(kubeconfig=str(control_plane.kubeconfig), namespace=bound, holder="user:alice/laptop") as alice:
        alice.acquire(URI, ttl=60)
        broke = run("kubelock", "unlock", URI, "--reason", "oncall drill", "-o", "json",
                    env=environment(dave, bound))
        assert broke.code == ExitCode.OK, broke.stderr
        locks = Locks(admin_api, bound)
        wait_until(lambda: not held(locks, URI), what="the broken lock to be gone", timeout=DEADLINE)

    # ... and refused where it has no rights, which the administrator's own credentials have.
    with LockClient(kubeconfig=str(control_plane.kubeconfig), namespace=unbound, holder="user:alice/laptop") as alice:
        alice.acquire(OTHER, ttl=60)
        refused = run("kubelock", "unlock", OTHER, "--reason", "not ours", env=environment(dave, unbound))
        assert refused.code == ExitCode.FORBIDDEN, (refused.code, refused.stdout, refused.stderr)
        assert "dave" in refused.stderr, refused.stderr
        assert held(Locks(admin_api, unbound), OTHER)


def test_as_and_as_group_flags_act_as_that_user(
    control_plane: Cluster, admin_api: ApiClient, lock_space: tuple[str, str]
) -> None:
    bound, unbound = lock_space
    admin = environment(control_plane.kubeconfig, bound)
    held = run("kubelock", "--as", "dave", "--as-group", "oncall", "--instance", "pager", "acquire", URI,
               "-o", "json", env=admin)
    assert held.code == ExitCode.OK, held.stderr
    assert json.loads(held.stdout)["holder"] == "user:dave/pager"
    released = run("kubelock", "--as", "dave", "--as-group", "oncall", "--instance", "pager", "release", URI,
                   env=admin)
    assert released.code == ExitCode.OK, released.stderr

    elsewhere = run("kubelock", "--as", "dave", "--as-group", "oncall", "--instance", "pager", "acquire", URI,
                    env=environment(control_plane.kubeconfig, unbound))
    assert elsewhere.code == ExitCode.FORBIDDEN, (elsewhere.code, elsewhere.stderr)
    # The refusal says what to do about it: which role to bind in that namespace, and how.
    assert (f"binding the ClusterRole kubelock-agent in namespace {unbound}: kubectl -n {unbound} create "
            "rolebinding <name> --clusterrole=kubelock-agent --user=dave") in elsewhere.stderr, elsewhere.stderr

    lonely = run("kubelock", "--as-group", "oncall", "status", env=admin)
    assert lonely.code == ExitCode.INVALID_INPUT
    assert "--as-group and --as-uid need --as" in lonely.stderr


def test_sdk_impersonate_argument(control_plane: Cluster, lock_space: tuple[str, str]) -> None:
    bound, unbound = lock_space
    as_dave = Impersonation(user="dave", groups=("oncall",))
    with LockClient(kubeconfig=str(control_plane.kubeconfig), namespace=bound, instance="pager",
                    impersonate=as_dave) as client:
        assert client.acquire(URI, ttl=60).holder == "user:dave/pager"
    with LockClient(kubeconfig=str(control_plane.kubeconfig), namespace=unbound, instance="pager",
                    impersonate=as_dave) as client, pytest.raises(Forbidden):
        client.acquire(URI, ttl=60)


def test_a_line_break_in_the_impersonation_or_the_token_is_a_clear_error(
    control_plane: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A value with a CR or LF cannot go into a request header (aiohttp refuses it as a header
    injection, with a ValueError deep in the request): the commands must say which value is wrong,
    with their exit code for bad input or configuration, not end in a traceback (exit 9)."""
    env = environment(control_plane.kubeconfig, namespace)
    injected = "bob\r\nImpersonate-Group: system:masters"
    for flags in (("--as", injected), ("--as", "bob", "--as-group", injected), ("--as", "bob", "--as-uid", injected)):
        refused = run("kubelock", *flags, "status", env=env)
        assert refused.code == ExitCode.INVALID_INPUT, (flags, refused.code, refused.stderr)
        assert "contains a control character (a line break, tab or escape)" in refused.stderr, refused.stderr

    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    for entry in config["users"]:
        entry["user"]["as"] = injected
    odd_as = tmp_path / "odd-as.kubeconfig"
    odd_as.write_text(yaml.safe_dump(config))
    refused = run("kubelock", "status", env=environment(odd_as, namespace))
    assert refused.code == ExitCode.UNREACHABLE, (refused.code, refused.stderr)
    assert f"kubeconfig {odd_as}: the impersonated user" in refused.stderr, refused.stderr

    # A token file rewritten with a line break inside the token (or not text at all).
    token_file = tmp_path / "token"
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    for entry in config["users"]:
        entry["user"] = {"tokenFile": str(token_file)}
    by_file = tmp_path / "token-file.kubeconfig"
    by_file.write_text(yaml.safe_dump(config))
    for content, said in ((b"abc\r\nImpersonate-User: bob", "contains a control character"),
                          ("token".encode("utf-16"), "is not text (UTF-8)")):
        token_file.write_bytes(content)
        refused = run("kubelock", "status", env=environment(by_file, namespace))
        assert refused.code == ExitCode.UNREACHABLE, (refused.code, refused.stderr)
        assert f"the token file {token_file} {said}" in refused.stderr, refused.stderr

    # The SDK's argument is checked where it is made.
    with pytest.raises(ValueError, match="contains a control character"):
        Impersonation(user="dave", groups=(injected,))
