"""One agent process of the churn row (#9): `python bench/churn.py --kubeconfig K --namespace NS
--agents A --prefix P --tag T --resources R`.

Each agent is a client of its own (`kubelock.sdk.AsyncLockClient`: its own connections, its own
instance of the bench's identity), as an agent process of a real workload is. The process prints
`{"ready": true}` once every agent knows its identity, then reads one line from stdin: the wall-clock
time to stop at (so that every process begins together). Until then each agent loops: pick one of
`--resources` resources at random, acquire it waiting in the queue, release it as soon as it is held.
At the end it prints one JSON line: the wall-clock time each acquire returned and how long it took,
and the errors by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the chaos suite's identities
import options
from chaos import identities

from kubelock.kube import config
from kubelock.sdk import AsyncLockClient
from kubelock.sdk.errors import LockError

WAIT_SECONDS = 120


def kind(error: LockError) -> str:
    """The error's class and what failed: `Unreachable(create claim: no answer)`, `Unreachable(...: 429)`,
    `Unreachable(OperatorUnavailable)` (no decision in time) ..."""
    name = type(error).__name__
    if error.reason != error.default_reason:
        return f"{name}({error.reason})"
    doing = re.match(r"cannot (\w+ \w+)", error.message)
    status = re.search(r"answered (\d+)", error.message)
    return f"{name}({doing.group(1) if doing else '?'}: {status.group(1) if status else 'no answer'})"


async def agent(client: AsyncLockClient, tag: str, resources: int, stop: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    done: list[float] = []
    took: list[float] = []
    errors: Counter[str] = Counter()
    while time.time() < stop:
        uri = f"bench://churn/{tag}/r{rng.randrange(resources)}"
        began = time.perf_counter()
        try:
            await client.acquire(uri, wait=True, timeout=WAIT_SECONDS)
            took.append(time.perf_counter() - began)
            done.append(time.time())
            await client.release(uri)
        except LockError as error:
            errors[kind(error)] += 1
    return {"done": done, "took": took, "errors": errors}


async def main(args: argparse.Namespace) -> None:
    # The agents' ServiceAccount token (from the bench), with the kubeconfig's server and CA.
    credentials = identities.as_token(config.load(args.kubeconfig), os.environ["BENCH_AGENT_TOKEN"])
    clients = [
        AsyncLockClient(namespace=args.namespace, credentials=credentials, instance=f"{args.prefix}-{i}")
        for i in range(args.agents)
    ]
    try:
        await asyncio.gather(*(c.identity() for c in clients))  # before the start: not part of the churn
        print(json.dumps({"ready": True}), flush=True)
        stop = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
        results = await asyncio.gather(
            *(agent(c, args.tag, args.resources, stop, hash((args.prefix, i))) for i, c in enumerate(clients))
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    print(json.dumps({
        "done": [t for r in results for t in r["done"]],
        "took": [t for r in results for t in r["took"]],
        "errors": dict(errors),
    }), flush=True)


def parse() -> argparse.Namespace:
    parser = options.parser(__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--resources", type=int, required=True)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
