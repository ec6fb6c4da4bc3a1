"""The CLI run in-process on a usage mistake or on right usage, with no cluster to reach: a mistake
is answered with exit 4 (the commands' usage error) before any request, right usage is parsed and
then fails to reach the cluster (exit 5), saying nothing about usage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubelock.cli import compat
from kubelock.cli.exitcodes import ExitCode
from kubelock.cli.main import main


def no_cluster(monkeypatch: pytest.MonkeyPatch, *, instance: str | None = None) -> None:
    """A kubeconfig that does not exist: a command that got past its arguments would say NotConfigured
    (6) or Unreachable (5), never the usage error. `instance`: KUBELOCK_INSTANCE to set."""
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    if instance is not None:
        monkeypatch.setenv("KUBELOCK_INSTANCE", instance)


def kubelock_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What `kubelock ARGV` wrote to stderr, refused as a usage error (exit 4)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == ExitCode.INVALID_INPUT
    return capsys.readouterr().err


def rlock_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The one JSON object (one line on stdout) of `rlock ARGV`, refused as a usage error (exit 4)."""
    with pytest.raises(SystemExit) as exited:
        compat.rlock(argv)
    assert exited.value.code == ExitCode.INVALID_INPUT
    [line] = capsys.readouterr().out.splitlines()
    answer: dict[str, Any] = json.loads(line)
    return answer


def kubelock_output_when_parsed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """stderr and stdout of `kubelock ARGV`, which must parse and then fail to reach the cluster (exit 5)."""
    assert main(argv) == ExitCode.UNREACHABLE  # parsed, then no cluster
    captured = capsys.readouterr()
    return captured.err + captured.out
