"""``fuzz(flow)``: Hypothesis searches schedules on a real broker, then shrinks what fails.

Hypothesis drives the search from a worker thread; every example is one
run (a :class:`LiveRun`) on the caller's event loop, on connections reused
across examples, with fresh destinations and consumer group each time
(created ahead and deleted in the background: see
harness._isolation). The next example's run is entered (its taps up, its
service started) while Hypothesis is still choosing its schedule.
``workers`` > 1 runs that many searches at once, each a Hypothesis test in
a thread of its own with its own seed, on the same loop, connections and
isolation: the examples overlap one another's waits (pauses, silences,
round trips) on the machine's cores. The first failure stops the others
and is shrunk alone.

Real brokers are not deterministic: a failure may not repeat while it is
being shrunk. Shrinking deletes steps first (delta debugging on the
schedule), then hands over to Hypothesis's shrinker. A candidate must pass
several runs in a row to count as passing and fail twice to count as
failing; the fuzzer keeps the smallest failing run it has seen, so a flaky
failure ends the search with that run instead of an error, and then re-runs
the minimal schedule several times to say how reliably it fails.
"""

from __future__ import annotations

import asyncio
import threading
import time
import unittest
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import Flaky

import brokers
from harness._broker import BrokerAdapter, BrokerInfo
from harness._errors import BrokerUnavailable, HarnessError, InvalidArgument
from harness._flow import Flow, RunResult
from harness._history import History
from harness._instances import check_broker_restartable
from harness._isolation import Isolation
from harness._message import Message
from harness._redact import redact_url
from harness._report import FuzzReport as FuzzReport  # re-exported: harness._fuzz.FuzzReport
from harness._report import write_failure
from harness._runner import LiveRun, run_flow
from harness._schedule import Publish, Step, faults_of, messages_of
from harness.strategies import messages as message_lists
from harness.strategies import schedules


class _CampaignAborted(BaseException):
    """An example raised a harness error (a broker gone, a service that cannot start).

    A BaseException, so Hypothesis neither replays nor shrinks it: it would
    replay it on a dead broker and report the different failure it gets as
    flakiness. The campaign ends with the harness error itself.
    """

    def __init__(self, error: HarnessError) -> None:
        super().__init__(str(error))
        self.error = error


class _Stopped(BaseException):
    """Another worker found a failure first: this worker's search ends (not a failure)."""


class ChecksFailed(AssertionError):
    """An example's checks failed (Hypothesis shrinks on this)."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.report())
        self.result = result


@dataclass(frozen=True, slots=True)
class Example:
    """One example the fuzzer ran."""

    number: int
    schedule: tuple[Step, ...]
    ok: bool
    seconds: float
    phase: str


def _fail(result: RunResult) -> None:
    """Raise a failed example's ChecksFailed, always from here.

    Hypothesis tells failures apart by where they were raised: one place
    keeps a failure answered from memory the same failure as a run one.
    """
    raise ChecksFailed(result)


def _judge(run: Callable[[], RunResult], tries: int) -> RunResult:
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


def _delete_steps(
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
    kept = tuple(schedule)
    chunk = max(1, len(kept) // 2)
    while len(kept) > 1:
        deleted = False
        end = len(kept)
        while end > 0:
            if not time_left():
                return kept
            start = max(0, end - chunk)
            candidate = kept[:start] + kept[end:]
            if candidate and fails(candidate):
                kept, deleted = candidate, True
            end = start
        if chunk == 1 and not deleted:
            break
        chunk = max(1, min(chunk // 2, len(kept) // 2))
    return kept


def _size(schedule: Sequence[Step]) -> tuple[int, int, int]:
    """How big a failing schedule is, smallest first (the order shrinking works towards)."""
    messages = messages_of(schedule)
    return (len(schedule), len(faults_of(schedule)), sum(len(m.value) for m in messages))


def check_fuzz_arguments(
    *,
    max_examples: int,
    faults: bool | Sequence[str],
    producers: int,
    workers: int,
    shrink_tries: int = 3,
    reruns: int = 5,
) -> None:
    """Raise InvalidArgument, naming the fix, for arguments :func:`fuzz` cannot run with.

    Checked before any broker is leased or started (the CLI calls it first too).
    """
    if not isinstance(max_examples, int) or max_examples < 1:
        raise InvalidArgument(f"max_examples={max_examples!r} is invalid: give a count >= 1")
    if not isinstance(shrink_tries, int) or shrink_tries < 1:
        raise InvalidArgument(f"shrink_tries={shrink_tries!r} is invalid: give a count >= 1")
    if not isinstance(reruns, int) or reruns < 0:
        raise InvalidArgument(f"reruns={reruns!r} is invalid: give a count >= 0")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InvalidArgument(f"workers={workers!r} is invalid: give a count >= 1")
    if workers > 1 and faults:
        raise InvalidArgument(
            f"workers={workers} runs examples at once, which a fault schedule cannot share:"
            " a fault run holds fault proxies (Kafka has two, on fixed ports) and a broker"
            " restart hits every run; pass workers=1 with faults"
        )
    schedules(faults=faults, producers=producers)  # unknown fault kinds, producers out of range


async def fuzz(
    flow: Flow,
    *,
    max_examples: int = 100,
    seed: int | None = None,
    faults: bool | Sequence[str] = False,
    producers: int = 1,
    broker: BrokerInfo | None = None,
    shrink_seconds: float = 120.0,
    shrink_tries: int = 3,
    reruns: int = 5,
    replay_only: bool = False,
    database: Path | None = Path(".hypothesis") / "harness",
    report_dir: Path | None = Path("reports"),
    progress: Callable[[Example], None] | None = None,
    flow_reference: str | None = None,
    workers: int = 1,
) -> FuzzReport:
    """Search for a schedule that breaks ``flow``'s checks; shrink and re-run it.

    ``faults`` adds fault schedules (True for all kinds, or a list of kinds);
    ``producers`` > 1 publishes through that many concurrent producers.
    ``workers`` > 1 runs that many searches at once (fault-free campaigns
    only), ``max_examples`` shared between them, each with its own seed
    (``seed + n``); the first failure stops the others and is shrunk alone.
    Shrinking (for up to ``shrink_seconds``) first deletes the steps the
    failure does not need, then lets Hypothesis simplify what is left. A
    candidate counts as passing after ``shrink_tries`` passes in a row, and
    as failing once it has failed twice (so the minimal schedule is one that
    repeats, not one that failed once by luck). Failing examples are kept in
    Hypothesis's database under ``database`` (unseeded runs only: a ``seed``
    replays one exact search instead); ``replay_only`` runs just those
    and tried first next time. Without ``broker``, a local one is leased.
    """
    check_fuzz_arguments(
        max_examples=max_examples,
        faults=faults,
        producers=producers,
        workers=workers,
        shrink_tries=shrink_tries,
        reruns=reruns,
    )
    workers = 1 if replay_only else min(workers, max_examples)  # each has an example to run

    async def on(info: BrokerInfo) -> FuzzReport:
        if not isinstance(faults, bool) and "broker_restart" in faults:
            check_broker_restartable(info)  # now, not at the first example that draws one
        async with (
            brokers.adapter(info) as adapter,
            Isolation(adapter, flow.partitions, ahead=workers + 1) as isolation,
        ):
            return await _campaign(
                flow,
                adapter,
                isolation,
                info,
                max_examples=max_examples,
                seed=seed,
                faults=faults,
                producers=producers,
                shrink_seconds=shrink_seconds,
                shrink_tries=shrink_tries,
                reruns=reruns,
                replay_only=replay_only,
                database=database,
                report_dir=report_dir,
                progress=progress,
                flow_reference=flow_reference,
                workers=workers,
            )

    if broker is not None:
        return await on(broker)
    with brokers.provision(flow.broker) as leased:
        return await on(leased)


async def _campaign(
    flow: Flow,
    adapter: BrokerAdapter,
    isolation: Isolation,
    broker: BrokerInfo,
    *,
    max_examples: int,
    seed: int | None,
    faults: bool | Sequence[str],
    producers: int,
    shrink_seconds: float,
    shrink_tries: int,
    reruns: int,
    replay_only: bool,
    database: Path | None,
    report_dir: Path | None,
    progress: Callable[[Example], None] | None,
    flow_reference: str | None,
    workers: int,
) -> FuzzReport:
    loop = asyncio.get_running_loop()
    messages = flow.messages if flow.messages is not None else message_lists()
    strategy = schedules(messages=messages, faults=faults, producers=producers)
    started = time.monotonic()
    state: dict[str, Any] = {
        "count": 0,
        "best": None,
        "first_failure": None,
        "first_failure_at": None,
        "finder": None,  # the thread of the worker whose failure is being shrunk
    }
    shared = threading.Lock()  # the workers' threads update ``state`` under it
    stop = threading.Event()  # the search is over, or the caller cancelled it: end quickly

    in_flight: set[asyncio.Task[Any]] = set()
    # The next examples' runs, entered (destinations, taps, the service started)
    # while Hypothesis chooses their schedules: instance 0 starts before the
    # first step whatever the schedule, and the worker's last example has ended.
    # Any worker takes any of them: a run is not tied to a schedule until played.
    entering: list[asyncio.Task[LiveRun]] = []

    async def enter() -> LiveRun:
        live = LiveRun(
            flow, broker=broker, adapter=adapter, faults=bool(faults), isolation=isolation
        )
        try:
            await live.__aenter__()  # leaves nothing behind if it fails
        except HarnessError as exc:
            live.keep_partial(exc, None)
            raise
        return live

    def enter_next() -> None:
        if not stop.is_set():
            task = asyncio.create_task(enter(), name="harness: next example")
            entering.append(task)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    async def leave_unused() -> None:
        """Stop the run entered for an example that never came."""
        for task in entering:
            # Let it finish entering (bounded by the service's start timeout): a
            # client cancelled halfway through connecting may leave its socket behind.
            [live] = await asyncio.gather(task, return_exceptions=True)
            if isinstance(live, LiveRun):
                await live.__aexit__(None, None, None)
        entering.clear()

    async def tracked(schedule: list[Step]) -> RunResult:
        """One example on the loop, known to the campaign so a cancel can wait for its cleanup."""
        if stop.is_set():
            # Submitted by the search thread as the campaign was being cancelled:
            # run nothing, or it would create destinations after the cleanup.
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        in_flight.add(task)
        try:
            live = await (entering.pop() if entering else enter())
            result = await live.play(schedule)  # tears the run down, whatever happens
            enter_next()
            return result
        finally:
            in_flight.discard(task)

    # Every schedule seen failing (the first once, a shrink candidate twice), by its repr.
    failed: dict[str, RunResult] = {}

    def run_once(schedule: Sequence[Step]) -> RunResult:
        """One run of ``schedule`` on the loop, from a search thread."""
        with shared:
            state["count"] += 1
        future = asyncio.run_coroutine_threadsafe(tracked(list(schedule)), loop)
        try:
            return future.result(timeout=flow.timeout * 3 + 60)
        except HarnessError as error:
            stop.set()
            raise _CampaignAborted(error) from None
        except BaseException:
            future.cancel()
            raise

    def shrink_time_left() -> bool:
        return not stop.is_set() and time.monotonic() - state["first_failure"] <= shrink_seconds

    def tried(schedule: Sequence[Step], phase: str) -> RunResult:
        """Run a search example once, or judge a shrink candidate; keep what fails."""
        began = time.monotonic()
        if phase == "search":
            result = run_once(schedule)
        else:
            result = _judge(lambda: run_once(schedule), shrink_tries)
        if progress is not None:
            took = time.monotonic() - began
            example = Example(state["count"], result.schedule, result.ok, took, phase)
            loop.call_soon_threadsafe(progress, example)
        if not result.ok:
            with shared:
                failed[repr(result.schedule)] = result
                state["best"] = _smaller(state["best"], result)
        return result

    def found_first() -> bool:
        """Claim the first failure for this worker's thread; False if another has."""
        with shared:
            if state["finder"] is not None:
                return False
            state["first_failure"] = time.monotonic()
            state["first_failure_at"] = state["count"]
            state["finder"] = threading.get_ident()
            return True

    def run_one(schedule: list[Step]) -> None:
        """Hypothesis's test: raise ChecksFailed when the schedule fails."""
        if stop.is_set():
            return
        if state["finder"] is not None:
            if state["finder"] != threading.get_ident():
                raise _Stopped  # another worker is shrinking its failure
            seen_failing = failed.get(repr(tuple(schedule)))
            if seen_failing is not None:
                # Answered without running it again: Hypothesis replays a failure
                # before shrinking it and gives up on shrinking at once if that
                # replay passes, as a race that shows one time in five often does.
                # How reliably the minimal schedule fails is what the re-runs
                # after the search measure.
                _fail(seen_failing)
            if not shrink_time_left():
                return  # out of shrinking time: what was not seen failing counts as passing
            result = tried(schedule, "shrink")
        else:
            result = tried(schedule, "search")
            if not result.ok:
                if not found_first():
                    raise _Stopped  # found at the same time as another worker's: kept as seen
                # Steps first, then Hypothesis: its shrinker starts by simplifying
                # each key and choice, which on slow examples (a rebalance takes
                # seconds) spends the budget before it deletes anything.
                _delete_steps(
                    result.schedule,
                    lambda candidate: not tried(candidate, "shrink").ok,
                    shrink_time_left,
                )
        if not result.ok:
            _fail(result)

    # The database key: the flow's, the same for every worker (saved failures are shared).
    run_one._hypothesis_internal_add_digest = flow.label.encode()  # type: ignore[attr-defined]

    def search(worker: int) -> Callable[[], None]:
        """Worker ``worker``'s Hypothesis test: its share of the examples, its own seed."""
        replayed = (Phase.explicit, Phase.reuse) if worker == 0 else ()  # saved ones: once
        test = settings(
            max_examples=max_examples // workers + (worker < max_examples % workers),
            deadline=None,
            phases=(*replayed, Phase.shrink)
            if replay_only
            else (*replayed, Phase.generate, Phase.shrink),
            database=DirectoryBasedExampleDatabase(str(database)) if database else None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            report_multiple_bugs=False,
            derandomize=False,
        )(given(strategy)(run_one))
        if seed is not None:
            test = hypothesis_seed(seed + worker)(test)
        return test

    async def searches() -> None:
        """Run every worker's search in a thread of its own; raise what ended them."""
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="harness-search")
        try:
            ended = await asyncio.gather(
                *(loop.run_in_executor(pool, search(n)) for n in range(workers)),
                return_exceptions=True,
            )
        finally:
            pool.shutdown(wait=False)  # a cancelled search's threads end on ``stop``
        raised = [e for e in ended if isinstance(e, BaseException) and not isinstance(e, _Stopped)]
        # A harness error ends the campaign whichever worker met it.
        raised.sort(key=lambda e: not isinstance(e, _CampaignAborted))
        if raised:
            raise raised[0]

    # Import the driver probes here, not first in the worker thread: CPython 3.11
    # can fail compiling on two threads at once ("AST constructor recursion depth").
    if flow.probes:
        brokers.install_client_probes(broker.kind)
    brokers.detach_driver_randomness(broker.kind)
    flaky = False
    try:
        try:
            await searches()
        except asyncio.CancelledError:
            # Ctrl-C or a cancelled caller: end the search, and let the example in
            # flight delete its destinations while the adapter is still open.
            stop.set()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise
        finally:
            stop.set()  # the search is over: enter no next example
            await leave_unused()
    except _CampaignAborted as aborted:
        elapsed = time.monotonic() - started
        raise await _campaign_error(
            aborted.error, flow, broker, state["count"], elapsed, seed, report_dir
        ) from None
    except ChecksFailed as failure:
        state["best"] = _smaller(state["best"], failure.result)
    except Flaky:
        flaky = True  # the failure did not repeat: report the smallest one seen
        if state["best"] is None:
            raise
    except unittest.SkipTest:
        pass  # replay_only with nothing saved: Hypothesis ran no example
    except BaseException as exc:
        found = checks_failed_in(exc)
        if found is None:
            raise
        state["best"] = _smaller(state["best"], found.result)
    elapsed = time.monotonic() - started
    report = FuzzReport(
        flow=flow,
        examples=state["count"],
        elapsed=elapsed,
        seed=seed,
        minimal=state["best"],
        first_failure_at=state["first_failure_at"],
        flaky=flaky,
        flow_reference=flow_reference,
    )
    if report.minimal is not None:
        for _ in range(reruns):
            again = await run_flow(
                flow,
                report.minimal.schedule,
                broker=broker,
                adapter=adapter,
                isolation=isolation,
            )
            report.reruns.append(not again.ok)
        if report_dir is not None:
            write_failure(report, report_dir)
    return report


async def _campaign_error(
    error: HarnessError,
    flow: Flow,
    broker: BrokerInfo,
    examples: int,
    elapsed: float,
    seed: int | None,
    report_dir: Path | None,
) -> HarnessError:
    """The error that ends a campaign, naming a lost broker, with the partial history kept."""
    # Whatever failed first (a service, a tap, a publish), say so if the broker is gone.
    try:
        await asyncio.to_thread(brokers.check_reachable, broker, timeout=5.0)
    except BrokerUnavailable as lost:
        replacement = BrokerUnavailable(
            f"the {broker.kind} broker at {redact_url(broker.url)} stopped answering during"
            f" example {examples} of the campaign ({error}); {lost}"
        )
        replacement.history, replacement.__cause__ = error.history, error
        error = replacement
    error.add_note(
        f"fuzz {flow.label}: {examples} examples in {elapsed:.1f} s before this (seed {seed})"
    )
    if report_dir is not None and isinstance(error.history, History):
        error.history_path = error.history.dump(report_dir / f"{flow.label}-partial.json")
        error.add_note(f"partial history: {error.history_path}")
    return error


def _smaller(best: RunResult | None, other: RunResult) -> RunResult:
    if best is None or _size(other.schedule) < _size(best.schedule):
        return other
    return best


def checks_failed_in(exc: BaseException) -> ChecksFailed | None:
    """Hypothesis may wrap our failure (exception groups, notes); find it."""
    if isinstance(exc, ChecksFailed):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = checks_failed_in(inner)
            if found is not None:
                return found
    if exc.__cause__ is not None:
        return checks_failed_in(exc.__cause__)
    return None


def publishes(messages: Sequence[Message]) -> list[Step]:
    """A schedule that only publishes ``messages``."""
    return [Publish(m) for m in messages]
