"""`make run ETCD_MEMBERS=N` (`python -m kubelock.testbed run --etcd-members N`): a number of members
from 1 to 7, anything else refused with a clear error before anything starts."""

from __future__ import annotations

import pytest

from kubelock.testbed.__main__ import _describe, _parser


@pytest.mark.parametrize("command", ["run", "up"])
def test_the_number_of_members_is_read(command: str) -> None:
    assert _parser().parse_args([command, "--etcd-members", "3"]).etcd_members == 3
    assert _parser().parse_args([command]).etcd_members == 1


@pytest.mark.parametrize("bad", ["0", "8", "-1", "three", "2.5", ""])
def test_a_bad_number_of_members_is_a_clear_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["run", "--etcd-members", bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "the number of etcd members must be a whole number from 1 to 7" in err
    assert repr(bad) in err


def test_a_running_bed_is_described_with_its_members() -> None:
    assert _describe(True, False, False, 3) == "with the operator and without a node, 3 etcd members"
    assert _describe(True, False) == "with the operator and without a node"
