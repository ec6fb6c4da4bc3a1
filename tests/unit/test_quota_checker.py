"""The chaos checker's `quota` check on hand-made histories: a holder over `maxHeldPerHolder` is caught
(also when the excess grant's claim was never told Held), a compliant history passes, and the replay
follows the API server's revisions, never the order in which the monitor happened to see events."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from chaos.history import (  # noqa: E402
    QUOTA_REFUSAL,
    Attempt,
    ClaimLife,
    History,
    LockLife,
    Quota,
    Report,
    check,
    check_quota,
)

QUOTA = Quota("chaos://pool/", 2)


def grant(claim: str, resource: str, created_version: int, deleted_version: int | None, *, holder: str = "h0",
          created: float = 0.0) -> LockLife:
    """A grant as the monitor saw it; `created` is arrival time, deliberately not in revision order."""
    return LockLife(
        uid=f"lock-{resource}/{claim}", resource=resource, holder=holder, claim=claim, token=created_version,
        version=created_version, created=created, deleted=None if deleted_version is None else created + 1,
        expiry=None, created_version=created_version, deleted_version=deleted_version,
    )


def claim(uid: str, *, holder: str = "h0", phase: str = "Held", ended_version: int | None = None,
          deleted: bool = True, resources: tuple[str, ...] = ()) -> ClaimLife:
    return ClaimLife(
        uid=uid, resource=resources[0] if resources else "chaos://pool/r00", holder=holder, wait=True, created=0.0,
        decided=0.0, deleted=1.0 if deleted else None, phase=phase, held_version=1 if phase == "Held" else None,
        ended_version=ended_version, resources=resources,
    )


def judge(locks: list[LockLife], claims: list[ClaimLife], quota: Quota = QUOTA) -> Report:
    report = Report()
    check_quota(locks, claims, quota, report)
    return report


def test_three_claims_of_one_holder_holding_at_once_break_a_quota_of_two() -> None:
    report = judge(
        [grant("c1", "chaos://pool/r01", 10, 50), grant("c2", "chaos://pool/r02", 20, 60),
         grant("c3", "chaos://pool/r03", 30, 70)],
        [claim("c1", ended_version=45), claim("c2", ended_version=55), claim("c3", ended_version=65)],
    )
    assert [v.check for v in report.violations] == ["quota"]
    assert "h0 held 3 claims" in report.violations[0].message
    assert report.stats["quota_peak_held"] == 3


def test_a_grant_whose_claim_was_refused_and_never_told_held_counts_until_its_lock_goes() -> None:
    # One replica refused c3 (Rejected) while the other wrote its grant: the lock holds r03 until it goes.
    report = judge(
        [grant("c1", "chaos://pool/r01", 10, 100), grant("c2", "chaos://pool/r02", 20, 100),
         grant("c3", "chaos://pool/r03", 30, 40)],
        [claim("c1", ended_version=90), claim("c2", ended_version=90),
         claim("c3", phase="Rejected", ended_version=80)],
    )
    assert [v.check for v in report.violations] == ["quota"]
    assert "never told Held" in report.violations[0].message


def test_claims_one_after_another_by_revision_pass_whatever_order_they_arrived_in() -> None:
    # c3 arrived (wall clock) before c1's lock was seen gone, but its grant was written after c1's
    # lock was deleted: never more than 2 at once.
    report = judge(
        [grant("c1", "chaos://pool/r01", 10, 25, created=5.0), grant("c2", "chaos://pool/r02", 20, 60),
         grant("c3", "chaos://pool/r03", 30, 70, created=1.0)],
        [claim("c1", ended_version=24), claim("c2", ended_version=55), claim("c3", ended_version=65)],
    )
    assert report.violations == []
    assert report.stats["quota_peak_held"] == 2
    assert report.stats["quota_grants_judged"] == 3


def test_a_claim_of_several_resources_counts_once() -> None:
    both = ("chaos://pool/r01", "chaos://pool/r02")
    report = judge(
        [grant("m1", "chaos://pool/r01", 10, 50), grant("m1", "chaos://pool/r02", 12, 50),
         grant("c2", "chaos://pool/r03", 20, 60)],
        [claim("m1", ended_version=45, resources=both), claim("c2", ended_version=55)],
    )
    assert report.violations == []
    assert report.stats["quota_peak_held"] == 2


def test_a_claim_stops_counting_when_it_ends_otherwise_than_rejected() -> None:
    # c1 was told Expired at revision 25 (the operator counts it no longer) though its lock went at 50.
    report = judge(
        [grant("c1", "chaos://pool/r01", 10, 50), grant("c2", "chaos://pool/r02", 20, 60),
         grant("c3", "chaos://pool/r03", 30, 70)],
        [claim("c1", phase="Expired", ended_version=25), claim("c2", ended_version=55),
         claim("c3", ended_version=65)],
    )
    assert report.violations == []


def test_a_grant_whose_end_the_monitor_did_not_see_is_not_judged() -> None:
    # c1's claim ended, but only a LIST showed it: when is unknown, so it is left out rather than guessed.
    report = judge(
        [grant("c1", "chaos://pool/r01", 10, 50), grant("c2", "chaos://pool/r02", 20, 60),
         grant("c3", "chaos://pool/r03", 30, 70)],
        [claim("c1", phase="Expired", ended_version=None), claim("c2", ended_version=55),
         claim("c3", ended_version=65)],
    )
    assert report.violations == []
    assert report.stats["quota_grants_unjudged"] == 1


def test_other_holders_and_resources_outside_the_prefix_do_not_add_up() -> None:
    report = judge(
        [grant("c1", "chaos://pool/r01", 10, 50), grant("c2", "chaos://pool/r02", 20, 60, holder="h1"),
         grant("c3", "chaos://other/r03", 30, 70), grant("c4", "chaos://pool/r04", 35, 70)],
        [claim("c1", ended_version=45), claim("c2", holder="h1", ended_version=55), claim("c3", ended_version=65),
         claim("c4", ended_version=65)],
    )
    assert report.violations == []
    assert report.stats["quota_peak_held"] == 2


def test_check_runs_the_quota_check_only_with_a_quota_and_a_refused_waiter_is_no_lost_waiter() -> None:
    history = History(end=100)
    history.extend([
        grant("c1", "chaos://pool/r01", 10, 50), grant("c2", "chaos://pool/r02", 20, 60),
        grant("c3", "chaos://pool/r03", 30, 70),
        Attempt(agent="a", resource="chaos://pool/r04", wait=True, start=1, end=2, outcome=QUOTA_REFUSAL),
    ])
    claims = [claim("c1", ended_version=45), claim("c2", ended_version=55), claim("c3", ended_version=65)]
    history.extend(claims)
    assert "quota" not in [v.check for v in check(history).violations]
    found = [v.check for v in check(history, quota=QUOTA).violations]
    assert "quota" in found
    assert "lost-waiter" not in found
