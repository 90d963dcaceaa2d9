"""Shrinking a failure found on a noisy broker: judge candidates, delete steps, keep the smallest.

The search (:mod:`harness._fuzz`) hands its first failure to a
:class:`Shrinker`, as Hypothesis's engine hands one to its shrinker. Real
brokers are not deterministic: a failure may not repeat while it is being
shrunk. Shrinking deletes steps first (delta debugging on the schedule),
then hands over to Hypothesis's shrinker. A candidate must pass several runs
in a row to count as passing and fail twice to count as failing; the
shrinker keeps the smallest failing run it has seen, so a flaky failure ends
the search with that run instead of an error. When that run then fails
again in few re-runs, :func:`steadier` looks among the larger failures seen
for one that fails again steadily.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

from message_flow_harness._flow import RunResult
from message_flow_harness._schedule import (
    AT_ONCE,
    After,
    Pause,
    Settle,
    Step,
    faults_of,
    messages_of,
)

#: The share of its re-runs a reproduction fails again in to count as steady (4 of 5).
STEADY = 0.8


def steady(failed: int, runs: int) -> bool:
    """Whether a schedule that failed again in ``failed`` of ``runs`` re-runs is steady."""
    return failed >= math.ceil(STEADY * runs)


def unsteady_after(runs: int) -> int:
    """How many passing re-runs of ``runs`` show a schedule cannot be steady."""
    return runs - math.ceil(STEADY * runs) + 1


#: Re-runs a schedule into a list (True where it failed), giving up after so many passes
#: (None: never); returns its last failing run.
Rerun = Callable[[RunResult, list[bool], int | None], Awaitable[RunResult]]


async def steadier(
    failed_again: Sequence[bool],
    candidates: Sequence[RunResult],
    rerun: Rerun,
    *,
    runs: int,
    time_left: Callable[[], bool],
) -> tuple[RunResult, list[bool]] | None:
    """A steady reproduction among ``candidates`` when the minimal one is not: its run and re-runs.

    Shrinking keeps a candidate that fails twice, so a race that also needs
    an outcome no step sets (which member Kafka's assignor gives a partition)
    shrinks to a schedule that fails about half the time; a larger failure
    seen on the way (inputs on every partition) may fail every time. Each
    candidate (smallest first) is screened by ``runs`` re-runs, given up at
    the first passes that rule it out, then confirmed by ``runs`` fresh ones:
    of many candidates that fail half the time, one passes a single screen by
    luck. The confirmation is what the report gives as its figure.
    """
    if steady(sum(failed_again), len(failed_again)):
        return None
    for candidate in candidates:
        if not time_left():
            return None
        screened: list[bool] = []
        await rerun(candidate, screened, unsteady_after(runs))
        if len(screened) < runs or not steady(sum(screened), runs):
            continue
        confirmed: list[bool] = []
        failing = await rerun(candidate, confirmed, None)
        if steady(sum(confirmed), runs):
            return failing, confirmed
    return None


def judge(run: Callable[[], RunResult], tries: int) -> RunResult:
    """Run a shrink candidate until it passes ``tries`` times in a row or fails twice.

    Real brokers are noisy both ways. A race that shows one time in three must
    not be shrunk away, so a candidate counts as passing only after ``tries``
    passes in a row; and a candidate that failed once by luck must not become
    the minimal example (it would not fail again when the user runs it), so a
    failure counts only once it repeats within ``tries`` more runs. Returns
    the failing run if it repeated, else the last passing one.
    """
    failures = 0
    passes_in_a_row = 0
    while True:
        result = run()
        if result.ok:
            passes_in_a_row += 1
            if passes_in_a_row == tries:
                return result
        else:
            failures += 1
            if failures == 2:
                return result
            passes_in_a_row = 0


def delete_steps(
    schedule: Sequence[Step],
    fails: Callable[[tuple[Step, ...]], bool],
    time_left: Callable[[], bool],
) -> tuple[Step, ...]:
    """Delete the steps a failure does not need, in chunks of halving size, last first.

    Delta debugging on the schedule itself: every deletion leaves a valid
    schedule (a fault on an instance that is gone does nothing), and fewer
    steps make each later run cheaper. Stops when no single step can go or
    the time is up; returns what is left.
    """
    kept = _units(schedule)
    chunk = max(1, len(kept) // 2)
    while len(kept) > 1:
        deleted = False
        end = len(kept)
        while end > 0:
            if not time_left():
                return _steps(kept)
            start = max(0, end - chunk)
            candidate = kept[:start] + kept[end:]
            if candidate and fails(_steps(candidate)):
                kept, deleted = candidate, True
            end = start
        if chunk == 1 and not deleted:
            break
        chunk = max(1, min(chunk // 2, len(kept) // 2))
    return _steps(kept)


def place_at_events(
    schedule: Sequence[Step],
    events: Sequence[str],
    fails: Callable[[tuple[Step, ...]], bool],
    time_left: Callable[[], bool],
) -> tuple[Step, ...]:
    """Put each timed crash, cut or latency at an event instead, where that still fails.

    A timed fault that found a race landed in its window by luck, and its
    reproduction fails as rarely. The same fault right after the event the
    race needs (``After("committed")`` before the crash, in place of a pause
    or nothing) fails every time; it is also smaller (see :func:`size`). Each
    of ``events`` is tried in turn; the first whose candidate fails is kept.
    """
    kept = tuple(schedule)
    index = 0
    while index < len(kept):
        step = kept[index]
        placed = index > 0 and isinstance(kept[index - 1], After)
        if not isinstance(step, AT_ONCE) or placed:
            index += 1
            continue
        lead = index - 1 if index > 0 and isinstance(kept[index - 1], Pause | Settle) else index
        index += 1
        for event in events:
            if not time_left():
                return kept
            candidate = (*kept[:lead], After(event, step.instance), *kept[index - 1 :])
            if fails(candidate):
                kept, index = candidate, lead + 2  # past the After and its fault
                break
    return kept


def _units(schedule: Sequence[Step]) -> list[tuple[Step, ...]]:
    """The steps deletion takes as one: an After and the fault it places go together.

    Deleting only the After would turn a fault at an event into a timed one,
    which fails by luck: no simpler, and a worse reproduction.
    """
    units: list[tuple[Step, ...]] = []
    index = 0
    while index < len(schedule):
        width = 2 if isinstance(schedule[index], After) else 1
        units.append(tuple(schedule[index : index + width]))
        index += width
    return units


def _steps(units: Sequence[tuple[Step, ...]]) -> tuple[Step, ...]:
    return tuple(step for unit in units for step in unit)


def size(schedule: Sequence[Step]) -> tuple[int, int, int, int]:
    """How big a failing schedule is, smallest first (the order shrinking works towards).

    An After step counts for nothing but a plus: a fault at an event is not
    bigger than a timed one, and it fails every time rather than by luck.
    """
    messages = messages_of(schedule)
    faults = faults_of(schedule)
    placed = sum(isinstance(step, After) for step in schedule)
    return (
        len(schedule) - placed,
        len(faults),
        sum(len(m.value) for m in messages),
        len(faults) - placed,  # timed faults
    )


def smaller(best: RunResult | None, other: RunResult) -> RunResult:
    """The smaller of two failing runs by :func:`size` (``best`` when they tie)."""
    if best is None or size(other.schedule) < size(best.schedule):
        return other
    return best


class Shrinker:
    """One campaign's shrinking: its time bound, every failure seen, the smallest of them.

    The search threads share it: what it keeps is updated under its lock.
    ``stop`` is the campaign's: once set, no time is left.
    """

    def __init__(self, *, seconds: float, tries: int, stop: threading.Event) -> None:
        self.seconds = seconds
        self.tries = tries
        self.stop = stop
        self.started: float | None = None  # when the first failure was claimed
        self.smallest: RunResult | None = None
        # Every schedule seen failing (the first once, a shrink candidate twice), by its repr.
        self._failed: dict[str, RunResult] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """The first failure was found: shrinking's time runs from now."""
        self.started = time.monotonic()

    def time_left(self) -> bool:
        if self.stop.is_set() or self.started is None:
            return False
        return time.monotonic() - self.started <= self.seconds

    def keep(self, result: RunResult) -> None:
        """Remember a failing run by its schedule, and keep it if it is the smallest yet."""
        if result.ok:
            return
        with self._lock:
            self._failed[repr(result.schedule)] = result
            self.smallest = smaller(self.smallest, result)

    def seen_failing(self, schedule: Sequence[Step]) -> RunResult | None:
        """The run of ``schedule`` seen failing, if any (answered without running it again)."""
        return self._failed.get(repr(tuple(schedule)))

    def larger_failures(self, minimal: RunResult) -> list[RunResult]:
        """The other runs seen failing every check ``minimal`` fails, smallest first.

        Where a steadier reproduction than ``minimal`` may be (see
        ``Campaign._seek_steadier``): shrinking keeps what fails twice, which a
        race that fails half the time does.
        """
        failing = {failure.check for failure in minimal.failures()}
        with self._lock:
            seen = list(self._failed.values())
        others = [
            run
            for run in seen
            if run.schedule != minimal.schedule
            and failing <= {failure.check for failure in run.failures()}
        ]
        return sorted(others, key=lambda run: size(run.schedule))

    def judge(self, run: Callable[[], RunResult]) -> RunResult:
        """:func:`judge` a candidate with this campaign's ``tries``."""
        return judge(run, self.tries)

    def delete_steps(
        self, schedule: Sequence[Step], fails: Callable[[tuple[Step, ...]], bool]
    ) -> tuple[Step, ...]:
        """The first shrinking pass, before Hypothesis's: :func:`delete_steps` within the time.

        Steps first, then Hypothesis: its shrinker starts by simplifying each
        key and choice, which on slow examples (a rebalance takes seconds)
        spends the budget before it deletes anything.
        """
        return delete_steps(schedule, fails, self.time_left)

    def place_at_events(
        self,
        schedule: Sequence[Step],
        events: Sequence[str],
        fails: Callable[[tuple[Step, ...]], bool],
    ) -> tuple[Step, ...]:
        """The second pass: :func:`place_at_events` within the time."""
        return place_at_events(schedule, events, fails, self.time_left)
