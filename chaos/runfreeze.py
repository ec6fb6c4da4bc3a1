"""Holders run through `kubelock run`, frozen (SIGSTOP to `kubelock run`, not to its command) past
their renew deadline, then resumed.

Several holder loops contend for a few resources, each running `kubelock run --wait --ttl T URI --
child` over and over; the child records its life (the lock it was started under, when it started,
and a heartbeat every 20 ms) in a file of its own. Every few seconds one running `kubelock run` is
frozen for 2.5 TTLs. Nothing in it can renew the lease or stop the child; its watchdog must kill the
child before the lease can expire and pass on.

The checker counts a violation for every child whose life overlaps a grant of its resource to
another holder: a heartbeat after the next grant's `acquireTime` (the operator's clock, taken before
the grant is written, so a grant is never dated late). Lives are known to within one heartbeat.
With a lock-delay the bound would be the grant plus the delay; this scenario runs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from chaos import faults
from chaos.history import History, LockLife, Violation
from chaos.results import Row
from chaos.scenarios import REPO, Env, Run, Shape

NAME = "run-freeze"
TITLE = "kubelock run holders SIGSTOPped past their renew deadline (the command must die first)"
TTL = 4
RESOURCES = ("chaos://run/0", "chaos://run/1", "chaos://run/2")

# The command under `kubelock run`: records its lock and a heartbeat until it has held for argv[2]
# seconds. It ignores SIGTERM, so only a SIGKILL (kubelock run's after the grace, or its watchdog's)
# ends a command whose lock is lost.
CHILD = r"""
import json, os, signal, sys, time, uuid
signal.signal(signal.SIGTERM, signal.SIG_IGN)
path = os.path.join(sys.argv[1], uuid.uuid4().hex + ".json")
# kubelock run is the parent of this command's parent (its watchdog): the freezer aims at it.
with open(f"/proc/{os.getppid()}/stat") as f:
    run_pid = int(f.read().rpartition(")")[2].split()[1])
life = {"holder": os.environ["KUBELOCK_LOCK_HOLDER"], "resource": os.environ["KUBELOCK_RESOURCE"],
        "token": int(os.environ["KUBELOCK_FENCING_TOKEN"]), "start": time.time(), "run": run_pid}
end = life["start"] + float(sys.argv[2])
while True:
    life["last"] = time.time()
    with open(path + ".tmp", "w") as f:
        json.dump(life, f)
    os.replace(path + ".tmp", path)
    if life["last"] >= end:
        break
    time.sleep(0.02)
"""


@dataclass(frozen=True)
class ChildLife:
    holder: str
    resource: str
    token: int
    start: float
    last: float


def read_lives(folder: Path) -> list[ChildLife]:
    lives = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        lives.append(ChildLife(data["holder"], data["resource"], int(data["token"]), data["start"], data["last"]))
    return lives


def overlaps(lives: list[ChildLife], locks: list[LockLife]) -> list[Violation]:
    """A child alive after its resource was granted to another holder (a grant after its start)."""
    found = []
    for life in lives:
        for lock in locks:
            granted = lock.acquired if lock.acquired is not None else lock.created
            if lock.resource != life.resource or lock.token == life.token:
                continue
            if life.start < granted < life.last:
                found.append(Violation(
                    "child-outlived-lease",
                    f"the command of {life.holder} (token {life.token}) on {life.resource} was alive "
                    f"{life.last - granted:.3f}s after {lock.holder} was granted it (token {lock.token})",
                    time=granted,
                ))
    return found


class Holders:
    """The holder loops, and the `kubelock run` processes running now (for the freezer)."""

    def __init__(self, world: Run, lives: Path) -> None:
        self.world = world
        self.lives = lives
        self.running: dict[int, asyncio.subprocess.Process] = {}
        self.results: list[dict[str, object]] = []
        self.frozen: set[int] = set()

    def env(self, instance: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBELOCK_"))}
        env.update(KUBECONFIG=str(self.world.env.plane.kubeconfig), KUBELOCK_NAMESPACE=self.world.namespace,
                   KUBELOCK_INSTANCE=instance, PYTHONPATH=f"{REPO / 'operator'}:{REPO}")
        return env

    async def loop(self, index: int, rng: random.Random) -> None:
        script = self.lives / "child.py"
        while time.time() < self.world.until:
            uri = rng.choice(RESOURCES)
            argv = [sys.executable, "-c", "import sys; from kubelock.cli.main import main; sys.exit(main())",
                    "run", uri, "--wait", "--timeout", str(3 * TTL), "--ttl", str(TTL), "-o", "json", "--",
                    sys.executable, str(script), str(self.lives), f"{rng.uniform(1.0, 10.0):.2f}"]
            process = await asyncio.create_subprocess_exec(
                *argv, env=self.env(f"h{index}"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            self.running[process.pid] = process
            out, _ = await process.communicate()
            del self.running[process.pid]
            lines = out.decode(errors="replace").strip().splitlines()
            with contextlib.suppress(ValueError, IndexError):
                self.results.append(json.loads(lines[-1]))
            await asyncio.sleep(rng.uniform(0, 0.3))

    def with_command(self) -> list[int]:
        """The `kubelock run` processes whose command is running (it beat within the last 0.2 s)."""
        now = time.time()
        busy = set()
        for path in self.lives.glob("*.json"):
            with contextlib.suppress(ValueError, OSError, KeyError):
                life = json.loads(path.read_text())
                if now - life["last"] < 0.2:
                    busy.add(int(life["run"]))
        return sorted(busy & set(self.running))

    async def freeze(self, rng: random.Random) -> int:
        """SIGSTOP a `kubelock run` whose command is running, for 2.5 TTLs, again and again; the
        number frozen."""
        count = 0
        while time.time() < self.world.until - 2.5 * TTL:
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            candidates = self.with_command()
            if not candidates:
                continue
            pid = rng.choice(candidates)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self.frozen.add(pid)
                count += 1
                await asyncio.sleep(2.5 * TTL)
                os.kill(pid, signal.SIGCONT)
        return count


async def run(env: Env) -> Row:
    seconds = 45 if env.quick else 120
    shape = Shape(agents=6, processes=1, resources=len(RESOURCES), seconds=seconds, ttl=TTL)
    began = time.time()
    async with Run(env, NAME, shape) as world:
        lives = world.dir / "lives"
        lives.mkdir(parents=True, exist_ok=True)
        (lives / "child.py").write_text(CHILD)
        world.t0 = time.time()
        world.until = world.t0 + seconds
        holders = Holders(world, lives)
        rng = random.Random(world.seed)
        loops = [asyncio.create_task(holders.loop(i, random.Random(rng.random()))) for i in range(shape.agents)]
        frozen = await holders.freeze(random.Random(rng.random()))
        await asyncio.gather(*loops)
        await faults.poll(lambda: not world.monitor.held_resources(), 3 * TTL)
        await asyncio.sleep(0.5)  # the last deletions' events
        history = History()
        history.extend(world.monitor.records())
        found = overlaps(read_lives(lives), history.locks)
    killed = sum(1 for r in holders.results if r.get("killed"))
    lost = sum(1 for r in holders.results if r.get("endedBy") == "LockLost")
    notes = [f"{frozen} kubelock run processes frozen for {2.5 * TTL:g}s each; {lost} commands stopped on a lost "
             f"lock, {killed} of them by SIGKILL; {len(read_lives(lives))} command lives checked"]
    if not frozen or not lost:
        notes.append("the freezes caught no holder with a running command: the watchdog was not exercised")
    return Row(
        name=NAME, title=TITLE, runs=max(frozen, 1), operations=len(holders.results), violations=len(found),
        recovery=None, seconds=time.time() - began, notes=notes, details=[str(v) for v in found[:20]],
        stats={"frozen": frozen, "lost": lost, "killed": killed, "lives": len(read_lives(lives))},
    )
