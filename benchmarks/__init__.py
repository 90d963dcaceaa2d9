"""Timing of the harness itself: ``python -m benchmarks [NAME ...]`` (see README.md).

Each benchmark is a module with ``run(options) -> list[Figure]``; figures are
reported, never asserted: a target that is missed shows as ``MISSED`` in the
table and ``"met": false`` in the JSON.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from message_flow_harness._drivers import BROKER_KINDS
from message_flow_harness._message import BrokerKind

#: In the order ``python -m benchmarks`` runs them: cheap first, private brokers last.
BENCHMARKS = (
    "recording_cost",
    "probe_overhead",
    "fuzz_throughput",
    "tap_capacity",
    "zoo_detection",
    "broker_ready",
)
#: The benchmarks that run on the session's brokers (broker_ready starts its own).
USES_BROKERS = frozenset({"probe_overhead", "fuzz_throughput", "tap_capacity", "zoo_detection"})
FORMAT = "message-flow-harness/benchmarks/1"


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One measured figure, with its target when it has one."""

    benchmark: str
    name: str
    value: float | None  # None when it could not be measured (``note`` says why)
    unit: str
    broker: BrokerKind | None = None
    target: str | None = None  # e.g. ">= 0.98"
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """Whether the value meets the target (None without a target; False without a value)."""
        if self.target is None:
            return None
        if self.value is None:
            return False  # not measured, or not found: the target is not shown to be met
        operator, _, bound = self.target.partition(" ")
        limit = float(bound)
        return self.value >= limit if operator == ">=" else self.value < limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass(frozen=True, kw_only=True)
class Options:
    """Sizes of every benchmark (the command line's flags)."""

    brokers: tuple[BrokerKind, ...] = BROKER_KINDS
    rounds: int = 5  # probe overhead: rounds per setting, probes on and off interleaved
    round_trip_messages: int = 200
    batch_messages: dict[BrokerKind, int] = field(
        default_factory=lambda: {"kafka": 4000, "rabbitmq": 400}
    )
    fuzz_examples: int = 200
    fault_examples: int = 8
    false_alarm_examples: int = 500  # zoo detection: per correct-service campaign
    ready_rounds: int = 2
    tap_messages: dict[BrokerKind, int] = field(
        default_factory=lambda: {"kafka": 200_000, "rabbitmq": 50_000}
    )
    recording_calls: int = 100_000


def host() -> dict[str, Any]:
    """What the figures were measured on."""
    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            total_kib = int(meminfo.readline().split()[1])
        memory = f"{total_kib / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def spread(values: Sequence[float]) -> str:
    """``median [min..max]`` of a few figures."""
    if not values:
        return "-"
    return f"{statistics.median(values):,.4g} [{min(values):,.4g}..{max(values):,.4g}]"


def quiet_logging() -> None:
    """Faults are on purpose here: drivers' and services' tracebacks would drown the table."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.CRITICAL)


@contextlib.contextmanager
def private_cache() -> Iterator[Path]:
    """A fresh HARNESS_CACHE_DIR holding a link to the usual cache's Kafka jars."""
    from message_flow_harness.brokers.kafka import ensure_jars

    jars = ensure_jars().parent  # resolved into the usual cache first, once
    directory = Path(tempfile.mkdtemp(prefix="harness-bench-cache-"))
    (directory / jars.name).symlink_to(jars, target_is_directory=True)
    previous = os.environ.get("HARNESS_CACHE_DIR")
    os.environ["HARNESS_CACHE_DIR"] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            del os.environ["HARNESS_CACHE_DIR"]
        else:
            os.environ["HARNESS_CACHE_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)  # removes the link, not the jars


__all__ = (
    "BENCHMARKS",
    "FORMAT",
    "USES_BROKERS",
    "Figure",
    "Options",
    "host",
    "private_cache",
    "quiet_logging",
    "spread",
)
