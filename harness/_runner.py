"""One run of a flow: fresh destinations, the service, the inputs, the history, the checks.

Steps, each bounded: take isolated destinations (unique names per run) →
tap output, dead letters and input deliveries, and commit the start of the
input for the run's group (Kafka, unless a first deploy) → start the service
with client-side probes → wait until it consumes (see harness._readiness) →
publish the inputs, stamped with harness ids (a run of consecutive publishes
as one burst) → wait for quiescence → stop the service → stop taps, delete
destinations → run checks (lost inputs noted with their likely cause).
Cleanup runs whatever happened, so a failing or cancelled run leaves nothing.
Under ``Flow(topology=...)`` the run has a vhost of its own and an adapter
on it: it publishes where the topology says, and taps an exchange through a
binding once the service consumes (it declares its exchanges on start).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

from message_flow_harness import brokers
from message_flow_harness._broker import BrokerAdapter, BrokerInfo, PublishReceipt
from message_flow_harness._causes import handlers_died, with_causes
from message_flow_harness._checks import Anomaly, Verdict
from message_flow_harness._correlation import Correlation, Correlator
from message_flow_harness._errors import DestinationError, HarnessError, InvalidArgument
from message_flow_harness._fault_model import check_suffered
from message_flow_harness._flow import Flow, RunResult
from message_flow_harness._history import History, Kind
from message_flow_harness._instances import (
    Instance,
    Instances,
    check_broker_restartable,
    instance_name,
)
from message_flow_harness._isolation import Isolation
from message_flow_harness._logs import attributed, capturing
from message_flow_harness._message import HARNESS_ID_HEADER, Endpoints, Message
from message_flow_harness._pace import RunPace
from message_flow_harness._readiness import await_ready
from message_flow_harness._schedule import (
    After,
    BrokerRestart,
    Crash,
    Cut,
    Join,
    Latency,
    Leave,
    Pause,
    Publish,
    Restart,
    Settle,
    Step,
    as_schedule,
    faults_of,
    messages_of,
)
from message_flow_harness._taps import binding_taps, tap_destinations
from message_flow_harness._topology import routed
from message_flow_harness._triggers import Trigger
from message_flow_harness._watch import TaskDeath

T = TypeVar("T")
U = TypeVar("U")

#: How ``ended_by`` reads when a run ended as it should: every input came out.
ALL_ACCOUNTED_FOR = "every input accounted for"


class LiveRun:
    """One run in progress: destinations, taps and instances up; steps applied one by one.

    ``run_flow`` drives it from a schedule; the stateful machine drives it
    rule by rule. ``finish()`` waits for quiescence, tears everything down
    and runs the checks; leaving the ``async with`` block without finishing
    tears down too (a cancelled or failed run leaves nothing behind).
    """

    def __init__(
        self,
        flow: Flow,
        *,
        broker: BrokerInfo,
        adapter: BrokerAdapter | None = None,
        faults: bool = True,
        isolation: Isolation | None = None,
    ) -> None:
        if broker.kind != flow.broker:
            raise InvalidArgument(
                f"flow {flow.label} is for {flow.broker} but the broker given is {broker.kind}:"
                f" pass the {flow.broker}_broker fixture"
            )
        self.flow, self.broker, self._adapter = flow, broker, adapter
        self._vhost_adapter: BrokerAdapter | None = None  # a run with a topology: its vhost's
        self._isolation, self._faults = isolation, faults
        self.run_id = uuid.uuid4().hex[:10]  # until the destinations are taken
        self.endpoints: Endpoints  # set on entering
        self.history = History()
        self.published: list[Message] = []
        self.steps: list[Step] = []
        self._numbering = itertools.count(1)
        self._stack = AsyncExitStack()
        self._instances: Instances  # set on entering
        self._deadline = 0.0
        self._trigger: Trigger | None = None  # an After step's, armed ahead of it
        self.correlator = Correlator(
            flow.correlate, output_kinds=flow.output_kinds, side_events=flow.side_events
        )

    @property
    def adapter(self) -> BrokerAdapter:
        """The adapter the run publishes and taps with (on its own vhost, with a topology)."""
        if self._vhost_adapter is not None:
            return self._vhost_adapter
        assert self._adapter is not None, "enter the LiveRun first"
        return self._adapter

    async def __aenter__(self) -> LiveRun:
        stack = self._stack
        # The drivers' own draws (aiormq's consumer tags, aiokafka's node choice) vary
        # with timing: off the global generator, the service's (see play) stay in step.
        brokers.detach_driver_randomness(self.flow.broker)
        # The drivers' and the service's log records go to the history, from now until
        # the stack is closed (after the service stops and the taps close).
        stack.enter_context(capturing(self.history))
        try:
            with attributed(self.history):
                await self._enter(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._deadline = time.monotonic() + self.flow.timeout
        return self

    async def _enter(self, stack: AsyncExitStack) -> None:
        """Destinations, taps and the first instance, each undone by ``stack``."""
        if self._adapter is None:
            self._adapter = await stack.enter_async_context(brokers.adapter(self.broker))
        isolation = self._isolation or Isolation(
            self.adapter,
            self.flow.partitions,
            queue_type=self.flow.queue_type,
            queue_arguments=self.flow.queue_arguments,
        )
        topology = self.flow.topology
        fresh = await (isolation.take(topology) if topology is not None else isolation.take())
        self.run_id, self.endpoints, self._vhost_adapter = fresh
        stack.push_async_callback(isolation.give_back, self.endpoints)
        await self._commit_start_while(
            tap_destinations(
                self.adapter, self.flow, self.endpoints, self.history, self.correlator, stack
            )
        )
        # The taps on the service's exchanges close after the instances, as those above do.
        taps = await stack.enter_async_context(AsyncExitStack())
        if self.flow.probes:
            brokers.install_client_probes(self.broker.kind)
        # The probes correlate deliveries by ``flow.correlate``: by a business key,
        # that needs this run's inputs, so they get the run's own function.
        flow = self.flow
        if isinstance(flow.correlate, Correlation):
            flow = dataclasses.replace(flow, correlate=self.correlator.of_delivery)
        # When the run ends follows its faults: a crashed member's group is asked about.
        group_id = self.endpoints.group_id
        adapter = self.adapter
        pace = RunPace(
            members=None
            if group_id is None
            else functools.partial(adapter.group_members, group_id),
            end_sessions=(
                None
                if group_id is None or flow.crash_keeps_session
                else functools.partial(adapter.end_sessions, group_id)
            ),
        )
        # Fault proxies only where faults may come: a Kafka broker has few proxy
        # ports, and plain runs should not hold them against concurrent fault runs.
        self._instances = Instances(
            flow, self.broker, self.endpoints, self.history, proxied=self._faults, pace=pace
        )
        stack.push_async_callback(self._instances.close)
        # Their queues are made while the first instance starts; they bind once it is ready.
        tapping = binding_taps(
            self.adapter, self.flow, self.endpoints, self.history, self.correlator, taps
        )
        first, bindings = await _alongside(self._instances.add(), tapping)
        # Only the first start is awaited: see harness._readiness for why.
        awaited = await await_ready(
            self.flow, self.endpoints, self.adapter, deaths=self._instances.deaths
        )
        if awaited is not None:
            self.history.record(Kind.NOTE, "harness", lane=first.name, detail=awaited)
        for tap in bindings:  # the service has declared its exchanges by now
            await tap.bind()

    async def _commit_start_while(self, other: Awaitable[None]) -> None:
        """Start the run's group at the input's first offset (unless a first deploy), meanwhile
        awaiting ``other``: two round trips to different clients, overlapped."""
        endpoints, flow = self.endpoints, self.flow
        if flow.first_deploy or endpoints.group_id is None:
            await other
            return
        group_id = endpoints.group_id
        commits = (
            self.adapter.commit_start(name, group_id=group_id, partitions=partitions)
            for name, partitions in flow.inputs_of(endpoints)
        )
        await _alongside(other, asyncio.gather(*commits))

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def play(self, schedule: Sequence[Step], *, history_dir: Path | None = None) -> RunResult:
        """Carry out ``schedule`` (consecutive publishes as one burst), then finish.

        The run is torn down whatever happens, and a harness error carries the
        history so far. The run's timeout counts from here: a campaign enters
        the next run while Hypothesis is still choosing its schedule.
        """
        self._deadline = time.monotonic() + self.flow.timeout
        try:
            try:
                self._stack.enter_context(same_random_draws())
                steps, index = tuple(schedule), 0
                while index < len(steps):
                    end = index
                    while end < len(steps) and isinstance(steps[end], Publish):
                        end += 1
                    if end > index:
                        # An After straight after publishes watches from when they go out.
                        self._arm(steps, end)
                        await self.publish_burst(
                            [s for s in steps[index:end] if isinstance(s, Publish)]
                        )
                        index = end
                        continue
                    self._arm(steps, index)
                    armed = self._trigger if isinstance(steps[index], After) else None
                    await self.do(steps[index])
                    index += 1
                    if armed is not None and armed.fired_at_once and index < len(steps):
                        # The fault after it was carried out with the event: just recorded.
                        self.steps.append(steps[index])
                        index += 1
                return await self.finish(history_dir=history_dir)
            finally:
                if self._trigger is not None:  # never fire into the teardown
                    self._trigger.disarm()
                await self._stack.aclose()  # after finish(), nothing is left to close
        except HarnessError as exc:
            self.keep_partial(exc, history_dir)
            raise

    def keep_partial(self, exc: HarnessError, history_dir: Path | None) -> None:
        """Give a harness error what happened until it went wrong (and dump it)."""
        if exc.history is not None:
            return
        exc.history = self.history
        if history_dir is not None:
            exc.history_path = self.history.dump(
                history_dir / f"{self.flow.label}-{self.run_id}-partial.json"
            )
            exc.add_note(f"partial history: {exc.history_path}")

    def _arm(self, steps: Sequence[Step], at: int) -> None:
        """Arm a trigger for ``steps[at]`` if it is an After step (and none is armed)."""
        if self._trigger is not None or at >= len(steps):
            return
        step = steps[at]
        if isinstance(step, After):
            then = steps[at + 1] if at + 1 < len(steps) else None
            self._trigger = Trigger(
                step, self.history, f"{instance_name(step.instance)}:", self._at_once(then)
            )

    def _at_once(self, step: Step | None) -> Callable[[], None] | None:
        """The first instant of ``step``, to carry out inside the event an After waits for.

        A crash's cut of every connection (its stop follows as the step itself), a
        cut or a latency (all of the step); other steps wait for the schedule.
        """
        instances = self._instances
        if isinstance(step, Crash):
            number = step.instance
            return lambda: _on_instance(instances, number, instances.sever)
        if isinstance(step, Cut):
            number = step.instance
            return lambda: _on_instance(instances, number, instances.cut)
        if isinstance(step, Latency):
            seconds, number = step.seconds, step.instance
            return lambda: _on_instance(instances, number, lambda i: instances.latency(i, seconds))
        return None

    def _can_come(self, step: After) -> bool:
        """Whether an After's event can still come: its instance runs (any source, for outputs).

        A crashed or stopped instance records nothing until a later step restarts
        it, so waiting out the bound for it would only slow the run.
        """
        if step.event == "output":
            return True
        instance = self._instances.get(step.instance)
        return instance is not None and instance.state == "running"

    async def do(self, step: Step | Message) -> None:
        """Carry out one step (a plain Message is published)."""
        [step] = as_schedule([step])
        check_suffered(self.flow.faults, step, flow=f"flow {self.flow.label}")
        if isinstance(step, Publish):
            await self.publish_burst([step])
        elif isinstance(step, After):
            self.steps.append(step)
            trigger = self._trigger or Trigger(
                step, self.history, f"{instance_name(step.instance)}:", None
            )
            self._trigger = None
            if not self._can_come(step):
                trigger.disarm()
                detail = f"{step!r}: its instance is not running, went on at once"
                self.history.record(Kind.NOTE, "harness", detail=detail)
                return
            # As long as "no progress" lasts: under latency an event takes longer too.
            pace = self._instances.pace
            bound = min(pace.quiet(self.flow.quiet), self._deadline - time.monotonic())
            if not await trigger.wait(bound):
                self.history.record(
                    Kind.NOTE,
                    "harness",
                    detail=f"{step!r}: no such event within {bound:.3g} s, went on without it",
                )
        else:
            if isinstance(step, BrokerRestart) and self._vhost_adapter is not None:
                raise InvalidArgument(
                    "a BrokerRestart is not supported with Flow(topology=...) yet: the run's"
                    " vhost adapter is not carried over a restart; drop 'broker_restart' from"
                    " the faults of this flow"
                )
            self.steps.append(step)
            await _apply(step, self._instances, self.flow, self.history, self._deadline)

    async def publish_burst(self, burst: Sequence[Publish]) -> None:
        """Publish back to back: each producer's messages in order, all producers at once.

        Every publish of the burst is recorded as starting when the burst did
        (they are all in flight together), in the burst's order, with its
        producer as the lane (None for producer 0): checks order two inputs of
        one burst only when one producer published both.
        """
        self.steps.extend(burst)
        stamped = [
            step.message.with_headers(
                **{HARNESS_ID_HEADER: f"{self.run_id}-{next(self._numbering)}".encode()}
            )
            for step in burst
        ]
        # Each producer's messages to each input, in order (several inputs: Message.to).
        targets = [self.flow.input_of(self.endpoints, m) for m in stamped]
        by_lane: dict[tuple[int, str], list[Message]] = {}
        for step, target, message in zip(burst, targets, stamped, strict=True):
            by_lane.setdefault((step.producer, target), []).append(message)
        # Known before they are published: an answer may land before publish_many returns.
        keys = [self.correlator.register(m.harness_id or "", m) for m in stamped]
        at_ns = time.perf_counter_ns()
        receipts = await asyncio.gather(
            *(self._publish(messages, *lane) for lane, messages in by_lane.items())
        )
        unread = {lane: iter(got) for lane, got in zip(by_lane, receipts, strict=True)}
        for step, target, message, key in zip(burst, targets, stamped, keys, strict=True):
            receipt = next(unread[step.producer, target])
            self.history.record(
                Kind.PUBLISHED,
                "harness",
                at_ns=at_ns,
                harness_id=message.harness_id,
                destination=target,
                key=message.key,
                partition=receipt.partition,
                offset=receipt.offset,
                lane=f"producer{step.producer}" if step.producer else None,
                detail=key,
                message=message,
            )
            self.published.append(message)

    async def _publish(
        self, messages: list[Message], producer: int, destination: str
    ) -> list[PublishReceipt]:
        topology = self.flow.topology
        if topology is not None and topology.publish is not None:
            exchange, routing_key = topology.publish
            return await routed(self.adapter).publish_routed(
                exchange, routing_key, messages, producer=producer
            )
        return await self.adapter.publish_many(
            destination, messages, producer=producer, publishing=self.flow.publishing
        )

    async def finish(self, *, history_dir: Path | None = None) -> RunResult:
        """Restart crashed instances, wait for quiescence, tear down, and check."""
        await self._instances.restart_crashed()
        deaths = self._instances.deaths
        ended_by = await _await_quiescence(
            self.flow,
            self.history,
            deadline=self._deadline,
            deaths=self._instances.stalled,
            pace=self._instances.pace,
        )
        teardown: DestinationError | None = None
        try:
            await self._stack.aclose()  # services, taps and destinations go, in that order
        except DestinationError as exc:
            teardown = exc  # judged after the checks: a finding outlives leftovers
        verdicts = with_causes(
            tuple(check(self.history) for check in self.flow.checks),
            self.flow,
            self.endpoints,
            self.history,
            probed=self._instances.probed,
            handler_deaths=handlers_died(self._instances),
        )
        if deaths:  # first: what the other verdicts (inputs lost after it...) follow from
            verdicts = (_kept_running(deaths), *verdicts)
        if self._instances.stop_errors:
            verdicts += (_stopped_cleanly(self._instances.stop_errors),)
        path = None
        if history_dir is not None and not all(v.ok for v in verdicts):
            path = self.history.dump(history_dir / f"{self.flow.label}-{self.run_id}.json")
        errors: tuple[str, ...] = ()
        if teardown is not None:
            if all(v.ok for v in verdicts):
                raise teardown  # nothing found: what was left behind is the news
            errors = (f"{type(teardown).__name__}: {teardown}",)
        return RunResult(
            flow=self.flow,
            endpoints=self.endpoints,
            messages=tuple(self.published),
            schedule=tuple(self.steps),
            history=self.history,
            verdicts=verdicts,
            ended_by=ended_by,
            history_path=path,
            errors=errors,
            unaccounted=() if ended_by == ALL_ACCOUNTED_FOR else unaccounted(self.history),
        )


def unaccounted(history: History) -> tuple[str, ...]:
    """The inputs (harness ids, in publish order) with no output nor dead letter in ``history``."""
    answered = {e.harness_id for e in history.of(Kind.OUTPUT, Kind.DEAD_LETTERED)}
    published = dict.fromkeys(e.harness_id for e in history.of(Kind.PUBLISHED))
    return tuple(h for h in published if h is not None and h not in answered)


def _kept_running(deaths: Sequence[TaskDeath]) -> Verdict:
    """The verdict on the service's tasks that died while the run went on (one anomaly each)."""
    return Verdict(
        "service tasks kept running",
        tuple(Anomaly("task-died", str(death)) for death in deaths),
        f"{len(deaths)} task(s) died",
    )


def _stopped_cleanly(errors: Sequence[str]) -> Verdict:
    """The verdict on services that raised while stopping (one anomaly each)."""
    return Verdict(
        "service stopped cleanly",
        tuple(Anomaly("raised-on-stop", error) for error in errors),
        f"{len(errors)} stop(s) raised",
    )


RUN_SEED = 0  # what Hypothesis seeds ``random`` with for each example, too


@contextmanager
def same_random_draws() -> Iterator[None]:
    """Python's ``random`` starts each run's schedule in one state; restored afterwards.

    An in-process service's random draws (a jittered backoff, a simulated
    database delay) then come out the same in every run of a schedule: in the
    campaign (Hypothesis seeds each example the same way), its re-runs and the
    pasted reproduction, so a failure that needed those draws repeats.
    """
    state = random.getstate()
    random.seed(RUN_SEED)
    try:
        yield
    finally:
        random.setstate(state)


async def run_flow(
    flow: Flow,
    steps: Sequence[Step | Message],
    *,
    broker: BrokerInfo,
    adapter: BrokerAdapter | None = None,
    isolation: Isolation | None = None,
    history_dir: Path | None = None,
) -> RunResult:
    """Run ``flow`` once on ``broker`` and check the history.

    ``steps`` is a schedule (see harness._schedule) or simply the messages to
    publish. Pass an open ``adapter`` to reuse its connections across runs,
    and an ``isolation`` of that adapter to create and delete destinations
    off the run's critical path.
    """
    schedule = as_schedule(steps)
    for step in schedule:  # before anything starts
        check_suffered(flow.faults, step, flow=f"flow {flow.label}")
    if any(isinstance(step, BrokerRestart) for step in schedule):
        check_broker_restartable(broker)  # before anything starts
    for message in messages_of(schedule):
        flow.input_name(message)  # a Message(to=...) the flow has no input of: before too
    live = LiveRun(
        flow,
        broker=broker,
        adapter=adapter,
        faults=bool(faults_of(schedule)),
        isolation=isolation,
    )
    try:
        async with live:
            return await live.play(schedule, history_dir=history_dir)
    except HarnessError as exc:  # entering failed (a service that cannot start...)
        live.keep_partial(exc, history_dir)
        raise


def _on_instance(instances: Instances, number: int, action: Callable[[Instance], None]) -> None:
    instance = instances.get(number)
    if instance is not None:  # one that never started: shrinking made the fault moot
        action(instance)


async def _apply(
    step: Step, instances: Instances, flow: Flow, history: History, deadline: float
) -> None:
    """Carry out one step that is not a publish."""
    if isinstance(step, Publish):
        raise AssertionError("publishes are the runner's own business")
    if isinstance(step, Pause):
        await asyncio.sleep(step.seconds)
    elif isinstance(step, Settle):
        await _await_quiescence(
            flow, history, deadline=deadline, deaths=instances.stalled, pace=instances.pace
        )
    elif isinstance(step, Join):
        await instances.add()
    elif isinstance(step, Leave):
        extra = instances.newest_extra()
        if extra is not None:
            await instances.stop(extra)
    elif isinstance(step, BrokerRestart):
        await instances.restart_broker(hard=step.hard, deadline=deadline)
    else:
        instance = instances.get(step.instance)
        if instance is None:
            return  # a fault on an instance that never started: shrinking made it moot
        if isinstance(step, Crash):
            await instances.crash(instance)
        elif isinstance(step, Restart):
            await instances.restart(instance)
        elif isinstance(step, Latency):
            instances.latency(instance, step.seconds)
        else:
            instances.cut(instance)


async def _alongside(main: Awaitable[T], beside: Awaitable[U]) -> tuple[T, U]:
    """Await ``main`` while ``beside`` runs; both results.

    If ``main`` fails, ``beside`` is cancelled and its own error (if any) only
    retrieved: what ended the run is ``main``'s.
    """
    task = asyncio.ensure_future(beside)
    try:
        result = await main
    except BaseException:
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()
        raise
    return result, await task


async def _await_quiescence(
    flow: Flow,
    history: History,
    *,
    deadline: float,
    deaths: Sequence[TaskDeath] = (),
    pace: RunPace | None = None,
) -> str:
    """Wait until every input is accounted for and the run falls silent, or progress stops.

    Silent: no event at all (delivery, ack, commit, output...) for ``settle``
    seconds, and every delivery either answered (an output or dead letter of
    that input after it) or given twice the slowest handling seen (an
    input's last delivery, or its publish, to its first output or dead
    letter). So a consumer still acking or committing keeps the run open, a
    finished one ends at once, and a message delivered again (say, to a
    consumer that just joined) is given time to come out twice at the pace
    the service has shown; a redelivery's wait for a rebalance does not
    count as handling: that is the broker's pace. Progress is a new output or
    dead letter: a consumer busy redelivering a poison message forever makes
    none, so a requeue storm ends the run after ``quiet`` seconds instead of
    at the deadline. The service's own first send of an input (a ``sent``
    event) is progress too: its output is on the way. ``pace`` says what the
    run's faults do: latency stretches ``quiet`` by the round trips a step of
    progress takes, and while a crashed Kafka member is still in the group
    (its partitions wait for its session to time out) there is no "no
    progress": the count starts again once it has left. A task of the
    service that died (``deaths``, of an instance still running as it was
    then) ends the wait at once: nothing more will come out of it.
    """
    pace = pace or RunPace()
    inputs: set[str] = set()
    handed_ns: dict[str, int] = {}  # an input's latest publish or delivery
    answered_ns: dict[str, int] = {}  # an input's latest output or dead letter
    unanswered: dict[str, int] = {}  # inputs delivered since their latest answer: when
    accounted = answered_ns.keys()  # inputs with an output or dead letter (a live view)
    sent: set[str] = set()  # inputs the service has sent something of
    settle_ns = round(flow.settle * 1e9)
    slowest_ns = 0  # the slowest handling seen
    seen = 0  # events already folded in
    # Silence counts from the events' own times, not from when this loop saw
    # them: polling late must not lengthen every run by the polling interval.
    last_progress_ns = last_event_ns = time.perf_counter_ns()
    while True:
        events = history.events
        for event in events[seen:]:
            last_event_ns = max(last_event_ns, event.at_ns)
            harness_id = event.harness_id
            if harness_id is None:
                continue
            if event.kind is Kind.PUBLISHED:
                inputs.add(harness_id)
                handed_ns.setdefault(harness_id, event.at_ns)
            elif event.kind is Kind.DELIVERED:
                handed_ns[harness_id] = event.at_ns
                # Events of different sources arrive slightly out of order: compare times.
                if answered_ns.get(harness_id, -1) < event.at_ns:
                    unanswered[harness_id] = max(unanswered.get(harness_id, 0), event.at_ns)
            elif event.kind is Kind.SENT:
                # Its first send only: a service re-sending one input forever (a retry
                # loop) makes no more progress than a requeue storm does.
                if harness_id not in sent and harness_id not in accounted:
                    last_progress_ns = max(last_progress_ns, event.at_ns)
                sent.add(harness_id)
            elif event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED):
                if harness_id not in accounted:
                    last_progress_ns = max(last_progress_ns, event.at_ns)
                    if harness_id in handed_ns:
                        slowest_ns = max(slowest_ns, event.at_ns - handed_ns[harness_id])
                answered_ns[harness_id] = max(answered_ns.get(harness_id, 0), event.at_ns)
                delivered_ns = unanswered.get(harness_id)
                if delivered_ns is not None and delivered_ns <= event.at_ns:
                    del unanswered[harness_id]  # answered after its latest delivery
        seen = len(events)
        if deaths:
            return f"{deaths[0].summary} ({deaths[0].instance})"
        now_ns = time.perf_counter_ns()
        quiet_ns = round(pace.quiet(flow.quiet) * 1e9)  # a latency fault may come meanwhile
        # A delivery already answered needs no wait: only one that may still
        # come out (again) gets twice the slowest handling.
        last_unanswered_ns = max(unanswered.values(), default=0)
        silent_at_ns = max(last_event_ns + settle_ns, last_unanswered_ns + 2 * slowest_ns)
        if inputs <= accounted and (
            now_ns >= silent_at_ns or now_ns - last_progress_ns >= quiet_ns
        ):
            return ALL_ACCOUNTED_FOR
        if now_ns - last_progress_ns >= quiet_ns:
            if await pace.held():  # a crashed member's partitions are not free yet
                last_progress_ns = time.perf_counter_ns()
            elif pace.left_ns > last_progress_ns:  # just left: the count starts now
                last_progress_ns = pace.left_ns
            else:
                return (
                    f"no progress for {pace.stretched(flow.quiet)} with"
                    f" {len(inputs - accounted)} inputs unaccounted for"
                )
        if time.monotonic() >= deadline:
            return f"timeout after {flow.timeout:g} s"
        # Poll every few ms; once all is accounted for, wake exactly when the
        # silence would be long enough (a new event restarts the count).
        poll_ns = max(1_000_000, min(10_000_000, settle_ns // 2))
        remaining_ns = silent_at_ns - now_ns if inputs <= accounted else poll_ns
        await asyncio.sleep(max(1_000_000, min(remaining_ns, poll_ns)) / 1e9)


async def run(
    flow: Flow,
    steps: Sequence[Step | Message],
    *,
    broker: BrokerInfo | None = None,
    history_dir: Path | None = None,
) -> RunResult:
    """Run ``flow`` once outside pytest; without ``broker``, lease a local one."""
    if broker is not None:
        return await run_flow(flow, steps, broker=broker, history_dir=history_dir)
    with brokers.provision(flow.broker) as info:
        return await run_flow(flow, steps, broker=info, history_dir=history_dir)
