"""The churn row (#9) of two operator trees in pairs: `python bench/churn_ab.py A_TREE B_TREE`.

Each round runs `run.py --only 9` (the full run's 1 000 agents in 50 processes; `--quick`: in 20)
once per tree (its operator and the agents' SDK both come
from the tree, `--operator`), back to back on fresh control planes, A then B in even rounds and B
then A in odd ones, so a load that rises or falls through a pair does not favour one tree. #9 takes
1 000 agent processes' worth of clients on two cores: its figure moves with the machine's load by 2×,
so each run is written with the 1-minute load before and after it and read as the ratio B/A of its
pair. Prints and writes (`--out`) every run, the medians and the paired ratios.

    PYTHONPATH=operator KUBELOCK_BIN_DIR=... .venv/bin/python bench/churn_ab.py /tmp/old . --rounds 3
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import abrun

RUN = Path(__file__).resolve().parent / "run.py"


def one_run(tree: Path, out: Path, patience: float, quick: bool) -> dict[str, Any]:
    """One `run.py --only 9` of `tree`'s operator: grants/s, cores, requests per grant."""
    load_before = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(RUN), *(["--quick"] if quick else []), "--only", "9", "--patience", str(patience),
            "--operator", str(tree / "operator"), "--out", str(out), "--workdir", str(out / "work")]
    with (out.parent / f"{out.name}.log").open("wb") as log:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=log)
    data = json.loads((out / "latest.json").read_text())
    rows = {r["name"].split(":", 1)[1].strip(): r for r in data["metrics"] if r["id"] == 9}
    churn = next(r for name, r in rows.items() if name.startswith("1000 agents") or "agents in" in name)
    block = next(r for r in data["resources"] if r["block"] == "9 churn")
    return {
        "grants_per_s": churn["value"], "detail": churn["detail"],
        "status_writes_per_grant": rows.get("claim status writes per grant", {}).get("value"),
        "acquire_p50_ms": rows.get("acquire → Held p50 (SDK)", {}).get("value"),
        "cpu_s": block["cpu"], "grants": block["units"], "requests_per_grant": block["requests_per_unit"],
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = abrun.parser(__doc__, rounds=3, rounds_help="rounds of one run of each tree")
    parser.add_argument("--patience", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="QUICK's #9 (20 agent processes, 20 s window)")
    args = parser.parse_args()
    trees = abrun.trees(args)
    workdir = (args.workdir or Path("/tmp/kubelock-churn-ab")).resolve()
    runs: list[dict[str, Any]] = []
    for index in range(args.rounds):
        for label in trees if index % 2 == 0 else list(trees)[::-1]:
            result = one_run(trees[label], workdir / f"r{index}-{label}", args.patience, args.quick)
            runs.append({"round": index, "tree": label, **result})
            print(json.dumps({k: runs[-1][k] for k in ("round", "tree", "grants_per_s", "load_before",
                                                       "load_after", "status_writes_per_grant")}),
                  file=sys.stderr, flush=True)
    a, b = list(trees)
    rate = {(r["round"], r["tree"]): r["grants_per_s"] for r in runs}
    pairs = [rate[(i, b)] / rate[(i, a)] for i in range(args.rounds)]
    document = {
        "trees": {k: str(v) for k, v in trees.items()}, "rounds": args.rounds, "quick": args.quick, "runs": runs,
        "median_grants_per_s": {t: statistics.median(rate[(i, t)] for i in range(args.rounds)) for t in trees},
        "paired_ratio_b_over_a": {"median": round(statistics.median(pairs), 3), "each": [round(p, 3) for p in pairs]},
    }
    return abrun.report(document, args.out, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
