"""`chaos.explain`: a `no-verdict` the checker reports is found again in a kept run's history, and the
operators' view-log lines about its claim and resource are picked out by time."""

from __future__ import annotations

import calendar
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from chaos import explain  # noqa: E402
from chaos.history import ClaimLife, History, to_json  # noqa: E402

NS = "chaos-two-replicas-abc123"
CLAIM = "chaos-agents-a1-016-chaos-pool-r00-8a3c2bbac0"
T = calendar.timegm(time.strptime("2026-11-26 21:01:26", "%Y-%m-%d %H:%M:%S")) + 0.421


def test_every_unanswered_claim_is_found_again_and_its_log_lines_picked_out(tmp_path: Path) -> None:
    part = tmp_path / NS
    (part / "logs").mkdir(parents=True)
    history = History()
    history.add(ClaimLife(uid="u1", resource="chaos://pool/r00", holder=f"sa:{NS}/chaos-agents/a1-016", wait=True,
                          created=T, decided=T + 8.1, deleted=T + 9, answered=T + 8.1, created_version=403,
                          name=CLAIM))
    history.add(ClaimLife(uid="u2", resource="chaos://pool/r01", holder=f"sa:{NS}/chaos-agents/a1-017", wait=True,
                          created=T, decided=T + 1, deleted=T + 2, answered=T + 1, name="answered-in-time"))
    (part / "history.jsonl").write_text("".join(to_json(r) + "\n" for r in history.records()))
    (part / "logs" / "operator-0-1.log").write_text(
        f"2026-11-26 21:01:20,000Z DEBUG   kubelock.view: decided chaos://pool/r00 in {NS} on claims []: nothing\n"
        f"2026-11-26 21:01:26,423Z DEBUG   kubelock.view: claim {NS}/{CLAIM} entered the view (ADDED): uid u1\n"
        f"2026-11-26 21:01:26,502Z DEBUG   kubelock.view: decided chaos://pool/r00 in {NS} on claims "
        f"[{CLAIM}:-:403] grants []: grant(other)\n"
        f"2026-11-26 21:01:27,000Z DEBUG   kubelock.view: decided chaos://pool/r01 in {NS} on claims []: nothing\n"
    )
    found = list(explain.violations(explain.checked(tmp_path)))
    assert [(f["claim"], f["version"], f["seen"]) for f in found] == [(CLAIM, "403", "21:01:26.421")]
    lines = explain.timeline(tmp_path, found[0])
    assert [line.split()[0] for line in lines[2:]] == ["21:01:26,423Z", "21:01:26,502Z"]  # not r01, not before
    assert explain.cause(tmp_path, found[0]) == "no answer decided"  # in the view at once, left out
