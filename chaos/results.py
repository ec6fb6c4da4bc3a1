"""One line of the results table (and of docs/reliability.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    name: str
    title: str
    runs: int
    operations: int
    violations: int
    recovery: float | None
    seconds: float
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
