"""An agent process that takes locks over and over until a given time, and writes down what it did:
each hold's work interval (wall clock), fencing token and lease end, and each attempt's outcome.

    python -m tests.support.lockworkers --kind wait|try|run --resources R1,R2 --until EPOCH
        --ttl S --out FILE --instance NAME

`wait` and `try` use the SDK (`LockClient.lock`, queueing or not); `run` starts `kubelock run` with a
child that ticks into a file of its own (the child's first and last tick are its work interval; it is
stopped by `kubelock run` when the lock is lost). The record is rewritten whole after every attempt,
to a temporary name renamed into place, so a reader never sees half a file.

Work is done in steps of STEP seconds, each begun only while the lease is not lost; a hold's `end` is
when its last step finished. The checks (in the test) are: no two holds of one resource overlap,
tokens grow with the holds' starts, and no hold ends after the lease end its holder last saw.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubelock.sdk import LockClient, LockError

STEP = 0.2
WAIT_TIMEOUT = 40.0  # a queued attempt gives up after this; the test counts those
TICKER = (
    "import os,sys,time\n"
    "f=open(sys.argv[1],'a',buffering=1)\n"
    "f.write('token '+os.environ.get('KUBELOCK_FENCING_TOKEN','')+'\\n')\n"
    "end=time.time()+float(sys.argv[2])\n"
    "while True:\n"
    "    f.write('tick %.6f\\n'%time.time())\n"
    "    if time.time()>=end: break\n"
    "    time.sleep(0.2)\n"
)


def write_atomically(path: Path, records: list[dict[str, Any]]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
    temporary.replace(path)


def sdk_attempt(client: LockClient, resource: str, wait: bool, ttl: int, rng: random.Random) -> dict[str, Any]:
    attempt: dict[str, Any] = {"resource": resource, "asked": time.time(), "wait": wait}
    try:
        with client.lock(resource, ttl=ttl, wait=wait, timeout=WAIT_TIMEOUT if wait else None,
                         renew_deadline=ttl * 2 / 3) as lease:  # fmt: skip
            attempt.update(outcome="held", start=time.time(), token=lease.fencing_token, claim=lease.claim_name)
            work = rng.uniform(1.0, 2.5 * ttl)  # often longer than a lease: renewals must carry it
            expires = lease.expires_at.timestamp() if lease.expires_at else None
            attempt["end"] = attempt["start"]
            while time.time() < attempt["start"] + work and lease.error is None:
                expires = lease.expires_at.timestamp() if lease.expires_at else expires
                time.sleep(STEP)
                if lease.error is not None:
                    break  # lost during the step: the step does not count as done under the lock
                attempt["end"] = time.time()
                attempt["expires"] = expires
            attempt["lost"] = repr(lease.error) if lease.error is not None else None
    except LockError as error:
        attempt.setdefault("outcome", type(error).__name__)
        attempt["error"] = repr(error)[:300]
    except Exception as error:  # an unexpected failure is recorded, not hidden
        attempt.setdefault("outcome", "error")
        attempt["error"] = repr(error)[:300]
    attempt["answered"] = time.time()
    return attempt


def run_attempt(argv: list[str], resource: str, ttl: int, ticks: Path, rng: random.Random) -> dict[str, Any]:
    attempt: dict[str, Any] = {"resource": resource, "asked": time.time(), "wait": True, "run": True}
    ticks.unlink(missing_ok=True)
    work = rng.uniform(1.0, 2.5 * ttl)
    child = [sys.executable, "-c", TICKER, str(ticks), f"{work:.2f}"]
    command = [*argv, "run", resource, "--wait", "--timeout", str(int(WAIT_TIMEOUT)), "--ttl", str(ttl), "-o", "json",
               "--", *child]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_TIMEOUT + 4 * ttl + 60, check=False)
    attempt["answered"] = time.time()
    attempt["code"] = done.returncode
    attempt["stderr"] = done.stderr[-300:]
    lines = ticks.read_text().splitlines() if ticks.exists() else []
    stamps = [float(line.split()[1]) for line in lines if line.startswith("tick ")]
    token = next((line.split()[1] for line in lines if line.startswith("token ") and len(line.split()) > 1), None)
    if token is None:
        attempt["outcome"] = f"exit {done.returncode}"
        return attempt
    attempt.update(outcome="held", token=int(token), start=stamps[0] if stamps else attempt["asked"],
                   end=stamps[-1] if stamps else attempt["asked"])  # fmt: skip
    try:
        answer = json.loads(done.stdout.splitlines()[-1])
        attempt["claim"] = answer.get("claim") or answer.get("name")
    except (IndexError, ValueError):
        pass
    return attempt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("wait", "try", "run"), required=True)
    parser.add_argument("--resources", required=True)
    parser.add_argument("--until", type=float, required=True)
    parser.add_argument("--ttl", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    resources = args.resources.split(",")
    records: list[dict[str, Any]] = []
    write_atomically(args.out, records)
    if args.kind == "run":
        argv = [sys.executable, "-c", "import sys; from kubelock.cli.main import main; sys.exit(main())",
                "--instance", args.instance]  # fmt: skip
        while time.time() < args.until:
            records.append(run_attempt(argv, rng.choice(resources), args.ttl, args.out.with_suffix(".ticks"), rng))
            write_atomically(args.out, records)
            time.sleep(rng.uniform(0.1, 0.5))
        return 0
    with LockClient(instance=args.instance) as client:
        while time.time() < args.until:
            records.append(sdk_attempt(client, rng.choice(resources), args.kind == "wait", args.ttl, rng))
            write_atomically(args.out, records)
            time.sleep(rng.uniform(0.1, 0.5) if records[-1]["outcome"] == "held" else rng.uniform(0.5, 1.5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
