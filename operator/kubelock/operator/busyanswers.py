"""First answers for claims that enter the view while their resource's run is under way.

A resource's run decides on the claims it gathered, then waits for that decision's writes before it
decides again; under load each write takes a second or more (a holder whose pod died: its Revoked
status, then the lock's deletion or hand-over). A claim created meanwhile is first decided on the
run's next round, behind those writes: a median of 1.8 s and up to 7.5 s in a loaded chaos run
(docs/reliability.md, "A claim granted next waits for its first answer"), against a bound of 5 s for
any phase. Its first answer (Pending, Rejected) rests on nothing but its own version, so it is decided
at once, on the cache, beside the run (`Reconciler.decide_and_apply`, taking only first answers: no
grant, no ending of another claim), and written conditionally like every status. `claims` holds the
claims whose first answer is being written, by the run or beside it; each leaves those to the other:
a round decided before the other's write returned would write the same answer again and fail on the
claim's version (a 409 and a GET each, measured in `bench/run.py --only 3` and seen in the view logs
of the loaded chaos runs before this was added). When the write beside the run fails, the resource is
reconciled again and the run answers the claim.

One such decision per resource is taken at a time, but its writes do not hold up the next: a claim
that enters while the answers decided beside the run are being written gets a decision of its own
at once (they exclude each other's claims through `claims`), and one that enters while such a
decision is being taken gets one right after it. Left to the run's next round, it waited behind the
run's writes and the answers' write both (3.4 s in a loaded chaos run, of its 5 s bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from kubelock.domain.arbiter import first_answers
from kubelock.domain.model import Action, Claim, Decision
from kubelock.kube.errors import ApiError, Unreachable
from kubelock.operator import viewlog
from kubelock.operator.cache import Key, multi_claim_uid

log = logging.getLogger("kubelock.reconciler")

# `Reconciler.decide_and_apply`: decide a key, apply what the chooser takes (or say why nothing).
Choice = tuple[Action, ...] | str
DecideAndApply = Callable[[Key, Callable[[list[Claim], Decision], Choice]], Awaitable[Choice]]


class BusyAnswers:
    """`entered(key)` when a claim the cache did not hold came in; answers it beside a running run."""

    def __init__(
        self, decide_and_apply: DecideAndApply, running: Callable[[Key], bool], schedule: Callable[[Key], None]
    ) -> None:
        self._decide_and_apply = decide_and_apply
        self._running = running
        self._schedule = schedule
        self._answering: set[Key] = set()  # keys whose decision beside the run is being taken
        self._again: set[Key] = set()  # ... and a claim entered meanwhile: decide once more after it
        self.claims: set[str] = set()  # uids of the claims whose first answer is being written (run or here)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def entered(self, key: Key | None) -> None:
        # A claim of several resources is decided as a whole by its own key; a key not running now
        # is decided as soon as a worker takes it, which is what the work queue is for.
        if self._stopped or key is None or multi_claim_uid(key) is not None or not self._running(key):
            return
        if key in self._answering:
            self._again.add(key)  # its decision may have gathered the claims before this one came
            return
        self._answering.add(key)
        task = asyncio.create_task(self._answer(key), name=f"first answers beside the run of {key[1]} in {key[0]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, key: Key) -> None:
        def choose(claims: list[Claim], decision: Decision) -> Choice:
            answers = tuple(a for a in first_answers(decision.actions) if a.claim.uid not in self.claims)
            if answers:
                viewlog.beside_run(key, claims, answers)
                taken.update(a.claim.uid for a in answers)
                self.claims.update(taken)
            self._decided(key)  # taken: a claim entering from now on gets a decision of its own
            return answers or "no claim without an answer"

        taken: set[str] = set()
        done = False
        try:
            done = not isinstance(await self._decide_and_apply(key, choose), str)
        except (ApiError, Unreachable) as error:
            log.debug("first answers beside the run of %s in %s failed: %s", key[1], key[0], error)
        except Exception:
            log.exception("first answers beside the run of %s in %s crashed", key[1], key[0])
        finally:
            self._decided(key)
            self.claims.difference_update(taken)
        if taken and not done:
            self._schedule(key)  # the run answers them (a write that failed on a stale view did this too)

    def _decided(self, key: Key) -> None:
        """The decision beside the run of `key` is taken (or failed before): the next may be."""
        if key not in self._answering:
            return
        self._answering.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.entered(key)

    @property
    def answering(self) -> Sequence[Key]:
        return sorted(self._answering)

    async def stop(self) -> None:
        self._stopped = True  # a cancelled decision starts no other
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
