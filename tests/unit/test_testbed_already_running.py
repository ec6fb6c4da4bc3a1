"""A second `make run` (or `run` beside `up`) meets the first through the pid file, and says how to
stop it: Ctrl-C where it runs, or `make down` in the repository; with another work directory, the
module's `down`. A real process stands in for the first run (its command line names the module)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubelock.testbed.__main__ import DEFAULT_WORKDIR, _claim_pid_file, _running_pid
from kubelock.testbed.processes import ProcessError


def sleeper(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    # `kubelock.testbed` and the work directory in its arguments (relative to its working directory)
    # are what the pid file's check reads in /proc/<pid>/cmdline and /proc/<pid>/cwd.
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "kubelock.testbed", "run", *args],
                            cwd=cwd)  # fmt: skip


@pytest.fixture
def first_run(tmp_path: Path) -> Iterator[int]:
    """A `run` in tmp_path with the default work directory, tmp_path/.run."""
    process = sleeper(tmp_path)
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
    workdir = tmp_path / DEFAULT_WORKDIR
    workdir.mkdir()
    (workdir / "run.pid").write_text(f"{first_run}\n")
    with pytest.raises(ProcessError) as refused:
        _claim_pid_file(workdir)
    assert f"`python -m kubelock.testbed down --workdir {workdir}`" in str(refused.value)


@pytest.mark.parametrize("form", ["--workdir", "--workdir="])
def test_the_run_of_another_work_directory_is_not_taken_for_this_ones(tmp_path: Path, form: str) -> None:
    # A stale pid file whose pid is now another bed's `run`: `down` here must not stop that bed.
    other, mine = tmp_path / "other", tmp_path / "mine"
    other.mkdir()
    mine.mkdir()
    args = [form + str(other)] if form.endswith("=") else [form, "other"]  # absolute, or relative to its cwd
    process = sleeper(tmp_path, *args)
    try:
        (mine / "run.pid").write_text(f"{process.pid}\n")
        assert _running_pid(mine) is None
        (other / "run.pid").write_text(f"{process.pid}\n")
        assert _running_pid(other) == process.pid
        _claim_pid_file(mine)
        assert (mine / "run.pid").read_text().strip() != str(process.pid)
    finally:
        process.kill()
        process.wait()


def test_a_stale_pid_file_is_taken_over(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "run.pid").write_text(f"{gone.pid}\n")
    _claim_pid_file(tmp_path)
    assert (tmp_path / "run.pid").read_text().strip() != str(gone.pid)
