"""When a held lease renews and when it calls itself lost (pure arithmetic, kubelock.sdk.renewal)."""

from __future__ import annotations

import math

import pytest

from kubelock.sdk.errors import InvalidInput
from kubelock.sdk.renewal import (
    MIN_RENEW_INTERVAL,
    default_renew_deadline,
    first_renewal_in,
    loss_moment,
    renew_interval,
    validate_renew_deadline,
)


def test_without_a_renew_deadline_only_the_confirmed_expiry_counts() -> None:
    assert loss_moment(expiry=160.0, last_renewal=100.0, renew_deadline=None) == (160.0, False)


def test_the_renew_deadline_comes_first_when_renewals_stop() -> None:
    # Granted at 100 for 60 s, renew deadline 40 s: no renewal accepted since, lost at 140, not 160.
    assert loss_moment(expiry=160.0, last_renewal=100.0, renew_deadline=40.0) == (140.0, True)
    # A renewal accepted at 130 moves it to 170; the operator's confirmed expiry (190) stays later.
    assert loss_moment(expiry=190.0, last_renewal=130.0, renew_deadline=40.0) == (170.0, True)


def test_the_confirmed_expiry_still_wins_when_it_is_earlier() -> None:
    # Renewals reach the API server but the operator does not confirm them: the expiry decides.
    assert loss_moment(expiry=150.0, last_renewal=130.0, renew_deadline=40.0) == (150.0, False)


def test_renewals_are_three_per_window() -> None:
    assert renew_interval(60.0, None) == 20.0
    assert renew_interval(60.0, 40.0) == pytest.approx(40 / 3)
    assert renew_interval(1.0, None) == pytest.approx(1 / 3)
    assert renew_interval(0.3, 0.2) == MIN_RENEW_INTERVAL


def test_default_is_two_thirds_of_the_ttl() -> None:
    assert default_renew_deadline(60) == pytest.approx(40.0)
    assert default_renew_deadline(1800) == pytest.approx(1200.0)


def test_validation() -> None:
    assert validate_renew_deadline(None, 60) is None
    assert validate_renew_deadline(40, 60) == 40.0
    assert validate_renew_deadline(40, None) == 40.0  # the TTL is the operator's: checked by the expiry
    for bad, words in ((60, "shorter than the TTL"), (61.5, "shorter than the TTL"), (0, "more than 0"),
                       (-1, "more than 0"), (math.nan, "number of seconds"), (True, "number of seconds"),
                       ("10", "number of seconds")):
        with pytest.raises(InvalidInput, match=words):
            validate_renew_deadline(bad, 60)


def test_the_first_renewal_counts_from_the_lease_s_start_not_from_the_telling() -> None:
    # Told at once: a whole interval. Told 0.5 s into a 1 s interval: the rest. Told after it: at once.
    assert first_renewal_in(1.0, 0.0) == 1.0
    assert first_renewal_in(1.0, 0.5) == 0.5
    assert first_renewal_in(1.0, 2.1) == 0.0
    # A lease that seems to start in the future (the clocks apart): a whole interval, never more.
    assert first_renewal_in(1.0, -3.0) == 1.0
