"""`make up` as a newcomer uses it: when it says ready, `kubectl get locks` works at once, and the
local users' kubeconfigs act as an agent, a viewer and a lock admin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelock.testbed import find_binaries
from kubelock.testbed.__main__ import try_text
from tests.support.operator import REPO

TIMEOUT = 240


def run(*argv: str | Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO, env=env, check=False
    )
    if check:
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    workdir = tmp_path_factory.mktemp("make-up")
    testbed = [sys.executable, "-m", "kubelock.testbed"]
    up = run(*testbed, "up", "--workdir", workdir)
    try:
        yield workdir, up.stdout
    finally:
        run(*testbed, "down", "--workdir", workdir, check=False)


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return find_binaries() / "kubectl"


def test_locks_are_served_the_moment_up_returns(bed: tuple[Path, str], kubectl: Path, tmp_path: Path) -> None:
    workdir, _ = bed
    # A kubectl with an empty discovery cache, as a newcomer's first command.
    done = run(kubectl, "--kubeconfig", workdir / "kubeconfig", "--cache-dir", tmp_path, "get", "locks", check=False)
    assert done.returncode == 0, done.stderr
    assert "No resources found" in done.stderr


def test_up_names_the_users_and_their_kubeconfigs(bed: tuple[Path, str]) -> None:
    workdir, printed = bed
    assert f"users (namespace default): {workdir}/users/<user>.kubeconfig" in printed
    for user, role in [("alice", "kubelock-agent"), ("viewer", "kubelock-viewer"), ("lockadmin", "kubelock-admin")]:
        assert any(line.split()[:2] == [user, role] for line in printed.splitlines()), printed
        assert (workdir / "users" / f"{user}.kubeconfig").is_file()


def test_up_prints_the_commands_to_try_as_run_does(bed: tuple[Path, str], kubectl: Path) -> None:
    workdir, printed = bed
    assert try_text(f"{kubectl} --kubeconfig {workdir / 'kubeconfig'}") in printed, printed
    assert f"python -m kubelock.testbed down --workdir {workdir}` stops everything." in printed, printed


def test_the_users_act_as_agent_viewer_and_lock_admin(bed: tuple[Path, str], kubectl: Path) -> None:
    workdir, _ = bed

    def as_user(user: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(kubectl, "--kubeconfig", workdir / "users" / f"{user}.kubeconfig", *args, check=check)

    assert as_user("alice", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == "alice"
    env = {**os.environ, "KUBECONFIG": str(workdir / "users" / "alice.kubeconfig"),
           "PYTHONPATH": str(REPO / "operator"), "KUBELOCK_INSTANCE": "laptop"}
    cli = [sys.executable, "-m", "kubelock.cli.main"]
    acquired = json.loads(run(*cli, "acquire", "github://acme/app/issues/42", "--json", env=env).stdout)
    assert acquired["ok"] and acquired["holder"] == "user:alice/laptop" and acquired["namespace"] == "default"

    assert "github://acme/app/issues/42" in as_user("viewer", "get", "locks").stdout
    refused = as_user("viewer", "delete", "resourcelocks", "--all", check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    assert "Granted" in as_user("lockadmin", "get", "events").stdout

    run(*cli, "release", "github://acme/app/issues/42", env=env)


def test_up_with_other_options_than_the_running_bed_refuses(bed: tuple[Path, str]) -> None:
    """A second `make up OPERATOR=0 NODE=1` (docs/install.md) must not report success on a bed that
    runs the operator and no node."""
    workdir, _ = bed
    testbed = [sys.executable, "-m", "kubelock.testbed"]
    other = run(*testbed, "up", "--workdir", workdir, "--no-operator", "--node", check=False)
    assert other.returncode == 1, other
    assert "already running" in other.stderr and "with the operator and without a node" in other.stderr
    assert "not without the operator and with a node" in other.stderr and "make down" in other.stderr
    same = run(*testbed, "up", "--workdir", workdir)
    assert same.stdout.startswith("already running"), same.stdout


# The stand-ins for "your own code" that docs/sdk.md's examples call (`work`, `deploy`, `plan` ...).
SDK_DOC_STANDINS = '''
import asyncio, json, logging, re, sys, threading
calls = []
def record(name):
    def call(*args, **kwargs):
        calls.append([name, kwargs.get("fencing_token", kwargs.get("token"))])
    return call
async def deploy_async(**kwargs):
    calls.append(["deploy", kwargs.get("token")])
steps = []
def step():
    steps.append(1)
    if len(steps) >= 3:
        env["stop_soon"].set()
blocks = re.findall(r"```python\\n(.*?)```", open(sys.argv[1]).read(), re.S)
from kubelock.sdk import LockClient
for i, block in enumerate(blocks):
    env = {"work": record("work"), "apply": record("apply"), "comment": record("comment"), "push": record("push"),
           "review": record("review"), "deploy": deploy_async if "async def" in block else record("deploy"),
           "plan": [1, 2], "step": step, "log": logging.getLogger("doc"), "threading": threading}
    if "LockClient()" in block:
        exec(block, env)
    else:  # a block shown "inside the `with LockClient() as client:` block"
        with LockClient() as client:
            env["client"] = client
            exec(block, env)
print(json.dumps({"blocks": len(blocks), "calls": calls}))
'''


def test_the_sdk_examples_of_docs_sdk_md_run_as_written(bed: tuple[Path, str], tmp_path: Path) -> None:
    """Every Python block of docs/sdk.md, run against the bed as alice: a block that no longer matches
    the SDK's signatures (or raises) fails here. Each takes its lock for real and hands the fencing
    token to the stand-in of the user's code."""
    workdir, _ = bed
    env = {**os.environ, "KUBECONFIG": str(workdir / "users" / "alice.kubeconfig"),
           "PYTHONPATH": str(REPO / "operator")}
    env.pop("KUBELOCK_INSTANCE", None)  # the SDK makes an instance per process, as the docs say
    done = run(sys.executable, "-c", SDK_DOC_STANDINS, REPO / "docs" / "sdk.md", env=env)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["blocks"] >= 6, result
    called = [name for name, _ in result["calls"]]
    assert called.count("work") == 2 and called.count("apply") == 2 and called.count("deploy") == 2, called
    assert {"comment", "push", "review"} <= set(called), called
    assert all(isinstance(token, int) and token > 0 for _, token in result["calls"]), result
