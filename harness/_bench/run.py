"""``bench()``: check the options, run the service once per round, and gather the rounds."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

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
) -> BenchResult:
    """Time ``flow``'s service: throughput, publish → output latency, in-service time, lag.

    Each of ``rounds`` runs the service afresh, publishes ``warmup`` inputs and
    waits for their outputs (not measured), then publishes ``messages``
    measured inputs (as fast as possible, at ``rate`` msg/s, or with at most
    ``in_flight`` unanswered) and waits for their outputs, bounded by the
    flow's ``quiet`` and ``timeout``. Without ``broker``, a local one is leased.
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
            return await _rounds(flow, settings, info)
    return await _rounds(flow, settings, broker)


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


async def _rounds(flow: Flow, settings: _Settings, broker: BrokerInfo) -> BenchResult:
    measured: list[Round] = []
    async with brokers.adapter(broker) as adapter:
        for _ in range(settings.rounds):
            measured.append(await _round(flow, settings, broker, adapter))
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


async def _round(
    flow: Flow, settings: _Settings, broker: BrokerInfo, adapter: BrokerAdapter
) -> Round:
    """One run of the service: warm up, publish the measured inputs, read their figures."""
    # The run's deadline must outlast publishing at the slowest expected pace.
    pace = settings.rate if settings.rate is not None else 200.0
    timed = dataclasses.replace(
        flow, timeout=flow.timeout + (settings.messages + settings.warmup) / pace
    )
    async with LiveRun(timed, broker=_direct(broker), adapter=adapter) as live:
        publisher = Publisher(live)
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
