"""A second `make run` (or `run` beside `up`) meets the first through the pid file, and says how to
stop it: Ctrl-C where it runs, or `make down` in the repository; with another work directory, the
module's `down`. A real process stands in for the first run (its command line names the module)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelock.testbed.__main__ import DEFAULT_WORKDIR, _claim_pid_file
from kubelock.testbed.processes import ProcessError


@pytest.fixture
def first_run() -> Iterator[int]:
    # `kubelock.testbed` in its arguments is what the pid file's check looks for in /proc/<pid>/cmdline.
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "kubelock.testbed", "run"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_in_the_repository_it_names_ctrl_c_and_make_down(
    first_run: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    workdir = Path(DEFAULT_WORKDIR).resolve()
    workdir.mkdir()
    (workdir / "run.pid").write_text(f"{first_run}\n")
    with pytest.raises(ProcessError) as refused:
        _claim_pid_file(workdir)
    message = str(refused.value)
    assert f"already running in {workdir} (pid {first_run})" in message
    assert "Ctrl-C where it runs" in message and "`make down`" in message
    assert "python -m" not in message


def test_elsewhere_it_names_the_module(first_run: int, tmp_path: Path) -> None:
    (tmp_path / "run.pid").write_text(f"{first_run}\n")
    with pytest.raises(ProcessError) as refused:
        _claim_pid_file(tmp_path)
    assert f"`python -m kubelock.testbed down --workdir {tmp_path}`" in str(refused.value)


def test_a_stale_pid_file_is_taken_over(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "run.pid").write_text(f"{gone.pid}\n")
    _claim_pid_file(tmp_path)
    assert (tmp_path / "run.pid").read_text().strip() != str(gone.pid)
