"""The operator's settings: one frozen object, built once from flags and environment."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubelock.api.types import MAX_TTL_CEILING
from kubelock.domain.model import Policy

ROUTINE_EVENT_RATE = 1 / 300  # as client-go's defaultSpamQPS
TEN_YEARS = 10 * 365 * 86400


@dataclass(frozen=True)
class Settings:
    resource_lock_timeout: int = 1800
    max_ttl_seconds: int = 86400
    stale_after_percent: int = 50
    ttl_seconds_after_finished: int = 3600
    priority_aging_seconds: int = 10
    preemption_priority_delta: int | None = None  # None: no preemption
    preemption_grace_seconds: int = 30
    namespaces: tuple[str, ...] = ()  # empty: all namespaces; entries may be glob patterns
    kubeconfig: str | None = None
    context: str | None = None
    log_format: str = "text"
    verbose: bool = False
    debug_loggers: tuple[str, ...] = ()  # loggers logged at debug level (e.g. kubelock.view)
    health_address: str = "127.0.0.1:8080"
    metrics_port: int = 0  # 0: no metrics endpoint
    metrics_address: str = "127.0.0.1"
    resync_seconds: int = 60
    # Normal Events per second refilling a namespace's burst of 25 (client-go's spam filter: 1 per 300 s);
    # past it they are summarised once a minute per reason. 0: none.
    routine_event_rate: float = ROUTINE_EVENT_RATE
    routine_event_summary_seconds: int = 60  # how often the routine Events past the burst are summarised
    instance: str = socket.gethostname()
    early_grants: bool = True  # grant new claims from small views while the priming is under way

    @property
    def policy(self) -> Policy:
        return Policy(
            default_ttl_seconds=self.resource_lock_timeout,
            max_ttl_seconds=self.max_ttl_seconds,
            stale_after_percent=self.stale_after_percent,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            priority_aging_seconds=self.priority_aging_seconds,
            preemption_priority_delta=self.preemption_priority_delta,
            preemption_grace_seconds=self.preemption_grace_seconds,
        )

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces

    @property
    def namespace_patterns(self) -> bool:
        """Some namespace is a glob pattern: which namespaces it matches changes as they come and go."""
        return any(ch in n for n in self.namespaces for ch in "*?[")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not an integer") from None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SystemExit(f"{name}={value!r} is not a boolean (one of {', '.join(_TRUE + _FALSE)})")


def _env_checked(name: str, default: int | None, parse: Callable[[str], int]) -> int | None:
    """The variable read with its flag's own check. argparse checks only a default given as a
    string, so a value from the environment passed as a number skipped the flag's bounds
    (KUBELOCK_MAX_TTL_SECONDS=0 was taken as it stood)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return parse(value)
    except argparse.ArgumentTypeError as error:
        raise SystemExit(f"{name}: {error}") from None


def _int_flag(parser: argparse.ArgumentParser, flag: str, variable: str, default: int | None,
              check: Callable[[str], int], help: str) -> None:
    """A number flag whose variable is read with the flag's own check (`_env_checked`)."""
    parser.add_argument(flag, type=check, default=_env_checked(variable, default, check), help=help)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return _rate(value)
    except argparse.ArgumentTypeError as error:
        raise SystemExit(f"{name}: {error}") from None


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1_000_000:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1000000")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be between {low} and {high}")
        return value

    return parse


# Replaced settings: refused with a pointer to what replaces them rather than silently ignored.
REPLACED = {
    "--stale-after-seconds": "--stale-after-percent (Stale now means: not renewed on schedule)",
    "KUBELOCK_STALE_AFTER_SECONDS": "KUBELOCK_STALE_AFTER_PERCENT (Stale now means: not renewed on schedule)",
}


def flag_parser() -> argparse.ArgumentParser:
    """The operator's flags, with their defaults read from the environment now (README.md, "Operator
    settings", lists each with its variable and Helm value; a unit test holds the two together)."""
    parser = argparse.ArgumentParser(
        prog="kubelock-operator",
        allow_abbrev=False,  # `--max-ttl 60` is refused, not taken for --max-ttl-seconds: flags are written whole
        description="Run the kubelock operator. Each flag but --kubeconfig (KUBECONFIG), --context and "
        "--all-namespaces also reads KUBELOCK_<NAME> from the environment (--namespace: KUBELOCK_NAMESPACES, "
        "comma-separated; --no-early-grants: KUBELOCK_EARLY_GRANTS=false); a flag given overrides its variable.",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig (else in-cluster)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", default=None,
                       help="watch this namespace (repeatable; glob patterns allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    _int_flag(parser, "--resource-lock-timeout", "KUBELOCK_RESOURCE_LOCK_TIMEOUT", 1800, _bounded(1, MAX_TTL_CEILING),
              help="default lease TTL in seconds (resourceLockTimeout, default 1800)")
    _int_flag(parser, "--max-ttl-seconds", "KUBELOCK_MAX_TTL_SECONDS", MAX_TTL_CEILING, _bounded(1, MAX_TTL_CEILING),
              help="largest ttlSeconds a claim may ask for (maxTtlSeconds); 1-86400, the LockClaim "
              "CRD's own bound of ttlSeconds (default 86400)")
    _int_flag(parser, "--stale-after-percent", "KUBELOCK_STALE_AFTER_PERCENT", 50, _bounded(34, 100),
              help="a held lock not renewed for this share of its lease is marked Stale: its holder "
              "missed the renewal schedule (every third of the lease); 34-100, 100: off (default 50)")
    _int_flag(parser, "--ttl-seconds-after-finished", "KUBELOCK_TTL_SECONDS_AFTER_FINISHED", 3600,
              _bounded(0, TEN_YEARS),
              help="delete terminal claims (Rejected, TimedOut, Expired, Deadlocked, Revoked) this long "
              "after they finished; 0: keep them (default 3600)")
    _int_flag(parser, "--priority-aging-seconds", "KUBELOCK_PRIORITY_AGING_SECONDS", 10, _bounded(1, 86400),
              help="a waiter's effective priority grows by one point per this many seconds of waiting, "
              "so none starves behind higher priorities; 1-86400 (default 10)")
    _int_flag(parser, "--preemption-priority-delta", "KUBELOCK_PREEMPTION_PRIORITY_DELTA", None, _bounded(0, 2000),
              help="a waiter whose priority exceeds a blocking holder's by at least this much asks the "
              "holder to give the lock back (a revocation request); 0-2000 (default: no preemption)")
    _int_flag(parser, "--preemption-grace-seconds", "KUBELOCK_PREEMPTION_GRACE_SECONDS", 30, _bounded(0, 86400),
              help="the grace of a preemption's revocation request, after which the lock is broken "
              "(default 30)")
    parser.add_argument("--stale-after-seconds", help=argparse.SUPPRESS)
    parser.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("KUBELOCK_LOG_FORMAT", "text"),
                        help="text, or json: one object a line (default text)")
    parser.add_argument("-v", "--verbose", action="store_true", default=_env_bool("KUBELOCK_VERBOSE", False),
                        help="log at debug level, kopf's own loggers at info (environment KUBELOCK_VERBOSE=true)")
    parser.add_argument("--debug", action="append", metavar="LOGGER",
                        default=[n for n in os.environ.get("KUBELOCK_DEBUG", "").split(",") if n],
                        help="log this logger at debug level, without the rest of --verbose (repeatable); "
                        "kubelock.view: when each claim entered and left the view, every decision with the "
                        "claims it was taken on, grants held back for a fresh view and why")
    parser.add_argument("--health-address", default=os.environ.get("KUBELOCK_HEALTH_ADDRESS", "127.0.0.1:8080"),
                        help="host:port of the liveness endpoint /healthz ('' to disable; default 127.0.0.1:8080)")
    parser.add_argument("--metrics-port", type=int, default=_env_int("KUBELOCK_METRICS_PORT", 0),
                        help="port for Prometheus metrics (0: off, the default)")
    parser.add_argument("--metrics-address", default=os.environ.get("KUBELOCK_METRICS_ADDRESS", "127.0.0.1"),
                        help="address the metrics endpoint listens on (default 127.0.0.1)")
    _int_flag(parser, "--resync-seconds", "KUBELOCK_RESYNC_SECONDS", 60, _positive,
              help="LIST locks and holder pods this often, a safety net for missed watch events "
              "(seconds, default 60)")
    parser.add_argument("--routine-event-rate", type=_rate,
                        default=_env_float("KUBELOCK_ROUTINE_EVENT_RATE", ROUTINE_EVENT_RATE),
                        help="Normal Events (Granted, Released, Queued ...) per second refilling each namespace's "
                        "burst of 25; past it they are summarised: one Event per namespace and reason every "
                        "--routine-event-summary-seconds, counting and naming the claims. 0: no Normal Events at "
                        "all. Warning Events are never limited (default 1/300, one every 5 minutes, as client-go's "
                        "spam filter)")
    _int_flag(parser, "--routine-event-summary-seconds", "KUBELOCK_ROUTINE_EVENT_SUMMARY_SECONDS", 60,
              _bounded(1, 3600),
              help="send the summary of each namespace's and reason's Normal Events past the burst this "
              "often, 1-3600 (default 60)")
    parser.add_argument("--no-early-grants", dest="early_grants", action="store_false",
                        default=_env_bool("KUBELOCK_EARLY_GRANTS", True),
                        help="after a restart, answer no claim before every claim and lock is listed (default: new "
                        "claims of free resources are granted from small views of their resources meanwhile); "
                        "environment KUBELOCK_EARLY_GRANTS=false")
    return parser


def parse(argv: Sequence[str] | None = None) -> Settings:
    env_ns = [n for n in os.environ.get("KUBELOCK_NAMESPACES", "").split(",") if n.strip()]
    flags = flag_parser()
    args = flags.parse_args(argv)
    if args.stale_after_seconds is not None:
        flags.error(f"--stale-after-seconds was replaced by {REPLACED['--stale-after-seconds']}")
    if os.environ.get("KUBELOCK_STALE_AFTER_SECONDS"):
        flags.error(f"KUBELOCK_STALE_AFTER_SECONDS was replaced by {REPLACED['KUBELOCK_STALE_AFTER_SECONDS']}")
    if args.resource_lock_timeout > args.max_ttl_seconds:
        flags.error(
            f"--resource-lock-timeout ({args.resource_lock_timeout}) exceeds --max-ttl-seconds ({args.max_ttl_seconds})"
        )
    namespaces = () if args.all_namespaces else tuple(args.namespaces or env_ns)
    return Settings(
        resource_lock_timeout=args.resource_lock_timeout,
        max_ttl_seconds=args.max_ttl_seconds,
        stale_after_percent=args.stale_after_percent,
        ttl_seconds_after_finished=args.ttl_seconds_after_finished,
        priority_aging_seconds=args.priority_aging_seconds,
        preemption_priority_delta=args.preemption_priority_delta,
        preemption_grace_seconds=args.preemption_grace_seconds,
        namespaces=namespaces,
        kubeconfig=args.kubeconfig,
        context=args.context,
        log_format=args.log_format,
        verbose=args.verbose,
        debug_loggers=tuple(args.debug),
        health_address=args.health_address,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        resync_seconds=args.resync_seconds,
        routine_event_rate=args.routine_event_rate,
        routine_event_summary_seconds=args.routine_event_summary_seconds,
        early_grants=args.early_grants,
        instance=os.environ.get("POD_NAME") or socket.gethostname(),
    )
