"""Impersonation in kubelock's kubeconfig reader and client: the kubeconfig's `as`, `as-uid`,
`as-groups` and `as-user-extra`, the headers they become, and the commands' --as flags."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelock.cli.main import impersonation
from kubelock.kube.client import KubeClient
from kubelock.kube.config import ConfigError, Credentials, Impersonation, load
from kubelock.sdk.errors import InvalidInput


def config_with(tmp_path: Path, **user: Any) -> Path:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t", **user}}],
        "contexts": [{"name": "one", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "one",
    }))
    return path


def test_as_and_its_companions_are_read(tmp_path: Path) -> None:
    creds = load(config_with(tmp_path, **{"as": "dave", "as-uid": "42", "as-groups": ["oncall", "sre"],
                                          "as-user-extra": {"scopes": ["a", "b"]}}), env={})
    assert creds.impersonate == Impersonation(user="dave", uid="42", groups=("oncall", "sre"),
                                              extra=(("scopes", ("a", "b")),))


def test_no_as_is_no_impersonation(tmp_path: Path) -> None:
    assert load(config_with(tmp_path), env={}).impersonate is None


@pytest.mark.parametrize(("user", "says"), [
    ({"as-groups": ["oncall"]}, "without as"),
    ({"as-uid": "42"}, "without as"),
    ({"as": ["dave"]}, "as must be a user name"),
    ({"as": "dave", "as-groups": "oncall"}, "as-groups must be a list"),
    ({"as": "dave", "as-groups": [""]}, "as-groups must be a list"),
    ({"as": "dave", "as-user-extra": {"scopes": "a"}}, "as-user-extra must map"),
    ({"as": "dave", "as-uid": 42}, "as-uid must be a string"),
])
def test_bad_impersonation_is_refused_naming_the_field(tmp_path: Path, user: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load(config_with(tmp_path, **user), env={})


def test_headers_repeat_groups_and_escape_extra_keys() -> None:
    who = Impersonation(user="dave", uid="42", groups=("oncall", "sre"),
                        extra=(("example.org/scope name", ("x",)), ("plain", ("1", "2"))))
    assert who.headers() == [
        ("Impersonate-User", "dave"),
        ("Impersonate-Uid", "42"),
        ("Impersonate-Group", "oncall"),
        ("Impersonate-Group", "sre"),
        ("Impersonate-Extra-example.org%2Fscope%20name", "x"),  # as client-go escapes a key
        ("Impersonate-Extra-plain", "1"),
        ("Impersonate-Extra-plain", "2"),
    ]


def test_every_request_carries_the_impersonation() -> None:
    async def headers(creds: Credentials) -> Any:
        async with KubeClient(creds) as client:
            return await client._headers("application/json")

    plain = asyncio.run(headers(Credentials(server="https://127.0.0.1:1", token="t")))
    assert "Impersonate-User" not in plain
    sent = asyncio.run(headers(Credentials(server="https://127.0.0.1:1", token="t",
                                           impersonate=Impersonation(user="dave", groups=("oncall", "sre")))))
    assert sent["Authorization"] == "Bearer t"  # the caller's own credential authenticates
    assert sent.getall("Impersonate-User") == ["dave"]
    assert sent.getall("Impersonate-Group") == ["oncall", "sre"]


def args(**values: Any) -> argparse.Namespace:
    return argparse.Namespace(**values)


def test_command_flags() -> None:
    assert impersonation(args()) is None
    assert impersonation(args(as_user="dave", as_groups=["oncall"], as_uid=None)) == Impersonation(
        user="dave", groups=("oncall",))
    with pytest.raises(InvalidInput, match="need --as"):
        impersonation(args(as_user=None, as_groups=["oncall"]))
    with pytest.raises(InvalidInput, match="need --as"):
        impersonation(args(as_uid="42"))
    with pytest.raises(InvalidInput, match="--as needs a user name"):
        impersonation(args(as_user=" "))
    with pytest.raises(InvalidInput, match="--as-group needs a group name"):
        impersonation(args(as_user="dave", as_groups=[""]))


def test_the_operator_refuses_to_impersonate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # kopf's connection cannot impersonate: watches as one user and writes as another would be worse
    # than no start at all.
    from kubelock.operator.start import begin

    with pytest.raises(SystemExit) as stopped:
        begin(["--kubeconfig", str(config_with(tmp_path, **{"as": "dave"}))], early=False)
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert "cannot run the operator with impersonation" in said and "as: dave" in said
