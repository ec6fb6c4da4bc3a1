"""kubelock's own kubeconfig reader and credential refresh (kubelock.kube.config, kubelock.kube.auth).

The exec plugins here are real processes (small Python scripts), run the way client-go runs them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelock.kube.auth import Authenticator, CredentialError
from kubelock.kube.config import ConfigError, load, load_in_cluster


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def kubeconfig(users: list[dict[str, Any]], *, current: str = "one", clusters: list[dict[str, Any]] | None = None,
               contexts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters or [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/"}}],
        "users": users,
        "contexts": contexts or [{"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}],
        "current-context": current,
    }


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def plugin(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "plugin.py"
    script.write_text(f"#!{sys.executable}\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


COUNTING_PLUGIN = """
import json, os, sys, time
from datetime import datetime, timezone, timedelta
counter = os.environ["COUNTER"]
n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
open(counter, "w").write(str(n))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False, info
exp = datetime.now(timezone.utc) + timedelta(seconds=float(os.environ.get("LIFETIME", "100")))
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": f"token-{n}", "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


def test_current_context_cluster_user_and_namespace(tmp_path: Path) -> None:
    path = write(tmp_path / "config", kubeconfig([{"name": "u", "user": {"token": "abc"}}]))
    creds = load(path, env={})
    assert (creds.server, creds.token, creds.namespace, creds.insecure) == ("https://127.0.0.1:6443", "abc", "ns1",
                                                                           False)


def test_explicit_context_and_first_file_wins(tmp_path: Path) -> None:
    first = write(tmp_path / "a", kubeconfig([{"name": "u", "user": {"token": "from-a"}}]))
    second = write(tmp_path / "b", kubeconfig(
        [{"name": "u", "user": {"token": "from-b"}}, {"name": "v", "user": {"token": "v-token"}}],
        current="two",
        contexts=[{"name": "two", "context": {"cluster": "c", "user": "v"}}],
    ))
    creds = load(env={"KUBECONFIG": f"{first}{os.pathsep}{second}"})
    assert creds.token == "from-a"  # current-context "one" from the first file, user u from the first file
    creds = load(env={"KUBECONFIG": f"{first}{os.pathsep}{second}"}, context="two")
    assert (creds.token, creds.namespace) == ("v-token", "default")


def test_certificates_as_files_relative_to_the_kubeconfig_or_as_data(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    doc = kubeconfig(
        [{"name": "u", "user": {"client-certificate": "certs/c.pem",
                                "client-key-data": base64.b64encode(b"KEY").decode(), "tokenFile": "tok"}}],
        clusters=[{"name": "c", "cluster": {"server": "https://h:1", "certificate-authority-data":
                                            base64.b64encode(b"CA").decode(), "insecure-skip-tls-verify": True,
                                            "tls-server-name": "api.example"}}],
    )
    creds = load(write(tmp_path / "config", doc), env={})
    assert creds.cert_file == str(tmp_path / "certs" / "c.pem")
    assert creds.token_file == str(tmp_path / "tok")
    assert creds.key_file is not None and Path(creds.key_file).read_bytes() == b"KEY"
    assert stat.S_IMODE(os.stat(creds.key_file).st_mode) == 0o600
    assert creds.ca_file is not None and Path(creds.ca_file).read_bytes() == b"CA"
    assert creds.insecure and creds.tls_server_name == "api.example"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (kubeconfig([{"name": "u", "user": {}}], current="nope"),
         r"has no context 'nope' \(its contexts: 'one'\); pass --context with one of them"),
        (kubeconfig([{"name": "x", "user": {}}]), "names user 'u', which kubeconfig"),
        (kubeconfig([{"name": "u", "user": {"auth-provider": {"name": "oidc"}}}]), "auth-provider 'oidc' is not"),
        (kubeconfig([{"name": "u", "user": {"exec": {"command": "x", "apiVersion": "v0"}}}]), "exec apiVersion"),
        (kubeconfig([{"name": "u", "user": {"client-key-data": "***"}}]), "client-key-data is not valid base64"),
    ],
)
def test_unusable_kubeconfigs_are_named(tmp_path: Path, doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path / "config", doc), env={})


def test_missing_kubeconfig_outside_a_pod(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not running in a pod"):
        load(env={"KUBECONFIG": str(tmp_path / "none")})


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t1\n")
    (tmp_path / "namespace").write_text("agents")
    (tmp_path / "ca.crt").write_text("CA")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = load(env=env, sa_dir=tmp_path)
    assert (creds.server, creds.namespace, creds.in_cluster) == ("https://[fd00::1]:443", "agents", True)
    assert creds == load_in_cluster(env, tmp_path)


async def test_token_file_is_reread_every_minute_and_after_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    now = [1000.0]
    doc = kubeconfig([{"name": "u", "user": {"tokenFile": str(token)}}])
    auth = Authenticator(load(write(tmp_path / "config", doc), env={}), clock=lambda: now[0])
    assert await auth.headers() == {"Authorization": "Bearer first"}
    token.write_text("second")  # the kubelet rotated it
    now[0] += 59
    assert await auth.token() == "first"
    now[0] += 2
    assert await auth.token() == "second"
    token.write_text("third")
    assert await auth.refresh(rejected="second")  # a 401: read again, worth one more try
    assert await auth.token() == "third"


async def test_exec_plugin_runs_again_before_its_credential_expires(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    script = plugin(tmp_path, COUNTING_PLUGIN)
    doc = kubeconfig([{"name": "u", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": str(script), "interactiveMode": "Never",
        "env": [{"name": "COUNTER", "value": str(counter)}, {"name": "LIFETIME", "value": "100"}]}}}])
    creds = load(write(tmp_path / "config", doc), env={})
    assert creds.exec is not None
    auth = Authenticator(creds)
    assert await auth.token() == "token-1"
    assert await auth.token() == "token-1"  # cached while fresh
    deadline = auth.refresh_deadline()
    assert auth.expires_at is not None and deadline is not None
    assert deadline.timestamp() < auth.expires_at  # replaced before it expires (80% of its lifetime)
    auth._clock = lambda: deadline.timestamp() + 0.01  # type: ignore[method-assign]
    assert await auth.token() == "token-2"
    assert await auth.refresh(rejected="token-2")
    assert await auth.token() == "token-3"
    assert await auth.refresh(rejected="token-2")  # a late 401 for an already replaced token: no new run
    assert counter.read_text() == "3"


async def test_exec_plugin_failures_are_clear(tmp_path: Path) -> None:
    missing = kubeconfig([{"name": "u", "user": {"exec": {
        "command": "kubelock-no-such-plugin", "installHint": "install it from example.com"}}}])
    auth = Authenticator(load(write(tmp_path / "a", missing), env={}))
    hint = re.escape("kubelock-no-such-plugin not found (install it from example.com)")
    with pytest.raises(CredentialError, match=hint):
        await auth.token()
    script = plugin(tmp_path, "import json; print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
                              " 'kind': 'ExecCredential', 'status': {'token': 'x'}}))")
    wrong = kubeconfig([{"name": "u", "user": {"exec": {"command": str(script)}}}])
    with pytest.raises(CredentialError, match="answered apiVersion"):
        await Authenticator(load(write(tmp_path / "b", wrong), env={})).token()
    failing = plugin(tmp_path, "import sys; sys.exit(3)")
    doc = kubeconfig([{"name": "u", "user": {"exec": {"command": str(failing)}}}])
    with pytest.raises(CredentialError, match="failed with exit code 3"):
        await Authenticator(load(write(tmp_path / "c", doc), env={})).token()


async def test_exec_plugin_client_certificate(tmp_path: Path) -> None:
    status = {"clientCertificateData": "CERT", "clientKeyData": "KEY"}
    script = plugin(tmp_path, "import json; print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
                              f" 'kind': 'ExecCredential', 'status': {json.dumps(status)}}}))")
    doc = kubeconfig([{"name": "u", "user": {"exec": {"command": str(script)}}}])
    auth = Authenticator(load(write(tmp_path / "config", doc), env={}))
    assert await auth.headers() == {}
    pair = auth.client_certificate()
    assert pair is not None and [read(p) for p in pair] == ["CERT", "KEY"]
    assert auth.cert_changes == 1 and auth.refresh_deadline() is None  # no expiry: kept until refused


@pytest.mark.parametrize(
    ("cluster", "user", "said"),
    [
        ({"insecure-skip-tls-verify": "false"}, {}, "insecure-skip-tls-verify must be true or false"),
        ({"insecure-skip-tls-verify": 1}, {}, "insecure-skip-tls-verify must be true or false"),
        ({}, {"token": 12345}, "token must be a string, not 12345"),
        ({}, {"tokenFile": ["a"]}, "tokenFile must be a string"),
        ({"tls-server-name": 7}, {}, "tls-server-name must be a string"),
        ({}, {"token": "t", "as": "bob\r\nX: y"}, "the impersonated user 'bob\\r\\nX: y' contains a control character"),
        ({}, {"token": "t", "as": "bob", "as-groups": ["ops\n"]}, "the impersonated group"),
    ],
)
def test_fields_of_the_wrong_type_or_with_line_breaks_refuse_the_kubeconfig(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], said: str
) -> None:
    doc = kubeconfig([{"name": "u", "user": user}],
                     clusters=[{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}])
    with pytest.raises(ConfigError, match=re.escape(said)):
        load(write(tmp_path / "config", doc), env={})


def test_booleans_still_set_insecure(tmp_path: Path) -> None:
    for value in (True, False):
        cluster = {"server": "https://h", "insecure-skip-tls-verify": value}
        doc = kubeconfig([{"name": "u", "user": {"token": "t"}}], clusters=[{"name": "c", "cluster": cluster}])
        assert load(write(tmp_path / "config", doc), env={}).insecure is value


@pytest.mark.parametrize(("content", "said"), [
    (b"abc\r\nImpersonate-User: bob", "contains a control character"),
    ("token".encode("utf-16"), "is not text (UTF-8)"),
])
async def test_a_token_file_that_is_no_bearer_token_is_a_credential_error(
    tmp_path: Path, content: bytes, said: str
) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    doc = kubeconfig([{"name": "u", "user": {"tokenFile": str(token)}}])
    auth = Authenticator(load(write(tmp_path / "config", doc), env={}))
    with pytest.raises(CredentialError, match=re.escape(said)):
        await auth.headers()


def test_a_kubeconfig_of_the_wrong_shape_is_refused_naming_the_file(tmp_path: Path) -> None:
    listed = write(tmp_path / "listed", kubeconfig([{"name": "u", "user": ["token", "t"]}]))
    with pytest.raises(ConfigError, match=re.escape(f"kubeconfig {listed}: the user of users entry 'u' must be a "
                                                    "mapping, not list")):
        load(listed, env={})
    deep = tmp_path / "deep"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"cannot read kubeconfig {deep}: its YAML is nested too deeply")):
        load(deep, env={})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=re.escape(f"cannot read kubeconfig {binary}: ")):
        load(binary, env={})
