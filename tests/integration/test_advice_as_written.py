"""Advice followed exactly as it is written, against the real control plane and operator: the
commands a refused claim names, the shell examples of the docs that use the fencing token, and the
usage errors of the commands, which must say what to write and create nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import build_parser
from kubelock.domain.reasons import QUEUE_ADVICE
from tests.support.access import bind, wait_allowed
from tests.support.claims import Locks, status_of
from tests.support.commands import argv_of, environment, run
from tests.support.operator import REPO, OperatorProcess

Cluster = Any  # ControlPlane, or conftest.ExistingCluster
DEADLINE = 120.0  # generous for 2 shared cores; every wait returns as soon as the state is reached
README = REPO / "README.md"


@pytest.fixture
def operator(control_plane: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)) as op:
        yield op


def kubectl(control_plane: Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=DEADLINE, check=False)


def test_a_refused_try_lock_queues_once_made_anew_as_its_message_says(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    """A try-lock written as YAML and refused ends with QUEUE_ADVICE: editing `wait: true` into the
    claim is refused (the spec cannot change), and `kubectl replace --force -f FILE`, which the
    advice names, makes it anew: it queues, and is granted when the holder releases."""
    locks = Locks(admin_api, namespace)
    locks.claim("holder", "deploy://api-prod", "user:alice/laptop")
    locks.wait_phase("holder", "Held", timeout=DEADLINE)
    manifest = tmp_path / "claim.yaml"
    manifest.write_text("apiVersion: kubelock.dev/v1alpha1\nkind: LockClaim\nmetadata: {name: bob}\n"
                        "spec: {resource: 'deploy://api-prod', holder: 'user:bob/laptop'}\n")
    assert kubectl(control_plane, namespace, "create", "-f", str(manifest)).returncode == 0
    refused = status_of(locks.wait_phase("bob", "Rejected", timeout=DEADLINE))
    assert refused["message"].endswith("; " + QUEUE_ADVICE), refused
    assert "kubectl replace --force -f FILE" in refused["message"]

    manifest.write_text(manifest.read_text().replace("holder: 'user:bob/laptop'", "holder: 'user:bob/laptop', "
                                                     "wait: true"))
    edited = kubectl(control_plane, namespace, "apply", "-f", str(manifest))
    assert edited.returncode != 0 and "wait is immutable" in edited.stderr, edited.stderr
    replaced = kubectl(control_plane, namespace, "replace", "--force", "-f", str(manifest))
    assert replaced.returncode == 0, replaced.stderr
    assert status_of(locks.wait_phase("bob", "Pending", timeout=DEADLINE))["holder"] == "user:alice/laptop"
    locks.delete("holder")
    locks.wait_phase("bob", "Held", timeout=DEADLINE)


def fencing_examples() -> list[str]:
    """The shell lines of README.md and of `kubelock run --help` that print the fencing token."""
    readme = [line for line in README.read_text().splitlines() if "$KUBELOCK_FENCING_TOKEN" in line]
    helped = [line.strip().replace("PROG", "kubelock") for line in (build_parser().subcommands["run"].epilog or "")
              .splitlines() if "$KUBELOCK_FENCING_TOKEN" in line]
    assert readme and helped, "the examples moved: keep this test pointed at them"
    return readme + helped


@pytest.mark.parametrize("line", fencing_examples())
def test_the_shell_examples_that_use_the_fencing_token_run_as_written(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, operator: OperatorProcess, tmp_path: Path, line: str
) -> None:
    """Run by `sh` from a directory laid out as the repository after `make run` (README's line names
    `.run/users/carol.kubeconfig`), with `kubelock` on PATH: the command prints the token, which is
    the lock's."""
    if not hasattr(control_plane, "user_kubeconfig"):
        pytest.skip("needs the test bed's static users")
    bind(admin_api, namespace, "kubelock-agent", "carol")
    wait_allowed(admin_api, "carol", namespace, "create", "lockclaims")
    users = tmp_path / ".run" / "users"
    users.mkdir(parents=True)
    (users / "carol.kubeconfig").symlink_to(control_plane.user_kubeconfig("carol"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "kubelock"  # the installed console script, wherever this interpreter has it
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in argv_of("kubelock")) + ' "$@"\n')
    wrapper.chmod(0o755)
    env = environment(control_plane.user_kubeconfig("carol"), namespace, "laptop")
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    done = subprocess.run(["sh", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=DEADLINE, check=False)
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    token = re.search(r"^token (\d+)$", done.stdout, flags=re.M)
    assert token is not None and int(token.group(1)) > 0, (line, done.stdout)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["acquire", "--mode", "shared", "deploy://api-prod"], "there is no --mode option"),
        (["acquire", "deploy://api-prod", "-o", "JSON"], "-o takes json, yaml or wide (in lower case)"),
        (["--json", "-o", "yaml", "acquire", "deploy://api-prod"], "--json is the same as -o json"),
        (["run", "--bogus", "deploy://api-prod", "--", "true"], "unrecognized arguments: --bogus"),
        (["run", "deploy://api-prod", "--mode=Shared", "--", "true"], "there is no --mode option"),
    ],
)
def test_usage_errors_say_what_to_write_and_create_nothing(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, argv: list[str], words: str
) -> None:
    """With a kubeconfig that works (admin's), so that a command that went on would create a claim."""
    done = run("kubelock", *argv, env=environment(control_plane.kubeconfig, namespace, "laptop"))
    assert done.code == ExitCode.INVALID_INPUT, (argv, done.code, done.stderr)
    assert words in done.stderr, done.stderr
    assert Locks(admin_api, namespace).claims() == []


SDK_DOC = REPO / "docs" / "sdk.md"
# What docs/sdk.md's snippets call "your own code" (`work`, `deploy`, ...): each stub prints its
# arguments, and can be awaited too (`await deploy(...)` in the asyncio example). `client` is the
# `LockClient()` the snippets that use one without making it run inside, as the document says.
SDK_PRELUDE = '''
import logging, threading
from kubelock.sdk import LockClient
log = logging.getLogger("example")
class _Done:
    def __await__(self):
        return iter(())
def _stub(name):
    def call(*args, **kwargs):
        print(name, args, kwargs, flush=True)
        return _Done()
    return call
work = deploy = apply = comment = push = review = _stub("work")
plan = ["migrate", "switch"]
def step():  # the revocation example's work: once, with the lease's token, then as if asked back
    print("step", {"fencing_token": globals()["lease"].fencing_token}, flush=True)
    globals()["stop_soon"].set()
client = LockClient()
'''


def sdk_examples() -> list[str]:
    """The Python blocks of docs/sdk.md, as written."""
    blocks = re.findall(r"```python\n(.*?)```", SDK_DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6, "the examples moved: keep this test pointed at them"
    return blocks


@pytest.mark.parametrize("snippet", sdk_examples(), ids=lambda s: s.splitlines()[0][:40])
def test_the_sdk_examples_run_as_written(
    control_plane: Cluster, admin_api: ApiClient, namespace: str, operator: OperatorProcess, snippet: str
) -> None:
    """Each Python example of docs/sdk.md, run by a fresh interpreter as carol: it matches the SDK's
    signatures, takes its locks and hands a positive fencing token to the code that stands for yours."""
    if not hasattr(control_plane, "user_kubeconfig"):
        pytest.skip("needs the test bed's static users")
    bind(admin_api, namespace, "kubelock-agent", "carol")
    wait_allowed(admin_api, "carol", namespace, "create", "lockclaims")
    env = environment(control_plane.user_kubeconfig("carol"), namespace)
    done = subprocess.run([sys.executable, "-c", SDK_PRELUDE + snippet], env=env, capture_output=True, text=True,
                          timeout=DEADLINE, check=False)
    assert done.returncode == 0, (snippet, done.stdout, done.stderr)
    if "AsyncAdmin(" in snippet:  # an admin's read takes no lock: it prints what it found (none stale here)
        assert done.stdout.strip().splitlines()[-1] == "[]", (snippet, done.stdout, done.stderr)
        return
    tokens = [int(t) for t in re.findall(r"'(?:fencing_)?token': (\d+)", done.stdout)]
    assert tokens and all(t > 0 for t in tokens), (snippet, done.stdout, done.stderr)
