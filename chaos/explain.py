"""`python -m chaos.explain [--causes | --stages] WORKDIR [OUTPUT]`: a kept chaos run's `no-verdict`s taken apart.

For each claim the checker found unanswered past the bound, prints, from every operator replica's log
of its part (`--debug kubelock.view`, which the chaos operators run with), what that replica did from
just before the monitor saw the claim until it was answered: when the claim entered its view, each
decision on its resource (with the claims it was taken on, what it wrote, what waited for a fresh
view and why), the writes that failed, and the claim's own status lines. Whether the claim was late
into the view, in the view but left out of decisions, held back, or answered by a write that came
late or failed is then read off the timestamps. The violations are found again from each part's
`history.jsonl` (the report lists only the first 20 of each check), or read from OUTPUT, the run's
printed output. With `--causes`, one line per claim instead, and the count of each cause:

- late into the view: no replica saw it within 1 s of the monitor;
- held back: a decision granted it but the grant waited for a fresh view;
- its grant decided late / early: a decision first answered it by granting it, 2.5 s or more (late)
  or less (early: then the grant's writes were slow) after the monitor saw it;
- its answer decided late / early: the same for a first `Pending`/`Rejected`/... status;
- no answer decided: no decision answered it before it was withdrawn.

With `--stages`, one line per claim with where its silence went, in seconds: `watch` (the monitor
saw it until a replica's view had it; negative when the operator was first), `queue` (in the view
until the first decision taken on it: its resource's earlier run and writes, or the work queue),
`chain` (that decision until the first one that answered or granted it: the decisions and writes
of other claims of its resource before, such as a dead holder's Revoked status and lock deletion),
`write` (that decision until the monitor saw a phase: the write itself, and, when the decision only
granted it, the grant's write and the `Held` write after it); and the median of each stage.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from chaos.history import History, check, read_jsonl
from chaos.scenarios import BOUNDS

VIOLATION = re.compile(
    r"\[no-verdict\] (?P<resource>\S+): the claim of (?:sa|pod):(?P<namespace>[^/]+)/\S+ went (?P<silent>[\d.]+)s .*"
    r"claim (?P<claim>\S+), created at version (?P<version>\w+), seen (?P<seen>[\d:.]+)Z\)"
)
MARGIN = 1.0  # seconds of each log shown before the claim was seen and after it was answered
IN_VIEW = 1.0  # later into a replica's view than the monitor's by more than this: late into the view
EARLIER = 10.0  # how long before the monitor a replica may have seen the claim (the monitor lags too)
DECIDED_LATE = 2.5  # first answered or granted by a decision this long after the monitor saw it: late


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


def timeline(workdir: Path, found: re.Match[str], before: float = MARGIN) -> list[str]:
    """The lines about the claim and its resource from `before` seconds ahead of the monitor seeing
    the claim (a replica may see it first: the monitor is starved too) until just after it was answered."""
    claim, resource = found["claim"], found["resource"]
    start = seconds(found["seen"]) - before
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


def cause(workdir: Path, found: re.Match[str]) -> str:
    """What kept the claim unanswered, from every replica's view log (see the module's docstring)."""
    claim, seen = found["claim"], seconds(found["seen"])
    entered: float | None = None
    answered: tuple[float, str] | None = None
    held_back = False
    for line in timeline(workdir, found, before=EARLIER)[1:]:
        if not line.startswith("    "):
            continue
        at, text = seconds(line.split()[0][:12]), line.replace("chaos-agents-", "")
        name = claim.replace("chaos-agents-", "")
        if "entered the view" in text and name in text:
            entered = at if entered is None else min(entered, at)
        elif "kubelock.view: decided" in text and f"{name}:" in text:
            decided, _, waiting = text.partition("held back")
            if name in waiting:
                held_back = True
            elif f"status({name}=" in decided or f"grant({name})" in decided:
                how = "grant" if f"grant({name})" in decided else "answer"
                if answered is None or at < answered[0]:
                    answered = (at, how)
    if entered is None or entered - seen > IN_VIEW:
        return "late into the view"
    if held_back:
        return "held back"
    if answered is None:
        return "no answer decided"
    return f"its {answered[1]} decided {'late' if answered[0] - seen >= DECIDED_LATE else 'early'}"


def stages(workdir: Path, found: re.Match[str]) -> dict[str, float | None]:
    """Where a claim's silence went (see `--stages` in the module's docstring)."""
    claim, seen = found["claim"], seconds(found["seen"])
    name = claim.replace("chaos-agents-", "")
    entered = first = answered = None
    for line in timeline(workdir, found, before=EARLIER)[1:]:
        if not line.startswith("    "):
            continue
        at, text = seconds(line.split()[0][:12]), line.replace("chaos-agents-", "")
        if "entered the view" in text and name in text:
            entered = at if entered is None else min(entered, at)
        elif "kubelock.view: decided" in text and f"{name}:" in text and entered is not None and at >= entered:
            first = at if first is None else first
            decided = text.partition("held back")[0]
            if answered is None and (f"status({name}=" in decided or f"grant({name})" in decided):
                answered = at
    end = seen + float(found["silent"])

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 2)

    return {"watch": gap(seen, entered), "queue": gap(entered, first), "chain": gap(first, answered),
            "write": gap(answered, end)}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    causes = "--causes" in args
    staged = "--stages" in args
    args = [a for a in args if a not in ("--causes", "--stages")]
    if len(args) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    workdir = Path(args[0])
    lines = Path(args[1]).read_text().splitlines() if len(args) == 2 else checked(workdir)
    counted: Counter[str] = Counter()
    spent: dict[str, list[float]] = {}
    for found in violations(lines):
        if staged:
            parts = stages(workdir, found)
            for stage, value in parts.items():
                if value is not None:
                    spent.setdefault(stage, []).append(value)
            shown = " ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in parts.items())
            print(f"{found['namespace']} {found['claim']} {found['silent']} s: {shown}")
        elif causes:
            counted[why := cause(workdir, found)] += 1
            print(f"{found['namespace']} {found['claim']} {found['silent']} s: {why}")
        else:
            print("\n".join(timeline(workdir, found)), end="\n\n")
    for stage, values in spent.items():
        print(f"median {stage}: {statistics.median(values):.2f} s of {len(values)}")
    for why, count in counted.most_common():
        print(f"{count:5d} {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
