"""What the commands print: JSON objects (built as dicts, serialised by json.dumps only) and lines
for humans. Pure functions of SDK values, so their shapes are tested without a cluster."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml

from kubelock.cli.run import Outcome, exit_code_of
from kubelock.domain.reasons import QUEUE_ADVICE, REST_ADVICE, Phase
from kubelock.domain.resource import normalise
from kubelock.domain.waitfor import describe
from kubelock.sdk.admin import BrokenLock, Explanation, LockStatus, RevocationRequest
from kubelock.sdk.errors import Deadlock, HeldByAnotherProcess, LockError, Lost, Rejected, TimedOut
from kubelock.sdk.model import (
    AcquireResult,
    ClaimInfo,
    GrantInfo,
    ReleaseResult,
    RenewResult,
    RevocationInfo,
    format_time,
)

Json = dict[str, Any]


def dumps(payload: Json) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(", ", ": "))


def render(payload: Json, fmt: str) -> str:
    """`-o json` (one line) or `-o yaml` (a document), ending with a newline."""
    if fmt == "yaml":
        return str(yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=1_000_000))
    return dumps(payload) + "\n"


def held_message(
    resource: str, holder: str | None, held_since: str | None, wait_command: str, *, several: bool = False,
    operator_message: str = "",
) -> str:
    """What a command says when a try-lock finds the resource held: the advice names the command's
    own way to queue (the operator's message speaks of the claim's `wait: true`). `several`: the
    resources of a claim of several, of which at least one is held (none was taken).

    The operator's own sentence is kept when there is one: it alone knows that the resource has
    several holders, which of several resources are held by whom, or that a claim queued ahead
    holds it reserved; only its advice is replaced."""
    if operator_message.endswith(QUEUE_ADVICE):
        way = f"queue for all of them with {wait_command}" if several else f"queue for it with {wait_command}"
        return operator_message.removesuffix(QUEUE_ADVICE) + f"try again later, or {way}"
    since = f" since {held_since}" if held_since else ""
    if several:
        return (f"{holder} holds at least one of {resource}{since}, so none was taken; try again later, or "
                f"queue for all of them with {wait_command}")
    return f"{resource} is held by {holder}{since}; try again later, or queue for it with {wait_command}"


def in_command_words(message: str, wait_command: str | None) -> str:
    """An operator's refusal of a try-lock while the resource rests (lock-delay), with the advice in
    the command's words: the operator's names the claim's `wait: true`, which a command line has no
    way to set but `wait_command`. Any other message is returned as it is."""
    if wait_command and message.endswith(REST_ADVICE):
        return message.removesuffix(REST_ADVICE) + f"try again then, or queue for it with {wait_command}"
    return message


# ---- JSON shapes ------------------------------------------------------------------------------


def several(resources: Sequence[str]) -> bool:
    return len(resources) > 1


def resource_of(resource: str | None, resources: Sequence[str]) -> str | None:
    """`resource` in JSON: the one resource, or null for a claim of several (see `resources`)."""
    return None if several(resources) else resource


def grants(items: Sequence[GrantInfo]) -> list[Json]:
    return [{"resource": g.resource, "fencingToken": g.fencing_token, "lock": g.lock_name} for g in items]


def acquired(result: AcquireResult, message: str | None = None) -> Json:
    """Held: the lock(s) and their fencing tokens. For a claim of several resources `resource`,
    `fencingToken` and `lock` are null; `grants` and `fencingTokens` name every one."""
    if not result.ok:
        return held(result.resource, result.holder, format_time(result.held_since), message or result.message,
                    result.resources)
    return {
        "ok": True,
        "resource": resource_of(result.resource, result.resources),
        "holder": result.holder,
        "namespace": result.namespace,
        "fencingToken": result.fencing_token,
        "acquiredAt": format_time(result.acquired_at),
        "expiresAt": format_time(result.expires_at),
        "claim": result.claim_name,
        "lock": result.lock_name,
        "grants": grants(result.grants),
        "fencingTokens": result.fencing_tokens,
    }


def token_list(tokens: dict[str, int]) -> str:
    """`7`, or for several resources `a=7, b=3`."""
    if len(tokens) == 1:
        return str(next(iter(tokens.values())))
    return ", ".join(f"{r}={t}" for r, t in sorted(tokens.items()))


def tokens_text(tokens: dict[str, int]) -> str:
    """`fencing token 7`, or for several resources `fencing tokens a=7, b=3`."""
    return f"fencing token{'' if len(tokens) == 1 else 's'} {token_list(tokens)}"


def held(
    resource: str | None, holder: str | None, held_since: str | None, message: str, resources: Sequence[str] = ()
) -> Json:
    payload = {
        "ok": False,
        "error": "HeldByAnotherHolder",
        "resource": resource_of(resource, resources),
        "holder": holder,
        "heldSince": held_since,
        "message": message,
    }
    if several(resources):
        payload["resources"] = list(resources)
    return payload


def released(result: ReleaseResult) -> Json:
    return {
        "ok": True,
        "resource": resource_of(result.resource, result.resources),
        **({"resources": list(result.resources)} if several(result.resources) else {}),
        "released": True,
        "previousPhase": result.previous_phase.value if result.previous_phase else None,
        "claim": result.claim_name,
    }


def renewed(result: RenewResult) -> Json:
    return {
        "ok": True,
        "resource": resource_of(result.resource, result.resources),
        "fencingToken": result.fencing_token,
        "expiresAt": format_time(result.expires_at),
        "confirmed": result.confirmed,
        "claim": result.claim_name,
        "fencingTokens": result.fencing_tokens,
    }


def ran(info: ClaimInfo, outcome: Outcome, *, released: bool) -> Json:
    """What `kubelock run` reports once the command ended: the lock it held, how the command ended
    (`exitCode`, with `signal` when a signal killed it) and why (`endedBy`)."""
    resources = sorted(info.resources)
    payload: Json = {
        "ok": outcome.exit_code == 0,
        "resource": resource_of(info.resource, resources),
        "holder": info.holder,
        "namespace": info.namespace,
        "fencingToken": None if info.several else info.fencing_token,
        "claim": info.name,
        "grants": grants(info.held_grants),
        "fencingTokens": info.tokens,
        "exitCode": exit_code_of(outcome.returncode),
        "signal": signal.Signals(-outcome.returncode).name if outcome.returncode < 0 else None,
        "endedBy": outcome.ended_by,
        "forwardedSignals": [signal.Signals(s).name for s in outcome.forwarded],
        "killed": outcome.killed,
        "leftBehind": outcome.left_behind,
        "released": released,
    }
    if outcome.lost is not None:
        payload.update(error=outcome.lost.reason, lost=True, message=outcome.lost.message)
    if outcome.revocation is not None:
        r = outcome.revocation
        payload["revocation"] = {
            "requestedBy": r.requested_by, "reason": r.reason, "deadline": format_time(r.deadline),
        }
    return payload


def failure(error: LockError, resource: str | Sequence[str] | None = None, *, wait_command: str | None = None) -> Json:
    """The one JSON object for a failed command; its `error` is the reason (a domain Reason where
    the operator gave one). `resource` is what the command was given: one URI, or several (then
    `resource` is null and `resources` lists them, normalised and sorted). `wait_command`: how this
    command queues, for advice given in the operator's words (`in_command_words`)."""
    resources = [resource] if isinstance(resource, str) else list(resource or [])
    one = resources[0] if len(resources) == 1 else None
    if several(resources):  # as a result lists them: normalised, sorted
        resources = sorted(normalise(r) for r in resources)
    if isinstance(error, Rejected) and error.holder is not None:
        # Busy: the holder and since when, as a refused try-lock says it (with its own reason when
        # the claim is another live process's of this very holder).
        busy = held(one or "", error.holder, error.held_since, error.message, resources)
        if isinstance(error, HeldByAnotherProcess):
            busy["error"] = error.reason
        return busy
    payload: Json = {"ok": False, "error": error.reason}
    if resources:
        payload["resource"] = one
    if several(resources):
        payload["resources"] = resources
    if isinstance(error, Deadlock):
        payload["deadlock"] = True
        payload["cycle"] = list(error.cycle)
    elif isinstance(error, TimedOut):
        payload["timedOut"] = True
        payload["holder"] = error.holder
    elif isinstance(error, Lost):
        payload["lost"] = True
    payload["message"] = in_command_words(error.message, wait_command)
    return payload


def claim(info: ClaimInfo) -> Json:
    return {
        "name": info.name,
        "namespace": info.namespace,
        "resource": info.resource,
        "holder": info.holder,
        "wait": info.wait,
        "phase": info.phase.value if info.phase else None,
        "reason": info.reason,
        "message": info.message,
        "currentHolder": info.current_holder,
        "fencingToken": info.fencing_token,
        "acquiredAt": format_time(info.acquired_at),
        "expiresAt": format_time(info.expires_at),
        "queuePosition": info.queue_position,
        "cycle": list(info.cycle) if info.cycle else None,
        "cycleLength": info.cycle_length,
        "stale": info.stale,
        "resources": sorted(info.resources),
        "fencingTokens": info.tokens,
        "revocation": None if info.revocation is None else revocation(info.revocation),
        # Its deletion was asked for: released then, whatever `phase` still says (a finalizer keeps it).
        "deleting": info.deleting,
    }


def revocation(r: RevocationInfo) -> Json:
    """A request that the holder give its lock back (status.revocation)."""
    return {"requestedBy": r.requested_by, "reason": r.reason, "graceSeconds": r.grace_seconds,
            "requestedAt": format_time(r.requested_at), "deadline": format_time(r.deadline)}


def lock_status(status: LockStatus) -> Json:
    lock = status.lock
    return {
        "namespace": lock.namespace,
        "resource": lock.resource,
        "holder": lock.holder,
        "fencingToken": lock.fencing_token,
        "acquiredAt": format_time(lock.acquired_at),
        "renewedAt": format_time(lock.renewed_at),
        # The end the operator enforces (the holders' claims'); the lock's own spec.expireTime may be
        # later until the first renewal, and is kept as lockExpiresAt.
        "expiresAt": format_time(status.ends_at),
        "lockExpiresAt": format_time(lock.expires_at),
        "waiters": status.waiters,
        "stale": status.stale,
        "lock": lock.name,
        "claim": lock.claim_name,
        "mode": lock.mode,
        "holders": list(lock.holders) or [lock.holder],
    }


def explanation(why: Explanation) -> Json:
    lock = why.lock
    return {
        "ok": True,
        "claim": claim(why.claim),
        "lock": None
        if lock is None
        else {
            "name": lock.name,
            "holder": lock.holder,
            "fencingToken": lock.fencing_token,
            "acquiredAt": format_time(lock.acquired_at),
            "expiresAt": format_time(lock.expires_at),
        },
        "ahead": [{"holder": c.holder, "queuePosition": c.queue_position, "claim": c.name} for c in why.ahead],
    }


def broken(items: Sequence[BrokenLock]) -> Json:
    return {
        "ok": True,
        "broken": [
            {
                "namespace": b.lock.namespace,
                "resource": b.lock.resource,
                "holder": b.lock.holder,
                "fencingToken": b.lock.fencing_token,
                "lock": b.lock.name,
                "brokenBy": b.actor,
                "reason": b.reason,
            }
            for b in items
        ],
    }


def revocation_requests(items: Sequence[RevocationRequest]) -> Json:
    return {
        "ok": True,
        "requested": [
            {
                "namespace": r.claim.namespace,
                "resource": r.claim.resource,
                "holder": r.claim.holder,
                "claim": r.claim.name,
                "requestedBy": r.actor,
                "graceSeconds": r.grace_seconds,
                "reason": r.reason,
            }
            for r in items
        ],
    }


# ---- for humans -------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h03m`, `3d04h`: compact, like kubectl's ages."""
    seconds = int(seconds)
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def since(moment: datetime | None, now: float | None = None) -> str:
    if moment is None:
        return "-"
    return duration((time.time() if now is None else now) - moment.timestamp())


def until(moment: datetime | None, now: float | None = None) -> str:
    if moment is None:
        return "-"
    left = moment.timestamp() - (time.time() if now is None else now)
    return "expired" if left <= 0 else duration(left)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    return "\n".join(lines)


def status_table(
    items: Sequence[LockStatus], *, all_namespaces: bool, now: float | None = None, wide: bool = False
) -> str:
    """Held locks; `wide` adds when each was last renewed, its lease, and its lock and claim names."""
    header = [*(["NAMESPACE"] if all_namespaces else []), "RESOURCE", "HOLDER", "TOKEN", "AGE", "EXPIRES IN",
              "WAITERS", "STALE", *(["RENEWED", "LEASE", "LOCK", "CLAIM"] if wide else [])]
    rows = [
        [
            *([s.lock.namespace] if all_namespaces else []),
            s.lock.resource,
            s.lock.holder + (f" (+{len(s.lock.holders) - 1} {s.lock.mode})" if len(s.lock.holders) > 1 else ""),
            str(s.lock.fencing_token),
            since(s.lock.acquired_at, now),
            until(s.ends_at, now),
            str(s.waiters),
            "stale" if s.stale else "",
            *([since(s.lock.renewed_at, now) + " ago", duration(s.lock.lease_seconds), s.lock.name,
               s.lock.claim_name] if wide else []),
        ]
        for s in items
    ]
    return table(header, rows)


def claims_table(items: Sequence[ClaimInfo], now: float | None = None, *, wide: bool = False) -> str:
    """Your claims; `wide` adds who holds the resource now, the reason and the message."""
    header = ["RESOURCE", "INSTANCE", "PHASE", "TOKEN", "EXPIRES IN", "POSITION", "CLAIM",
              *(["HELD BY", "REASON", "MESSAGE"] if wide else [])]
    rows = [
        [
            ",".join(sorted(c.resources)) if c.several else c.resource,
            c.holder.rpartition("/")[2] or c.holder,
            "Deleting" if c.deleting else c.phase.value if c.phase else "(undecided)",
            ",".join(str(t) for _, t in sorted(c.tokens.items())) if c.several and c.tokens
            else str(c.fencing_token) if c.fencing_token is not None else "-",
            until(c.expires_at, now) if c.held else "-",
            str(c.queue_position) if c.queue_position else "-",
            c.name,
            *([c.current_holder or "-", c.reason or "-", c.message or "-"] if wide else []),
        ]
        for c in items
    ]
    return table(header, rows)


# What a finished claim means for its holder, by phase.
OUTCOMES = {
    Phase.REJECTED: "it never held the lock; try again later, or queue for it with --wait",
    Phase.TIMED_OUT: "it waited in vain and left the queue; it never held the lock",
    Phase.DEADLOCKED: "it left the queue: waiting would have deadlocked",
    Phase.EXPIRED: "the lock was lost (not renewed in time): stop working on the resource",
    Phase.REVOKED: "the lock was taken away: stop working on the resource",
}


def explanation_text(why: Explanation, now: float | None = None) -> str:
    c = why.claim
    phase = f"{c.phase.value} ({c.reason})" if c.phase else "not decided yet (is the operator running?)"
    # How the claim asked matters only while it is undecided or queued; once it ended, what it means does.
    asked = (" (waits in the queue)" if c.wait else " (tries once)") if c.phase in (None, Phase.PENDING) else ""
    lines = [
        f"claim {c.name} in namespace {c.namespace}",
        f"  resource:  {c.label}",
        f"  holder:    {c.holder}{asked}",
        f"  phase:     {phase}",
    ]
    if c.message:
        lines.append(f"  message:   {c.message}")
    if c.deleting:
        lines.append("  deleting:  its deletion was asked for: released then, whatever the phase says (a finalizer"
                     " keeps the object)")
    elif c.phase in OUTCOMES:
        lines.append(f"  outcome:   {OUTCOMES[c.phase]}")
    if c.held:
        lines.append(f"  token:     {token_list(c.tokens)}; expires in {until(c.expires_at, now)}"
                     + (" (stale: not renewed lately)" if c.stale else ""))
    if c.held and c.revocation is not None:  # the holder must act on it: say so beside the lease
        r = c.revocation
        lines.append(f"  asked back: by {r.requested_by}: {r.reason or '(no reason given)'}; release it by "
                     f"{format_time(r.deadline)} (in {until(r.deadline, now)}), or the lock is broken then")
    if c.queue_position:
        ahead = ", ".join(a.holder for a in why.ahead)
        lines.append(f"  queue:     position {c.queue_position}" + (f", behind {ahead}" if ahead else ""))
    if c.cycle:
        lines.append(f"  cycle:     {describe(c.cycle, c.cycle_length)}")
        lines.append("             release every lock you hold, back off, and retry")
    lock = why.lock
    if lock is not None and not c.held:
        lines.append(
            f"  held by:   {lock.holder} for {since(lock.acquired_at, now)} (token {lock.fencing_token}, "
            f"expires in {until(lock.expires_at, now)})"
        )
    elif lock is None and not c.held:
        lines.append("  held by:   nobody now")
    return "\n".join(lines)
