"""Broker ready time: from lease to a broker that passed its produce-and-consume round trip.

Cold: ``message_flow_harness.brokers._local.acquire`` with no broker running, in a private cache
directory (``HARNESS_CACHE_DIR`` set to a temporary directory for the
duration, Kafka's jars linked in from the usual cache so nothing is
downloaded): prerequisites, the recipe's prepare (Kafka formats its
storage), supervisor launch, and the recipe's readiness round trip. Cached:
``acquire`` again while that broker runs (what every later test process
pays). Stop: ``release`` of the last lease until the broker is gone and its
data deleted. The shared brokers other sessions use are not touched.
Targets: cold Kafka < 10 s, RabbitMQ < 8 s.
"""

from __future__ import annotations

import statistics
import time

from benchmarks import Figure, Options, private_cache, spread
from message_flow_harness._drivers import driver
from message_flow_harness._message import BrokerKind
from message_flow_harness.brokers import _local

NAME = "broker_ready"
_TARGETS: dict[BrokerKind, str] = {"kafka": "< 10", "rabbitmq": "< 8"}


def _one_start(kind: BrokerKind) -> tuple[float, float, float]:
    """Cold start, cached lease and stop, in seconds, of a private broker of ``kind``."""
    recipe = driver(kind).recipe()
    with private_cache():
        began = time.perf_counter()
        _local.acquire(recipe)
        try:
            cold = time.perf_counter() - began
            began = time.perf_counter()
            _local.acquire(recipe)  # the same process: the lease file is shared, cost is not
            cached = time.perf_counter() - began
        finally:
            began = time.perf_counter()
            _local.release(kind)
            stop = time.perf_counter() - began
    return cold, cached, stop


def run(options: Options) -> list[Figure]:
    figures = []
    for kind in options.brokers:
        starts = [_one_start(kind) for _ in range(options.ready_rounds)]
        cold = [s[0] for s in starts]
        cached = [s[1] * 1000 for s in starts]
        stops = [s[2] for s in starts]
        rounds = options.ready_rounds
        figures += [
            Figure(
                benchmark=NAME,
                name="cold start (private cache dir)",
                value=statistics.median(cold),
                unit="s",
                broker=kind,
                target=_TARGETS[kind],
                note=f"{spread(cold)} s over {rounds} starts",
                details={"seconds": cold},
            ),
            Figure(
                benchmark=NAME,
                name="acquire while running (cached)",
                value=statistics.median(cached),
                unit="ms",
                broker=kind,
                note=f"{spread(cached)} ms",
                details={"ms": cached},
            ),
            Figure(
                benchmark=NAME,
                name="stop (last release)",
                value=statistics.median(stops),
                unit="s",
                broker=kind,
                note=f"{spread(stops)} s",
                details={"seconds": stops},
            ),
        ]
    return figures
