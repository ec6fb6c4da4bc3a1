"""The etcd-members chaos part's pure logic: its plan of faults, the stall measured around each, and
which control plane a run starts for which parts."""

from __future__ import annotations

import itertools

import pytest
from chaos import etcdmembers, run


def test_a_quick_run_kills_and_freezes_the_leader_and_a_follower_once_each_in_order() -> None:
    seconds, steps = etcdmembers.plan(quick=True)
    assert [(s.action, s.target) for s in steps] == [
        ("kill", "follower"), ("kill", "leader"), ("freeze", "leader"), ("freeze", "follower")
    ]
    assert all(a.at + a.down < b.at for a, b in itertools.pairwise(steps))  # one fault at a time
    assert steps[-1].at + steps[-1].down < seconds


def test_a_freeze_outlasts_the_election_timeout_several_times() -> None:
    for quick in (True, False):
        _, steps = etcdmembers.plan(quick)
        assert all(s.down >= 3 * etcdmembers.ELECTION_TIMEOUT for s in steps if s.action == "freeze")


def test_a_full_run_goes_through_every_fault_twice_and_longer() -> None:
    quick_seconds, quick = etcdmembers.plan(quick=True)
    seconds, steps = etcdmembers.plan(quick=False)
    assert len(steps) == 2 * len(quick) and seconds > quick_seconds
    assert all(s.down > q.down for s, q in zip(steps, quick, strict=False))


def test_the_stall_is_the_longest_pause_between_grants_from_the_fault_on() -> None:
    grants = [0.0, 1.0, 10.5, 11.0, 20.0, 30.0]
    # from the fault (at 2) to the first grant (10.5); 11 -> 20 began after the window
    assert etcdmembers.grant_stall(grants, 2.0, 10.8) == pytest.approx(8.5)
    # ... and within a longer window 11 -> 20 (9 s) is the longest
    assert etcdmembers.grant_stall(grants, 2.0, 12.0) == pytest.approx(9.0)
    # a pause that begins inside the window counts whole, even when it ends after it
    assert etcdmembers.grant_stall(grants, 10.6, 12.0) == pytest.approx(9.0)
    # grants before the fault do not shorten it
    assert etcdmembers.grant_stall([0.0, 5.0], 4.0, 4.5) == pytest.approx(1.0)


def test_no_grant_after_the_fault_stalls_to_the_end_of_the_window() -> None:
    assert etcdmembers.grant_stall([1.0], 2.0, 12.0) == pytest.approx(10.0)
    assert etcdmembers.grant_stall([], 0.0, 3.0) == pytest.approx(3.0)


def test_the_run_has_three_members_only_when_the_etcd_part_runs_alone() -> None:
    assert run.etcd_members_for(["etcd-members"]) == 3
    assert run.etcd_members_for(["etcd-members", "baseline"]) == 1
    assert run.etcd_members_for(run.part_names()) == 1
    assert "etcd-members" in run.part_names()


def test_etcd_members_runs_only_when_named() -> None:
    assert "etcd-members" not in run.wanted_parts("")
    assert "baseline" in run.wanted_parts("")
    assert run.wanted_parts("baseline,etcd-members") == ["baseline", "etcd-members"]


def test_an_unknown_part_is_named_with_the_known_ones() -> None:
    with pytest.raises(SystemExit, match=r"unknown parts \['etcd-member'\]; known: .*etcd-members"):
        run.wanted_parts("etcd-member")
