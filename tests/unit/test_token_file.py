"""An empty token file is no credential: sent as it is, the request would carry no Authorization
header and the API server would serve it as `system:anonymous`. The authenticator refuses it, naming
the file; at a scheduled re-read (a rotation) it keeps the last good token, as client-go does, and
after a 401 it refuses a file that offers no new token instead of sending the refused one again."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelock.kube import prelist
from kubelock.kube.auth import FILE_RETRY_SECONDS, FILE_TOKEN_SECONDS, Authenticator, CredentialError
from kubelock.kube.config import ConfigError, load, load_in_cluster


def config(tmp_path: Path, user: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "one",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "contexts": [{"name": "one", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("content", ["", "\n", "  \t\n\n"])
async def test_an_empty_token_file_is_refused_naming_the_file(tmp_path: Path, content: str) -> None:
    token = tmp_path / "token"
    token.write_text(content)
    auth = Authenticator(load(config(tmp_path, {"tokenFile": str(token)}), env={}))
    with pytest.raises(CredentialError, match=re.escape(f"the token file {token} is empty")):
        await auth.headers()


async def test_a_pods_empty_projected_token_is_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("")
    creds = load_in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path)
    with pytest.raises(CredentialError, match="is empty"):
        await Authenticator(creds).headers()
    # Nor does the operator's early LIST go out without it: it leaves the start to the client above.
    assert prelist._headers(creds, "test") is None


def test_a_blank_static_token_refuses_the_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token is blank"):
        load(config(tmp_path, {"token": "   "}), env={})


@pytest.mark.parametrize("rotated", ["", "missing"])
async def test_a_rotation_that_leaves_no_token_keeps_the_last_good_one(tmp_path: Path, rotated: str) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    now = [1000.0]
    auth = Authenticator(load(config(tmp_path, {"tokenFile": str(token)}), env={}), clock=lambda: now[0])
    assert await auth.headers() == {"Authorization": "Bearer first"}
    if rotated == "missing":
        token.unlink()
    else:
        token.write_text(rotated)
    now[0] += FILE_TOKEN_SECONDS + 1  # the scheduled re-read
    assert await auth.headers() == {"Authorization": "Bearer first"}  # kept, never anonymous
    refresh = auth.refresh_deadline()
    assert refresh is not None and refresh.timestamp() == now[0] + FILE_RETRY_SECONDS  # read again soon
    # A 401 for that token: the file offers no other, so the refusal is said, not the token sent again.
    with pytest.raises(CredentialError, match=re.escape(f"token file {token}")):
        await auth.refresh(rejected="first")
    token.write_text("second")
    now[0] += FILE_RETRY_SECONDS
    assert await auth.token() == "second"
