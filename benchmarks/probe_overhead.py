"""Probe overhead: a consumer's throughput with client probes on against off, per broker.

The zoo's correct service (``kafka_correct``, ``rabbitmq_correct``) is timed
with :func:`harness._bench.bench` as ``Flow(probes=True)`` and
``Flow(probes=False)`` in the same process, in interleaved rounds (on, off,
off, on, ...: drift in the machine's speed hits both alike), each round a
fresh run of the service. "Off" means the patched driver methods find no
recorder (one context-variable lookup): once a process has installed the
probes they stay installed.

Two modes: round trip (publish one input, wait for its output, repeat:
latency-bound, so the probes' cost per message shows directly) and batched
(publish all, 64 publishes in flight, then wait). The figure is
median(on) / median(off) of the rounds' throughputs; the note gives both
spreads and the Mann-Whitney p-value of on against off. Targets: >= 0.98
round trip, >= 0.95 batched.

Each round starts from a collected heap (``gc.collect()`` before it, for both
settings): a full collection of this process's heap (Hypothesis, both drivers,
the harness: tenths of a second) otherwise lands inside some timed windows and
not others, and decides the figure more than the probes do.

Throughput on a shared 2-core machine varies by tens of percent from round
to round, more than the probes cost. A second figure is steadier: the CPU
time this process (service, publisher and taps: they share one event loop)
spends per message, off / on: the throughput ratio a CPU-bound consumer
would see.
"""

from __future__ import annotations

import asyncio
import gc
import statistics

import brokers
from benchmarks import Figure, Options, spread
from harness._bench import Round, bench, mann_whitney_p
from harness._broker import BrokerInfo
from harness._flow import Flow
from harness._message import BrokerKind
from tests.zoo.kafka_services import kafka_correct
from tests.zoo.rabbitmq_services import rabbitmq_correct

NAME = "probe_overhead"
_SERVICES = {"kafka": kafka_correct, "rabbitmq": rabbitmq_correct}
_WARMUP = 50


async def _mode(
    kind: BrokerKind, broker: BrokerInfo, *, mode: str, messages: int, rounds: int
) -> list[Figure]:
    flows = {
        probes: Flow(sut=_SERVICES[kind], broker=kind, probes=probes) for probes in (True, False)
    }
    measured: dict[bool, list[Round]] = {True: [], False: []}
    for number in range(rounds):
        for probes in (True, False) if number % 2 == 0 else (False, True):
            gc.collect()  # no full collection of the earlier rounds' garbage inside this one
            result = await bench(
                flows[probes],
                messages=messages,
                in_flight=1 if mode == "round trip" else None,
                warmup=_WARMUP,
                broker=broker,
            )
            measured[probes].extend(result.rounds)
    on = [r.throughput for r in measured[True]]
    off = [r.throughput for r in measured[False]]
    ratio = statistics.median(on) / statistics.median(off)
    p_value = mann_whitney_p(on, off)
    p50 = {
        probes: [r.latency.at(50.0) / 1000 for r in rounds_ if r.latency]
        for probes, rounds_ in measured.items()
    }
    lost = sum(r.lost for rounds_ in measured.values() for r in rounds_)
    cpu = {
        probes: [r.cpu_per_message_us for r in rounds_ if r.cpu_per_message_us is not None]
        for probes, rounds_ in measured.items()
    }
    cpu_ratio = statistics.median(cpu[False]) / statistics.median(cpu[True])
    cpu_figure = Figure(
        benchmark=NAME,
        name=f"CPU per message off/on, {mode}",
        value=cpu_ratio,
        unit="ratio",
        broker=kind,
        target=">= 0.98" if mode == "round trip" else ">= 0.95",
        note=(
            f"on {spread(cpu[True])} µs/msg, off {spread(cpu[False])} µs/msg,"
            f" p={mann_whitney_p(cpu[True], cpu[False]):.2f}"
        ),
        details={"cpu_us_on": cpu[True], "cpu_us_off": cpu[False]},
    )
    throughput_figure = Figure(
        benchmark=NAME,
        name=f"throughput on/off, {mode} ({messages} msgs)",
        value=ratio,
        unit="ratio",
        broker=kind,
        target=">= 0.98" if mode == "round trip" else ">= 0.95",
        note=(
            f"on {spread(on)} msg/s, off {spread(off)} msg/s, p={p_value:.2f}"
            f" ({rounds} rounds each)" + (f"; {lost} inputs LOST" if lost else "")
        ),
        details={
            "throughput_on": on,
            "throughput_off": off,
            "p50_ms_on": p50[True],
            "p50_ms_off": p50[False],
            "mann_whitney_p": p_value,
            "rounds": rounds,
            "messages": messages,
            "warmup": _WARMUP,
        },
    )
    return [throughput_figure, cpu_figure]


def run(options: Options) -> list[Figure]:
    figures = []
    for kind in options.brokers:
        with brokers.provision(kind) as info:
            for mode, messages in (
                ("round trip", options.round_trip_messages),
                ("batched", options.batch_messages[kind]),
            ):
                figures += asyncio.run(
                    _mode(kind, info, mode=mode, messages=messages, rounds=options.rounds)
                )
    return figures
