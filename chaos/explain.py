"""`python -m chaos.explain WORKDIR [OUTPUT]`: take every `no-verdict` of a kept chaos run apart from its logs.

For each claim the checker found unanswered past the bound, prints, from every operator replica's log
of its part (`--debug kubelock.view`, which the chaos operators run with), what that replica did from
just before the monitor saw the claim until it was answered: when the claim entered its view, each
decision on its resource (with the claims it was taken on, what it wrote, what waited for a fresh
view and why), the writes that failed, and the claim's own status lines. Whether the claim was late
into the view, in the view but left out of decisions, held back, or answered by a write that came
late or failed is then read off the timestamps. The violations are found again from each part's
`history.jsonl` (the report lists only the first 20 of each check), or read from OUTPUT, the run's
printed output.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from chaos.history import History, check, read_jsonl
from chaos.scenarios import BOUNDS

VIOLATION = re.compile(
    r"\[no-verdict\] (?P<resource>\S+): the claim of (?:sa|pod):(?P<namespace>[^/]+)/\S+ went (?P<silent>[\d.]+)s .*"
    r"claim (?P<claim>\S+), created at version (?P<version>\w+), seen (?P<seen>[\d:.]+)Z\)"
)
MARGIN = 1.0  # seconds of each log shown before the claim was seen and after it was answered


def seconds(clock: str) -> float:
    """HH:MM:SS.mmm as seconds of the day."""
    hours, minutes, rest = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", "."))


def violations(lines: Iterable[str]) -> Iterator[re.Match[str]]:
    for line in lines:
        found = VIOLATION.search(line)
        if found:
            yield found


def checked(workdir: Path) -> list[str]:
    """Every `no-verdict` of every part kept in `workdir`, judged again from its history."""
    lines: list[str] = []
    for path in sorted(workdir.glob("*/history.jsonl")):
        history = History()
        history.extend(read_jsonl(path))
        history.end = max((t for c in history.claims for t in (c.created, c.answered, c.deleted) if t), default=0.0)
        lines.extend(str(v) for v in check(history, BOUNDS).violations if v.check == "no-verdict")
    return lines


def relevant(line: str, claim: str, resource: str) -> bool:
    return claim in line or f"decided {resource} in" in line or f"{resource}," in line.split(" in ")[0]


def timeline(workdir: Path, found: re.Match[str]) -> list[str]:
    claim, resource = found["claim"], found["resource"]
    start = seconds(found["seen"]) - MARGIN
    end = seconds(found["seen"]) + float(found["silent"]) + MARGIN
    out = [f"{found['namespace']}: {claim} on {resource}, created at version {found['version']}, seen "
           f"{found['seen']}, {found['silent']} s without a phase"]
    for log in sorted((workdir / found["namespace"] / "logs").glob("operator-*.log")):
        lines = []
        for line in log.read_text(errors="replace").splitlines():
            if len(line) < 24 or not line[:4].isdigit():
                continue
            at = seconds(line[11:23])
            if start <= at <= end and relevant(line, claim, resource):
                lines.append("    " + line[11:].replace(found["namespace"], "NS").replace("chaos-agents-", ""))
        out.append(f"  {log.name}: {len(lines)} lines")
        out.extend(lines)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    workdir = Path(args[0])
    lines = Path(args[1]).read_text().splitlines() if len(args) == 2 else checked(workdir)
    for found in violations(lines):
        print("\n".join(timeline(workdir, found)), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
