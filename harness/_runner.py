"""One run of a flow: fresh destinations, the service, the inputs, the history, the checks.

Steps, each bounded: create isolated destinations (unique names per run) →
tap output, dead letters and input deliveries → start the service with
client-side probes → publish the inputs, stamped with harness ids → wait for
quiescence → stop the service → stop taps, delete destinations → run checks.
Cleanup runs whatever happened, so a failing or cancelled run leaves nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import brokers
from harness._broker import BrokerAdapter, BrokerInfo, DestinationSpec, TapRecord
from harness._errors import InvalidArgument, ServiceError
from harness._flow import Flow, RunResult
from harness._history import History, Kind
from harness._message import HARNESS_ID_HEADER, Endpoints, Message
from harness._probes import Recorder, current_recorder
from harness._redact import redact_url


def new_endpoints(info: BrokerInfo, run_id: str) -> Endpoints:
    prefix = f"h-{run_id}"
    return Endpoints(
        kind=info.kind,
        input=f"{prefix}-in",
        output=f"{prefix}-out",
        dead_letter=f"{prefix}-dlq",
        bootstrap_servers=info.url if info.kind == "kafka" else None,
        amqp_url=info.url if info.kind == "rabbitmq" else None,
        group_id=f"{prefix}-group" if info.kind == "kafka" else None,
    )


def _tap_to_history(
    history: History, kind: Kind, harness_id: Callable[[Message], str | None]
) -> Callable[[TapRecord], None]:
    def on_record(record: TapRecord) -> None:
        if kind is Kind.DELIVERED and record.event != "delivered":
            return  # the input's own landing is the harness's publish, recorded already
        if kind is not Kind.DELIVERED and record.event != "landed":
            return
        history.record(
            kind,
            "tap",
            at_ns=record.seen_ns,
            harness_id=harness_id(record.message),
            destination=record.destination,
            key=record.message.key,
            partition=record.partition,
            offset=record.offset,
            redelivered=record.redelivered,
            message=record.message,
        )

    return on_record


async def run_flow(
    flow: Flow,
    messages: Sequence[Message],
    *,
    broker: BrokerInfo,
    adapter: BrokerAdapter | None = None,
    history_dir: Path | None = None,
) -> RunResult:
    """Run ``flow`` once with ``messages`` on ``broker`` and check the history.

    Pass an open ``adapter`` to reuse its connections across runs (fuzzing).
    """
    if broker.kind != flow.broker:
        raise InvalidArgument(
            f"flow {flow.label} is for {flow.broker} but the broker given is {broker.kind}:"
            f" pass the {flow.broker}_broker fixture"
        )
    run_id = uuid.uuid4().hex[:10]
    endpoints = new_endpoints(broker, run_id)
    history = History()

    def harness_id(message: Message) -> str | None:
        found = message.harness_id
        if found is None and flow.correlate is not None:
            found = flow.correlate(message)
        return found

    stamped = [
        m.with_headers(**{HARNESS_ID_HEADER: f"{run_id}-{i}".encode()})
        for i, m in enumerate(messages, 1)
    ]
    async with AsyncExitStack() as stack:
        if adapter is None:
            adapter = await stack.enter_async_context(brokers.adapter(broker))
        await _create_destinations(adapter, endpoints, flow, stack)
        await stack.enter_async_context(
            adapter.tap(endpoints.output, _tap_to_history(history, Kind.OUTPUT, harness_id))
        )
        await stack.enter_async_context(
            adapter.tap(
                endpoints.dead_letter, _tap_to_history(history, Kind.DEAD_LETTERED, harness_id)
            )
        )
        if broker.kind == "rabbitmq":  # the firehose shows the broker's own deliveries
            await stack.enter_async_context(
                adapter.tap(endpoints.input, _tap_to_history(history, Kind.DELIVERED, harness_id))
            )
        recorder = Recorder(history, correlate=flow.correlate)
        if flow.probes:
            brokers.install_client_probes(broker.kind)
        await _start_service(flow, endpoints, recorder if flow.probes else None, stack)
        started = time.monotonic()
        for message in stamped:
            at_ns = time.perf_counter_ns()
            receipt = await adapter.publish(endpoints.input, message)
            history.record(
                Kind.PUBLISHED,
                "harness",
                at_ns=at_ns,
                harness_id=message.harness_id,
                destination=endpoints.input,
                key=message.key,
                partition=receipt.partition,
                offset=receipt.offset,
                message=message,
            )
        ended_by = await _await_quiescence(flow, history, deadline=started + flow.timeout)
    # leaving the stack stopped the service, the taps, and deleted the destinations
    verdicts = tuple(check(history) for check in flow.checks)
    path = None
    if history_dir is not None and not all(v.ok for v in verdicts):
        path = history.dump(history_dir / f"{flow.label}-{run_id}.json")
    return RunResult(
        flow=flow,
        endpoints=endpoints,
        messages=tuple(stamped),
        history=history,
        verdicts=verdicts,
        ended_by=ended_by,
        history_path=path,
    )


async def _create_destinations(
    adapter: BrokerAdapter, endpoints: Endpoints, flow: Flow, stack: AsyncExitStack
) -> None:
    specs = [
        DestinationSpec(name=endpoints.dead_letter),
        DestinationSpec(name=endpoints.output),
        DestinationSpec(
            name=endpoints.input, partitions=flow.partitions, dead_letter=endpoints.dead_letter
        ),
    ]
    for spec in specs:
        await adapter.create(spec)
        stack.push_async_callback(adapter.delete, spec.name)
    if endpoints.group_id is not None:
        stack.push_async_callback(adapter.forget_group, endpoints.group_id)


async def _start_service(
    flow: Flow, endpoints: Endpoints, recorder: Recorder | None, stack: AsyncExitStack
) -> None:
    """Enter the service with the probes' context; register a bounded exit."""
    where = endpoints.bootstrap_servers or redact_url(endpoints.amqp_url or "")
    try:
        service = flow.sut(endpoints)
    except Exception as exc:
        raise ServiceError(
            f"sut={flow.label} raised when called with {endpoints}: {exc!r}"
        ) from exc
    token = current_recorder.set(recorder)
    try:
        async with asyncio.timeout(flow.start_timeout):
            await service.__aenter__()
    except TimeoutError as exc:
        raise ServiceError(
            f"service {flow.label} did not finish starting within {flow.start_timeout:g} s"
            f" (broker {where}): its __aenter__ must return once it consumes;"
            " raise Flow(start_timeout=...) if it is just slow"
        ) from exc
    except Exception as exc:
        raise ServiceError(f"service {flow.label} raised on start: {exc!r}") from exc
    finally:
        current_recorder.reset(token)

    async def stop() -> None:
        try:
            async with asyncio.timeout(flow.stop_timeout):
                await service.__aexit__(None, None, None)
        except TimeoutError as exc:
            raise ServiceError(
                f"service {flow.label} did not stop within {flow.stop_timeout:g} s:"
                " cancel its consume loop on exit (and bound its final commit or close)"
            ) from exc

    stack.push_async_callback(stop)


async def _await_quiescence(flow: Flow, history: History, *, deadline: float) -> str:
    """Wait until every input is accounted for (then ``settle`` more), or progress stops.

    Progress is a new output or dead letter: a consumer busy redelivering a
    poison message forever makes none, so a requeue storm ends the run after
    ``quiet`` seconds instead of at the deadline.
    """
    inputs: set[str] = set()
    accounted: set[str] = set()
    seen = 0  # events already folded into the two sets
    last_progress = time.monotonic()
    while True:
        events = history.events
        for event in events[seen:]:
            if event.harness_id is None:
                continue
            if event.kind is Kind.PUBLISHED:
                inputs.add(event.harness_id)
            elif (
                event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED)
                and event.harness_id not in accounted
            ):
                accounted.add(event.harness_id)
                last_progress = time.monotonic()
        seen = len(events)
        now = time.monotonic()
        if inputs <= accounted and now - last_progress >= flow.settle:
            return "every input accounted for"
        if now - last_progress >= flow.quiet:
            return (
                f"no progress for {flow.quiet:g} s with"
                f" {len(inputs - accounted)} inputs unaccounted for"
            )
        if now >= deadline:
            return f"timeout after {flow.timeout:g} s"
        await asyncio.sleep(0.01)


async def run(
    flow: Flow,
    messages: Sequence[Message],
    *,
    broker: BrokerInfo | None = None,
    history_dir: Path | None = None,
) -> RunResult:
    """Run ``flow`` once outside pytest; without ``broker``, lease a local one."""
    if broker is not None:
        return await run_flow(flow, messages, broker=broker, history_dir=history_dir)
    with brokers.provision(flow.broker) as info:
        return await run_flow(flow, messages, broker=info, history_dir=history_dir)
