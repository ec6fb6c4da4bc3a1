"""docs/install.md's table of metrics names every metric the operator exports, as exported, and nothing
else: a metric added or renamed without its row fails here."""

from __future__ import annotations

import re
import time
from pathlib import Path

from kubelock.domain.clock import ServerBoundClock, SystemClock
from kubelock.operator.cache import Cache
from kubelock.operator.metrics import Metrics
from kubelock.operator.watchstats import WatchStats

INSTALL = Path(__file__).resolve().parents[2] / "docs" / "install.md"


class _Ledgers:
    conflicts = 0


def _families() -> dict[str, str]:
    """Every family of a Metrics with all its collectors attached: exposition name -> type."""
    metrics = Metrics()
    metrics.watch_cache(Cache())
    metrics.watch_streams(WatchStats(time.monotonic))
    metrics.watch_ledgers(_Ledgers())  # type: ignore[arg-type]  # the collector reads `conflicts` only
    metrics.watch_clock(ServerBoundClock(SystemClock(), lambda: None))
    families = {}
    for family in metrics.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        families[name] = family.type
    return families


def _documented() -> dict[str, str]:
    text = INSTALL.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(kubelock_[a-z_]+)` \| (\w+) \|", section, flags=re.M)
    assert rows, "docs/install.md has no table of metrics under '## Metrics'"
    return dict(rows)


def test_every_exported_metric_has_its_row_with_its_type() -> None:
    exported, documented = _families(), _documented()
    assert sorted(set(exported) - set(documented)) == [], "exported but not in docs/install.md"
    assert sorted(set(documented) - set(exported)) == [], "in docs/install.md but not exported"
    assert {name: documented[name] for name in exported} == exported
