"""Timestamps: the domain keeps epoch seconds; the API speaks RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime


def to_rfc3339(ts: float) -> str:
    """RFC 3339 in UTC with microseconds (`2026-01-02T03:04:05.123456Z`)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime in UTC; ValueError when it is not one. The one
    parser of API timestamps (tolerant readers wrap it: `kubelock.api.objects.time_of`). The API
    server's are UTC already (`Z`), and need no conversion: a restart parses tens of thousands."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def from_rfc3339(text: str) -> float:
    return parse_rfc3339(text).timestamp()


def human_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds and seconds % 3600 == 0:
        n = seconds // 3600
        return f"{n} hour{'s' if n != 1 else ''}"
    if seconds and seconds % 60 == 0:
        n = seconds // 60
        return f"{n} minute{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
