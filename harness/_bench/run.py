"""``bench()``: check the options, run the service once per round, and gather the rounds."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import platform
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from message_flow_harness import brokers
from message_flow_harness._bench.analysis import analyze
from message_flow_harness._bench.publishers import Publisher, inputs
from message_flow_harness._bench.result import BenchResult, Round
from message_flow_harness._broker import BrokerAdapter, BrokerInfo
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._flow import Flow
from message_flow_harness._message import Message
from message_flow_harness._runner import LiveRun


async def bench(
    flow: Flow,
    *,
    messages: int = 1000,
    rate: float | None = None,
    in_flight: int | None = None,
    payload_size: int = 100,
    keys: int = 10,
    broker: BrokerInfo | None = None,
    warmup: int = 100,
    rounds: int = 1,
    progress: Callable[[BenchStatus], None] | None = None,
) -> BenchResult:
    """Time ``flow``'s service: throughput, publish → output latency, in-service time, lag.

    Each of ``rounds`` runs the service afresh, publishes ``warmup`` inputs and
    waits for their outputs (not measured), then publishes ``messages``
    measured inputs (as fast as possible, at ``rate`` msg/s, or with at most
    ``in_flight`` unanswered) and waits for their outputs, bounded by the
    flow's ``quiet`` and ``timeout``. Without ``broker``, a local one is leased.
    ``progress`` hears how each round goes, a few times a second and at its end.
    """
    settings = _Settings(
        messages=messages,
        rate=rate,
        in_flight=in_flight,
        payload_size=payload_size,
        keys=keys,
        warmup=warmup,
        rounds=rounds,
    )
    if broker is None:
        with brokers.provision(flow.broker) as info:
            return await _rounds(flow, settings, info, progress)
    return await _rounds(flow, settings, broker, progress)


Phase = Literal["warm-up", "measure", "done"]

#: How often a bench tells ``progress`` how its round goes.
_PROGRESS_S = 0.1


@dataclass(frozen=True, kw_only=True)
class BenchStatus:
    """How a bench's round goes: what ``bench(progress=...)`` hears."""

    round: int  # 1-based
    rounds: int
    phase: Phase  # "done" once per round, with its final counts
    messages: int  # measured inputs of a round
    accounted: int  # of those, accounted for so far
    rate: float  # accounted for per second in this round's measured phase


@dataclass(frozen=True, kw_only=True)
class _Settings:
    """The options of one ``bench()``, checked when made."""

    messages: int
    rate: float | None
    in_flight: int | None
    payload_size: int
    keys: int
    warmup: int
    rounds: int

    def __post_init__(self) -> None:
        _check_count("messages", self.messages, minimum=1)
        _check_count("payload_size", self.payload_size, minimum=0)
        _check_count("keys", self.keys, minimum=0)
        _check_count("warmup", self.warmup, minimum=0)
        _check_count("rounds", self.rounds, minimum=1)
        rate, in_flight = self.rate, self.in_flight
        if in_flight is not None:
            _check_count("in_flight", in_flight, minimum=1)
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise InvalidArgument(
                    f"rate={rate!r} is invalid: give messages per second, e.g. 500"
                )
            if not 0 < rate < math.inf:
                raise InvalidArgument(f"rate={rate!r} is invalid: give a positive number of msg/s")
            if in_flight is not None:
                raise InvalidArgument(
                    f"rate={rate!r} and in_flight={in_flight!r} are exclusive: a fixed rate is"
                    " open loop, in_flight is closed loop; give one"
                )

    def inputs(self, count: int, *, start: int = 0) -> list[Message]:
        """``count`` inputs of this bench's payload size and keys, numbered from ``start``."""
        return inputs(count, payload_size=self.payload_size, keys=self.keys, start=start)


async def _rounds(
    flow: Flow,
    settings: _Settings,
    broker: BrokerInfo,
    progress: Callable[[BenchStatus], None] | None,
) -> BenchResult:
    measured: list[Round] = []
    async with brokers.adapter(broker) as adapter:
        for number in range(1, settings.rounds + 1):
            watch = _Watch(progress, number, settings)
            measured.append(await _round(flow, settings, broker, adapter, watch))
    return BenchResult(
        flow=flow.label,
        broker=flow.broker,
        messages=settings.messages,
        rate=None if settings.rate is None else float(settings.rate),
        in_flight=settings.in_flight,
        payload_size=settings.payload_size,
        keys=settings.keys,
        warmup=settings.warmup,
        probes=flow.probes,
        rounds=tuple(measured),
        host=_host(),
    )


def _direct(broker: BrokerInfo) -> BrokerInfo:
    """``broker`` without its Kafka fault-proxy listeners, so the service connects directly.

    A bench injects no faults, and a proxy would add a hop, in this very event
    loop, to every request of the service (RabbitMQ services still get one:
    the runner puts a proxy in front of every RabbitMQ instance).
    """
    extra = {k: v for k, v in broker.extra.items() if not k.startswith("proxy")}
    return dataclasses.replace(broker, extra=extra)


class _Watch:
    """Tells ``progress`` how one round goes, from its publisher's counts."""

    def __init__(
        self, progress: Callable[[BenchStatus], None] | None, number: int, settings: _Settings
    ) -> None:
        self.progress, self.number, self.settings = progress, number, settings
        self.phase: Phase = "warm-up"
        self.measured: frozenset[str] = frozenset()
        self.began = time.monotonic()

    def measuring(self, measured: list[str]) -> None:
        self.phase, self.measured, self.began = "measure", frozenset(measured), time.monotonic()

    def tell(self, publisher: Publisher, phase: Phase | None = None) -> None:
        if self.progress is None:
            return
        accounted = len(publisher.poll() & self.measured)
        elapsed = time.monotonic() - self.began
        self.progress(
            BenchStatus(
                round=self.number,
                rounds=self.settings.rounds,
                phase=phase or self.phase,
                messages=self.settings.messages,
                accounted=accounted,
                rate=accounted / elapsed if elapsed > 0 else 0.0,
            )
        )

    @contextlib.asynccontextmanager
    async def ticking(self, publisher: Publisher) -> AsyncIterator[None]:
        """Tell ``progress`` a few times a second while inside; once more, "done", at the end."""

        async def tick() -> None:
            while True:
                self.tell(publisher)
                await asyncio.sleep(_PROGRESS_S)

        task = asyncio.create_task(tick()) if self.progress is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.tell(publisher, "done")


async def _round(
    flow: Flow, settings: _Settings, broker: BrokerInfo, adapter: BrokerAdapter, watch: _Watch
) -> Round:
    """One run of the service: warm up, publish the measured inputs, read their figures."""
    # The run's deadline must outlast publishing at the slowest expected pace.
    pace = settings.rate if settings.rate is not None else 200.0
    timed = dataclasses.replace(
        flow, timeout=flow.timeout + (settings.messages + settings.warmup) / pace
    )
    async with LiveRun(timed, broker=_direct(broker), adapter=adapter) as live:
        publisher = Publisher(live)
        async with watch.ticking(publisher):
            return await _measure(flow, settings, live, publisher, watch)


async def _measure(
    flow: Flow, settings: _Settings, live: LiveRun, publisher: Publisher, watch: _Watch
) -> Round:
    """Warm up, publish the measured inputs, wait for them, and read the round's figures."""
    if settings.warmup:
        warm = [publisher.stamp(m) for m in settings.inputs(settings.warmup)]
        await publisher.fastest(warm)
        await publisher.await_outputs(
            [hid for hid, _ in warm], quiet=flow.quiet, what=f"warm-up of {flow.label}"
        )
    stamped = [
        publisher.stamp(m) for m in settings.inputs(settings.messages, start=settings.warmup)
    ]
    measured = [hid for hid, _ in stamped]
    watch.measuring(measured)
    cpu_began = time.process_time()
    if settings.rate is not None:
        await publisher.at_rate(stamped, settings.rate)
    elif settings.in_flight is not None:
        await publisher.closed_loop(stamped, settings.in_flight, quiet=flow.quiet)
    else:
        await publisher.fastest(stamped)
    await publisher.await_outputs(measured, quiet=flow.quiet, what="", strict=False)
    cpu_seconds = time.process_time() - cpu_began
    result = await live.finish()
    return analyze(
        result.history,
        measured,
        due_ns=publisher.due_ns,
        ended_by=result.ended_by,
        cpu_seconds=cpu_seconds,
    )


def _check_count(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{name}={value!r} is invalid: give a whole number >= {minimum}")
    return value


def _host() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
