"""The operator's settings: the Stale share and the finished-claim TTL, and a clear error for the
setting they replaced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubelock.operator.settings import parse


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KUBELOCK_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = parse([])
    assert (settings.stale_after_percent, settings.ttl_seconds_after_finished) == (50, 3600)
    assert settings.policy.stale_after(1800) == 900


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(["--stale-after-percent", "75", "--ttl-seconds-after-finished", "0"]).policy.stale_after_percent == 75
    monkeypatch.setenv("KUBELOCK_TTL_SECONDS_AFTER_FINISHED", "60")
    assert parse([]).policy.ttl_seconds_after_finished == 60


@pytest.mark.parametrize("value", ["33", "101", "half"])
def test_a_stale_share_below_the_renewal_schedule_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--stale-after-percent", value])
    assert "--stale-after-percent" in capsys.readouterr().err


def test_the_replaced_setting_says_what_replaces_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(["--stale-after-seconds", "120"])
    assert "--stale-after-seconds was replaced by --stale-after-percent" in capsys.readouterr().err
    monkeypatch.setenv("KUBELOCK_STALE_AFTER_SECONDS", "120")
    with pytest.raises(SystemExit):
        parse([])
    assert "KUBELOCK_STALE_AFTER_PERCENT" in capsys.readouterr().err


def test_routine_event_rate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse([]).routine_event_rate == 1 / 300, "one every 5 minutes, as client-go's spam filter"
    assert parse(["--routine-event-rate", "0"]).routine_event_rate == 0.0
    monkeypatch.setenv("KUBELOCK_ROUTINE_EVENT_RATE", "2.5")
    assert parse([]).routine_event_rate == 2.5
    for bad in ("-1", "nan", "lots"):
        with pytest.raises(SystemExit):
            parse(["--routine-event-rate", bad])
        assert "--routine-event-rate" in capsys.readouterr().err
    assert parse([]).routine_event_summary_seconds == 60
    assert parse(["--routine-event-summary-seconds", "2"]).routine_event_summary_seconds == 2
    for bad in ("0", "3601", "1.5"):
        with pytest.raises(SystemExit):
            parse(["--routine-event-summary-seconds", bad])
        assert "--routine-event-summary-seconds" in capsys.readouterr().err


def test_namespace_patterns_are_told_from_exact_namespaces() -> None:
    # With exact namespaces (or all of them) kopf need not list and watch every namespace and CRD.
    assert not parse([]).namespace_patterns
    assert not parse(["-n", "team-a", "-n", "team-b"]).namespace_patterns
    assert parse(["-n", "team-a", "-n", "team-*"]).namespace_patterns
    assert parse(["-n", "team-?"]).namespace_patterns
    assert parse(["-n", "team-[ab]"]).namespace_patterns


def test_debug_loggers_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([]).debug_loggers == ()
    assert parse(["--debug", "kubelock.view", "--debug", "kubelock.watches"]).debug_loggers == (
        "kubelock.view", "kubelock.watches")
    monkeypatch.setenv("KUBELOCK_DEBUG", "kubelock.view")
    assert parse([]).debug_loggers == ("kubelock.view",)


@pytest.mark.parametrize(
    ("value", "expected"), [("false", False), ("OFF", False), ("0", False), ("yes", True), ("", True)]
)
def test_early_grants_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("KUBELOCK_EARLY_GRANTS", value)
    assert parse([]).early_grants is expected
    assert parse(["--no-early-grants"]).early_grants is False


def test_an_early_grants_value_that_is_no_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOCK_EARLY_GRANTS", "maybe")
    with pytest.raises(SystemExit, match="KUBELOCK_EARLY_GRANTS='maybe' is not a boolean"):
        parse([])


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("ON", True), ("1", True), ("no", False), ("", False)]
)
def test_verbose_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    assert parse([]).verbose is False
    monkeypatch.setenv("KUBELOCK_VERBOSE", value)
    assert parse([]).verbose is expected
    assert parse(["-v"]).verbose is True


def test_a_verbose_value_that_is_no_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOCK_VERBOSE", "debug")
    with pytest.raises(SystemExit, match="KUBELOCK_VERBOSE='debug' is not a boolean"):
        parse([])


@pytest.mark.parametrize("value", ["86401", "0", "-5", "1e6"])
def test_a_max_ttl_outside_the_crds_bound_is_refused_at_start_up(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The LockClaim CRD caps ttlSeconds at 86400: a larger maxTtlSeconds would promise leases no claim
    # can ask for, so the operator refuses to start with it (exit 2, naming the flag and the bound).
    with pytest.raises(SystemExit) as stopped:
        parse(["--max-ttl-seconds", value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--max-ttl-seconds" in err and ("between 1 and 86400" in err or "not an integer" in err), err


def test_the_crds_bound_itself_is_a_valid_max_ttl() -> None:
    assert parse(["--max-ttl-seconds", "86400"]).max_ttl_seconds == 86400
    assert parse(["--max-ttl-seconds", "60", "--resource-lock-timeout", "60"]).policy.max_ttl_seconds == 60


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KUBELOCK_MAX_TTL_SECONDS", "86401"),
        ("KUBELOCK_MAX_TTL_SECONDS", "0"),
        ("KUBELOCK_RESOURCE_LOCK_TIMEOUT", "-1"),
        ("KUBELOCK_STALE_AFTER_PERCENT", "10"),
        ("KUBELOCK_PRIORITY_AGING_SECONDS", "0"),
        ("KUBELOCK_PREEMPTION_PRIORITY_DELTA", "5000"),
        ("KUBELOCK_RESYNC_SECONDS", "0"),
        ("KUBELOCK_ROUTINE_EVENT_SUMMARY_SECONDS", "0"),
    ],
)
def test_a_variable_outside_its_flags_bounds_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # A variable is checked as its flag is: argparse checks only defaults given as text, and these
    # were read into numbers first, so a bad value from the environment was taken as it stood.
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        parse([])
    assert str(stopped.value.code).startswith(f"{name}: "), stopped.value.code
    assert "must be" in str(stopped.value.code)


def test_a_variable_within_its_flags_bounds_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOCK_MAX_TTL_SECONDS", "7200")
    monkeypatch.setenv("KUBELOCK_PREEMPTION_PRIORITY_DELTA", "100")
    settings = parse([])
    assert (settings.max_ttl_seconds, settings.preemption_priority_delta) == (7200, 100)
    monkeypatch.setenv("KUBELOCK_MAX_TTL_SECONDS", "soon")
    with pytest.raises(SystemExit, match="KUBELOCK_MAX_TTL_SECONDS: 'soon' is not an integer"):
        parse([])


def test_the_operator_refuses_to_start_with_a_max_ttl_above_the_crds_bound() -> None:
    # The real entry point, before any connection: a clear line on stderr and a non-zero exit.
    operator_dir = Path(__file__).resolve().parents[2] / "operator"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELOCK_")}
    env.update(PYTHONPATH=str(operator_dir), KUBECONFIG="/nonexistent/kubeconfig")
    done = subprocess.run([sys.executable, "-m", "kubelock.operator", "--max-ttl-seconds", "86401"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "--max-ttl-seconds: 86401 must be between 1 and 86400" in done.stderr, done.stderr
    env["KUBELOCK_MAX_TTL_SECONDS"] = "100000"
    done = subprocess.run([sys.executable, "-m", "kubelock.operator"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1 and "KUBELOCK_MAX_TTL_SECONDS: 100000 must be between 1 and 86400" in done.stderr, (
        done.returncode, done.stderr)
