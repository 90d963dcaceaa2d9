"""``fuzz(flow)``: a :class:`Campaign` lets Hypothesis search schedules on a real broker.

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
and is shrunk alone, by the campaign's :class:`~message_flow_harness._shrink.Shrinker`
(how a failure that may not repeat is shrunk is told there). A flaky
failure ends the search with the smallest failing run seen instead of an
error; the campaign then re-runs the minimal schedule several times to say
how reliably it fails (seeking a steadier, larger one among the failures
seen when it rarely does), and writes the report (harness._report). A harness
error once a failure is found (a broker lost while shrinking or re-running,
destinations or a group the cleanup could not delete) never replaces the
finding: it is kept in the report's ``errors``, beside it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import unittest
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.database import ExampleDatabase
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter

from message_flow_harness import brokers
from message_flow_harness._broker import BrokerAdapter, BrokerInfo
from message_flow_harness._errors import BrokerUnavailable, HarnessError, InvalidArgument
from message_flow_harness._example_database import LOCAL, Database, open_database
from message_flow_harness._fault_model import campaign_kinds, within_model
from message_flow_harness._flow import Flow, RunResult
from message_flow_harness._history import History
from message_flow_harness._instances import check_broker_restartable
from message_flow_harness._isolation import Isolation
from message_flow_harness._message import Message
from message_flow_harness._redact import redact_url
from message_flow_harness._report import (
    FuzzReport as FuzzReport,
)  # re-exported: harness._fuzz.FuzzReport
from message_flow_harness._report import Unsteady, write_failure
from message_flow_harness._runner import LiveRun, run_flow
from message_flow_harness._schedule import Publish, Step
from message_flow_harness._shard import Shard
from message_flow_harness._shrink import Shrinker, steadier
from message_flow_harness._text import plural
from message_flow_harness._triggers import events_seen
from message_flow_harness.strategies import schedules

#: Where Hypothesis's own reports go (its "Falsifying example", its "add @seed(...) to
#: this test"): a campaign has no test to add it to and says itself how to re-run.
hypothesis_log = logging.getLogger("message_flow_harness.hypothesis")

#: Seeds an unseeded campaign chooses from: short enough to read out and type back.
SEEDS = 1_000_000


def choose_seed() -> int:
    """A seed for a campaign that was given none (printed, so the search can be repeated)."""
    return random.SystemRandom().randrange(SEEDS)


class _CampaignAborted(BaseException):
    """An example raised a harness error (a broker gone, a service that cannot start).

    A BaseException, so Hypothesis neither replays nor shrinks it: it would
    replay it on a dead broker and report the different failure it gets as
    flakiness. The campaign ends with the harness error itself.
    """

    def __init__(self, error: HarnessError) -> None:
        super().__init__(str(error))
        self.error = error


#: How often a search thread waiting for a run checks that the campaign still runs.
_WAIT_SLICE_S = 0.25


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
    phase: str  # "search", "shrink", or "re-run" (the minimal schedule, after the search)


def _fail(result: RunResult) -> None:
    """Raise a failed example's ChecksFailed, always from here.

    Hypothesis tells failures apart by where they were raised: one place
    keeps a failure answered from memory the same failure as a run one.
    """
    raise ChecksFailed(result)


def check_fuzz_arguments(
    flow: Flow,
    *,
    max_examples: int,
    faults: bool | Sequence[str] | None,
    producers: int,
    workers: int,
    shrink_tries: int = 3,
    reruns: int = 5,
    shard: Shard | None = None,
) -> tuple[str, ...]:
    """The fault kinds the campaign draws; InvalidArgument, naming the fix, for arguments
    :func:`fuzz` cannot run with.

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
    kinds = campaign_kinds(flow.faults, faults, flow=f"flow {flow.label}")
    if workers > 1 and kinds:
        drawn = "the flow's fault model draws" if faults is None else "it would draw"
        raise InvalidArgument(
            f"workers={workers} runs examples at once, which a fault schedule cannot share:"
            " a fault run holds fault proxies (Kafka has two, on fixed ports) and a broker"
            f" restart hits every run, and {drawn} {', '.join(kinds)}; pass workers=1, or"
            " faults=False"
        )
    if shard is not None:
        shard.examples(max_examples)  # every shard has an example to run
    schedules(flow=flow, faults=list(kinds), producers=producers)  # producers out of range
    return kinds


async def fuzz(
    flow: Flow,
    *,
    max_examples: int = 100,
    seed: int | None = None,
    faults: bool | Sequence[str] | None = None,
    producers: int = 1,
    broker: BrokerInfo | None = None,
    shrink_seconds: float = 120.0,
    shrink_tries: int = 3,
    reruns: int = 5,
    replay_only: bool = False,
    database: Database = LOCAL,
    report_dir: str | os.PathLike[str] | None = Path("reports"),
    progress: Callable[[Example], None] | None = None,
    flow_reference: str | None = None,
    workers: int = 1,
    shard: tuple[int, int] = (1, 1),
) -> FuzzReport:
    """Search for a schedule that breaks ``flow``'s checks; shrink and re-run it.

    ``faults`` are the fault kinds to draw, within the flow's fault model
    (``Flow(faults=Faults(...))``): None (the default) draws every kind the
    model allows (none for a flow without one), True every kind it allows
    (without a model: crash, join, latency, cut), False none, and a list of
    kinds those (a kind the model rules out is an error naming the option).
    ``producers`` > 1 publishes through that many concurrent producers.
    ``workers`` > 1 runs that many searches at once (fault-free campaigns
    only), ``max_examples`` shared between them, each with its own seed
    (``seed + n``); the first failure stops the others and is shrunk alone.
    Shrinking (for up to ``shrink_seconds``) first deletes the steps the
    failure does not need, then lets Hypothesis simplify what is left. A
    candidate counts as passing after ``shrink_tries`` passes in a row, and
    as failing once it has failed twice (so the minimal schedule is one that
    repeats, not one that failed once by luck). Failing examples are kept in
    Hypothesis's example ``database`` and tried first next time (unseeded
    runs only: a ``seed`` repeats one exact search instead): a directory, a
    Redis URL (``redis://host:6379/0``), ``github:OWNER/REPO`` (a CI job's
    uploaded artifact, read-only, beside the local directory) or an
    ``ExampleDatabase``; ``replay_only`` runs just those. ``shard=(i, n)``
    runs the i-th of n independent searches that together make the campaign
    (one per CI job; see harness._shard): its share of ``max_examples``,
    seeds numbered apart from the other shards', the database's failures
    replayed first. An unseeded run chooses its seed (the
    report's ``seed``): passing it back repeats the search. Without ``broker``,
    a local one is leased. ``progress`` hears of every example, re-runs too.
    """
    split = Shard(*shard)
    kinds = check_fuzz_arguments(
        flow,
        max_examples=max_examples,
        faults=faults,
        producers=producers,
        workers=workers,
        shrink_tries=shrink_tries,
        reruns=reruns,
        shard=split,
    )
    max_examples = split.examples(max_examples)
    workers = 1 if replay_only else min(workers, max_examples)  # each has an example to run
    examples_database = open_database(database)
    report_dir = None if report_dir is None else Path(report_dir)

    async def on(info: BrokerInfo) -> FuzzReport:
        if "broker_restart" in kinds:
            check_broker_restartable(info)  # now, not at the first example that draws one
        campaign: Campaign | None = None
        try:
            async with (
                brokers.adapter(info) as adapter,
                Isolation(
                    adapter,
                    flow.partitions,
                    ahead=workers + 1,
                    queue_type=flow.queue_type,
                    queue_arguments=flow.queue_arguments,
                ) as isolation,
            ):
                campaign = Campaign(
                    flow,
                    adapter,
                    isolation,
                    info,
                    max_examples=max_examples,
                    seed=seed,
                    faults=kinds,
                    producers=producers,
                    shrink_seconds=shrink_seconds,
                    shrink_tries=shrink_tries,
                    reruns=reruns,
                    replay_only=replay_only,
                    database=examples_database,
                    shard=split,
                    report_dir=report_dir,
                    progress=progress,
                    flow_reference=flow_reference,
                    workers=workers,
                )
                return await campaign.run()
        except Exception as error:
            # Cleanup (leftover groups, a lost broker) failing after a finding: the
            # finding stands, the error goes beside it.
            if campaign is None or campaign.found is None:
                raise
            return campaign.despite(error)

    if broker is not None:
        return await on(broker)
    with brokers.provision(flow.broker) as leased:
        return await on(leased)


class Campaign:
    """One fuzz campaign on an open adapter: the search, then the minimal failure's re-runs.

    Its Hypothesis tests run in threads of their own (one per worker) and play
    each example on the campaign's event loop; the run state they share lives
    in these attributes, counts under ``_lock``. What fails goes to
    ``shrinker``, which keeps the smallest failure and bounds the shrinking.
    """

    def __init__(
        self,
        flow: Flow,
        adapter: BrokerAdapter,
        isolation: Isolation,
        broker: BrokerInfo,
        *,
        max_examples: int,
        seed: int | None,
        faults: Sequence[str],
        producers: int,
        shrink_seconds: float,
        shrink_tries: int,
        reruns: int,
        replay_only: bool,
        database: Database,
        report_dir: Path | None,
        progress: Callable[[Example], None] | None,
        flow_reference: str | None,
        workers: int,
        shard: Shard | None = None,
    ) -> None:
        self.flow, self.adapter, self.isolation, self.broker = flow, adapter, isolation, broker
        self.max_examples, self.faults = max_examples, faults
        # A given seed replays one exact search, without the database's saved failures
        # first; an unseeded campaign chooses one (reported) and keeps the database.
        self.seeded = seed is not None
        self.seed = seed if seed is not None else choose_seed()
        self.reruns, self.replay_only, self.workers = reruns, replay_only, workers
        self.database: ExampleDatabase | None = open_database(database)
        self.report_dir, self.shard = report_dir, shard or Shard()
        self.progress, self.flow_reference = progress, flow_reference
        self.strategy = schedules(flow=flow, faults=list(faults), producers=producers)
        self.loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        self.examples = 0  # examples run so far, search and shrinking
        self.first_failure_at: int | None = None  # the example number that first failed
        self.finder: int | None = None  # the thread of the worker whose failure is being shrunk
        self._lock = threading.Lock()  # the workers' threads update the counts above under it
        self.stop = threading.Event()  # the search is over, or the caller cancelled it: end quickly
        self.shrinker = Shrinker(seconds=shrink_seconds, tries=shrink_tries, stop=self.stop)
        # Every example's task and the next runs being entered, so a cancel can wait for them.
        self.in_flight: set[asyncio.Task[Any]] = set()
        # The next examples' runs, entered (destinations, taps, the service started)
        # while Hypothesis chooses their schedules: instance 0 starts before the
        # first step whatever the schedule, and the worker's last example has ended.
        # Any worker takes any of them: a run is not tied to a schedule until played.
        self.entering: list[asyncio.Task[LiveRun]] = []
        self.found: FuzzReport | None = None  # the report once a failure is found

    async def run(self) -> FuzzReport:
        """Search, shrink the first failure, re-run the minimal one; the report.

        A harness error after a failure was found (while shrinking or re-running)
        ends the campaign with the finding, the error a note beside it.
        """
        # Import the driver probes here, not first in the worker thread: CPython 3.11
        # can fail compiling on two threads at once ("AST constructor recursion depth").
        if self.flow.probes:
            brokers.install_client_probes(self.broker.kind)
        brokers.detach_driver_randomness(self.broker.kind)
        flaky = False
        aborted: HarnessError | None = None
        try:
            await self._search()
        except _CampaignAborted as ended:
            error = await self._ended_by(ended.error)
            if self.shrinker.smallest is None:
                raise error from None
            aborted = error  # while shrinking: the smallest failure seen stands
        except ChecksFailed as failure:
            self.shrinker.keep(failure.result)
        except Flaky:
            flaky = True  # the failure did not repeat: report the smallest one seen
            if self.shrinker.smallest is None:
                raise
        except unittest.SkipTest:
            pass  # replay_only with nothing saved: Hypothesis ran no example
        except BaseException as exc:
            found = checks_failed_in(exc)
            if found is None:
                raise
            self.shrinker.keep(found.result)
        report = FuzzReport(
            flow=self.flow,
            examples=self.examples,
            elapsed=time.monotonic() - self.started,
            seed=self.seed,
            minimal=self.shrinker.smallest,
            first_failure_at=self.first_failure_at,
            flaky=flaky,
            flow_reference=self.flow_reference,
        )
        if report.minimal is None:
            return report
        self.found = report
        if aborted is not None:
            report.add_error(aborted)  # no re-runs: what ended the search would end them
        else:
            try:
                await self._rerun(report.minimal, report.reruns)
                await self._seek_steadier(report)
            except HarnessError as error:
                report.add_error(await self._ended_by(error))
        self._write(report)
        return report

    def despite(self, error: Exception) -> FuzzReport:
        """The finding, with ``error`` (raised after it, say by the cleanup) as a note."""
        report = self.found
        assert report is not None
        report.add_error(error)
        self._write(report)  # again: the JSON and the HTML carry the note too
        return report

    def _write(self, report: FuzzReport) -> None:
        if self.report_dir is not None:
            write_failure(report, self.report_dir)

    # --- the search: Hypothesis's tests in threads --------------------------------------

    async def _search(self) -> None:
        """Every worker's search; on the way out, cancel or leave the runs in flight."""
        try:
            await self._run_workers()
        except asyncio.CancelledError:
            # Ctrl-C or a cancelled caller: end the search, and let the example in
            # flight delete its destinations while the adapter is still open.
            self.stop.set()
            for task in self.in_flight:
                task.cancel()
            await asyncio.gather(*self.in_flight, return_exceptions=True)
            raise
        finally:
            self.stop.set()  # the search is over: enter no next example
            await self._leave_unused_runs()

    async def _run_workers(self) -> None:
        """Run every worker's search in a thread of its own; raise what ended them."""
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="harness-search")
        try:
            ended = await asyncio.gather(
                *(
                    self.loop.run_in_executor(pool, self._worker_search(n))
                    for n in range(self.workers)
                ),
                return_exceptions=True,
            )
        finally:
            pool.shutdown(wait=False)  # a cancelled search's threads end on ``stop``
        raised = [e for e in ended if isinstance(e, BaseException) and not isinstance(e, _Stopped)]
        # A harness error ends the campaign whichever worker met it.
        raised.sort(key=lambda e: not isinstance(e, _CampaignAborted))
        if raised:
            raise raised[0]

    def _worker_search(self, worker: int) -> Callable[[], None]:
        """Worker ``worker``'s Hypothesis test: its share of the examples, its own seed.

        Its seed is the campaign's plus its number among every shard's workers.
        """

        def test_schedule(schedule: list[Step]) -> None:
            self._hypothesis_test(schedule)

        # The database key: the flow's, the same for every worker (saved failures are shared).
        test_schedule._hypothesis_internal_add_digest = self.flow.label.encode()  # type: ignore[attr-defined]
        replayed = (Phase.explicit, Phase.reuse) if worker == 0 else ()  # saved ones: once
        workers, max_examples = self.workers, self.max_examples
        # @seed drops the database; the settings applied over it put it back when wanted.
        number = self.shard.search_number(worker)
        seeded = hypothesis_seed(self.seed + number)(given(self.strategy)(test_schedule))
        saving = self.database is not None and (self.replay_only or not self.seeded)
        test = settings(
            max_examples=max_examples // workers + (worker < max_examples % workers),
            deadline=None,
            phases=(*replayed, Phase.shrink)
            if self.replay_only
            else (*replayed, Phase.generate, Phase.shrink),
            database=self.database if saving else None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            report_multiple_bugs=False,
            derandomize=False,
        )(seeded)

        def search() -> None:
            with with_reporter(_to_log):  # per thread: each worker's own reports
                test()

        return search

    def _hypothesis_test(self, schedule: list[Step]) -> None:
        """Hypothesis's test function: raise ChecksFailed when the schedule fails."""
        if self.stop.is_set():
            return
        if self.finder is not None:
            if self.finder != threading.get_ident():
                raise _Stopped  # another worker is shrinking its failure
            seen_failing = self.shrinker.seen_failing(schedule)
            if seen_failing is not None:
                # Answered without running it again: Hypothesis replays a failure
                # before shrinking it and gives up on shrinking at once if that
                # replay passes, as a race that shows one time in five often does.
                # How reliably the minimal schedule fails is what the re-runs
                # after the search measure.
                _fail(seen_failing)
            if not self.shrinker.time_left():
                return  # out of shrinking time: what was not seen failing counts as passing
            result = self._judge_candidate(schedule)
        else:
            result = self._search_example(schedule)
            if not result.ok:
                if not self._claim_first_failure():
                    raise _Stopped  # found at the same time as another worker's: kept as seen

                # Deleting steps, then placing timed faults at events, keeps every
                # smaller failure it judges; Hypothesis's shrinker then starts from
                # the failure raised below.
                def fails(candidate: tuple[Step, ...]) -> bool:
                    if not within_model(self.flow.faults, candidate):
                        return False  # a deployment fact, not a finding: never run
                    return not self._judge_candidate(candidate).ok

                kept = self.shrinker.delete_steps(result.schedule, fails)
                self.shrinker.place_at_events(kept, events_seen(self.flow), fails)
        if not result.ok:
            _fail(result)

    def _claim_first_failure(self) -> bool:
        """Claim the first failure for this worker's thread; False if another has."""
        with self._lock:
            if self.finder is not None:
                return False
            self.shrinker.start()
            self.first_failure_at = self.examples
            self.finder = threading.get_ident()
            return True

    # --- one example, from a search thread ----------------------------------------------

    def _search_example(self, schedule: Sequence[Step]) -> RunResult:
        """A search example: one run of ``schedule``."""
        began = time.monotonic()
        return self._reported(self._run_example(schedule), began, "search")

    def _judge_candidate(self, schedule: Sequence[Step]) -> RunResult:
        """A shrink candidate: re-run ``schedule`` until the shrinker can judge it."""
        began = time.monotonic()
        judged = self.shrinker.judge(lambda: self._run_example(schedule))
        return self._reported(judged, began, "shrink")

    def _reported(self, result: RunResult, began: float, phase: str) -> RunResult:
        """Tell ``progress`` about an example (on the loop); give a failure to the shrinker."""
        if self.progress is not None:
            took = time.monotonic() - began
            example = Example(self.examples, result.schedule, result.ok, took, phase)
            self.loop.call_soon_threadsafe(self.progress, example)
        self.shrinker.keep(result)
        return result

    def _run_example(self, schedule: Sequence[Step]) -> RunResult:
        """One run of ``schedule`` on the loop, waited for from a search thread, counted."""
        with self._lock:
            self.examples += 1
        future = asyncio.run_coroutine_threadsafe(self._play(list(schedule)), self.loop)
        try:
            return self._outcome(future, within=self.flow.timeout * 3 + 60)
        except HarnessError as error:
            self.stop.set()
            raise _CampaignAborted(error) from None
        except BaseException:
            future.cancel()
            raise

    def _outcome(self, future: Future[RunResult], *, within: float) -> RunResult:
        """``future``'s result, waited for in slices: a cancelled campaign's loop may end first.

        A run submitted just as Ctrl-C ends the campaign can find the loop gone:
        its future then never resolves, and a search thread waiting out the
        whole bound would hold the process's exit (threads are joined at exit).
        """
        deadline = time.monotonic() + within
        while True:
            try:
                return future.result(
                    timeout=min(_WAIT_SLICE_S, max(0.0, deadline - time.monotonic()))
                )
            except TimeoutError:
                if future.done():
                    raise  # the run's own TimeoutError
                if self.stop.is_set() and not self.loop.is_running():
                    future.cancel()
                    raise _Stopped from None
                if time.monotonic() >= deadline:
                    raise

    # --- on the loop: the live runs ------------------------------------------------------

    async def _play(self, schedule: list[Step]) -> RunResult:
        """Play ``schedule`` on an entered run (in ``in_flight``: a cancel awaits its cleanup)."""
        if self.stop.is_set():
            # Submitted by the search thread as the campaign was being cancelled:
            # run nothing, or it would create destinations after the cleanup.
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        try:
            live = await (self.entering.pop() if self.entering else self._enter_run())
            result = await live.play(schedule)  # tears the run down, whatever happens
            self._enter_next_run()
            return result
        finally:
            self.in_flight.discard(task)

    async def _enter_run(self) -> LiveRun:
        """A run entered (destinations, taps, the service started), ready for a schedule."""
        live = LiveRun(
            self.flow,
            broker=self.broker,
            adapter=self.adapter,
            faults=bool(self.faults),
            isolation=self.isolation,
        )
        try:
            await live.__aenter__()  # leaves nothing behind if it fails
        except HarnessError as exc:
            live.keep_partial(exc, None)
            raise
        return live

    def _enter_next_run(self) -> None:
        """Start entering the next example's run while Hypothesis chooses its schedule."""
        if not self.stop.is_set():
            task = asyncio.create_task(self._enter_run(), name="harness: next example")
            self.entering.append(task)
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _leave_unused_runs(self) -> None:
        """Stop the runs entered for examples that never came."""
        for task in self.entering:
            # Let it finish entering (bounded by the service's start timeout): a
            # client cancelled halfway through connecting may leave its socket behind.
            [live] = await asyncio.gather(task, return_exceptions=True)
            if isinstance(live, LiveRun):
                await live.__aexit__(None, None, None)
        self.entering.clear()

    # --- after the search -----------------------------------------------------------------

    async def _rerun(
        self, failing: RunResult, failed_again: list[bool], *, give_up_after: int | None = None
    ) -> RunResult:
        """Re-run a failing run's schedule ``reruns`` times: how reliably it fails.

        Appends to ``failed_again`` (True where it failed again); stops early
        after ``give_up_after`` passes. Returns the last failing run
        (``failing`` if none failed again).
        """
        last_failing = failing
        for number in range(1, self.reruns + 1):
            began = time.monotonic()
            again = await run_flow(
                self.flow,
                failing.schedule,
                broker=self.broker,
                adapter=self.adapter,
                isolation=self.isolation,
            )
            failed_again.append(not again.ok)
            if not again.ok:
                last_failing = again
            if self.progress is not None:
                took = time.monotonic() - began
                self.progress(Example(number, again.schedule, again.ok, took, "re-run"))
            if give_up_after is not None and failed_again.count(False) >= give_up_after:
                break
        return last_failing

    async def _seek_steadier(self, report: FuzzReport) -> None:
        """A minimal schedule that failed again in few re-runs: seek a steadier one.

        Among the larger failures seen (see :func:`steadier`), within the
        shrinking's time again; the smaller one stays in the report.
        """
        minimal = report.minimal
        if minimal is None or report.flaky:
            return
        deadline = time.monotonic() + self.shrinker.seconds
        found = await steadier(
            report.reruns,
            self.shrinker.larger_failures(minimal),
            lambda run, into, give_up: self._rerun(run, into, give_up_after=give_up),
            runs=self.reruns,
            time_left=lambda: time.monotonic() <= deadline,
        )
        if found is not None:
            report.smaller_unsteady = Unsteady(
                minimal.schedule, sum(report.reruns), len(report.reruns)
            )
            report.minimal, report.reruns = found

    async def _ended_by(self, error: HarnessError) -> HarnessError:
        """The error that ends the campaign, naming a lost broker, with the partial history kept."""
        elapsed = time.monotonic() - self.started
        broker, flow, examples = self.broker, self.flow, self.examples
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
            f"fuzz {flow.label}: {plural(examples, 'example')} in {elapsed:.1f} s before this"
            f" (seed {self.seed})"
        )
        if self.report_dir is not None and isinstance(error.history, History):
            error.history_path = error.history.dump(self.report_dir / f"{flow.label}-partial.json")
            error.add_note(f"partial history: {error.history_path}")
        return error


def _to_log(text: object) -> None:
    hypothesis_log.debug("%s", text)


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
