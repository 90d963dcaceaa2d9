"""Consumer timing: how fast a flow's service turns inputs into outputs, and how steadily.

``await bench(flow)`` runs the service once per round on a real broker (fresh
destinations and consumer group, output and dead-letter taps, client probes:
the same :class:`~harness._runner.LiveRun` as every run), publishes stamped
inputs, waits for their outputs, and measures from the run's history:

* **throughput**: inputs accounted for (output or dead letter) per second,
  from the first measured publish to the last output;
* **latency**: publish → output per input, as an HdrHistogram (µs resolution,
  three significant digits);
* **in-service time**: the consumer's delivery → its producer's send, per
  input, from the client probes (absent with ``Flow(probes=False)``);
* **lag**: inputs published minus inputs accounted for, over time;
* **CPU time** of the process (service, publisher and taps together) over
  the measured phase, in the JSON: steadier than throughput on a busy machine.

How inputs are published (the mode is part of the result):

* as fast as possible (default): up to :data:`PUBLISH_CONCURRENCY` publishes
  await the broker's confirm at once, through the adapter (one at a time,
  RabbitMQ's confirms cap a publisher near 2k msg/s on a small machine).
  Latency counts from the moment a publish is handed to the client;
* ``rate=R``: open loop, input *i* is due at ``i / R`` s and is published then
  whatever earlier publishes are doing; latency counts from the *due* time,
  so a publisher that falls behind cannot hide the delay (no coordinated
  omission);
* ``in_flight=K``: closed loop, at most K inputs published and not yet
  accounted for; ``in_flight=1`` is round-trip mode (publish one, wait for its
  output, repeat).

Concurrent publishes may reach the broker in a different order than they
were stamped, so a bench reports completeness (inputs without an output) but
not the flow's ordering checks: test those with ``flow_check`` or ``fuzz``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import functools
import html
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

import brokers
from harness._broker import BrokerAdapter, BrokerInfo
from harness._cli_args import non_negative_int, positive_int, positive_rate
from harness._errors import HarnessTimeout, InvalidArgument
from harness._flow import Flow
from harness._history import History, Kind
from harness._message import HARNESS_ID_HEADER, Message
from harness._redact import redact_url
from harness._runner import LiveRun

if TYPE_CHECKING:
    import pytest

FORMAT = "message-flow-harness/bench/1"
#: Percentiles every distribution reports.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
#: Publishes awaiting the broker's confirm at once, when publishing as fast as possible.
PUBLISH_CONCURRENCY = 64
#: A p-value below this makes a difference between two results significant.
ALPHA = 0.05
#: Points of the lag and latency series (per round).
SERIES_POINTS = 200

_HIGHEST_US = 3_600_000_000  # one hour: anything slower is a hang, not a latency
_SIGNIFICANT_FIGURES = 3
_POLL_S = 0.001  # closed-loop mode waits for outputs by polling the history this often
_MAX_OUTSTANDING = 10_000  # open-loop publishes in flight before the publisher waits
_EXACT_LIMIT = 200_000  # Mann-Whitney: enumerate rank sums up to this many splits


# --- distributions -----------------------------------------------------------------


def _new_histogram() -> Any:
    return HdrHistogram(1, _HIGHEST_US, _SIGNIFICANT_FIGURES)


def _percentile_name(percentile: float) -> str:
    return f"p{percentile:g}"


@dataclass(frozen=True, kw_only=True)
class Distribution:
    """Durations in µs, summarised by an HdrHistogram (kept encoded, so rounds merge exactly).

    Count, min, max and mean are exact; percentiles come from the histogram,
    to three significant figures (the top of the value's bucket, at most the max).
    """

    count: int
    min_us: int
    max_us: int
    mean_us: float
    percentiles_us: Mapping[str, int]  # "p50", "p90", "p99", "p99.9"
    encoded: str  # HdrHistogram's own compressed base64 form

    @classmethod
    def of(cls, values_us: Iterable[int]) -> Distribution | None:
        """The distribution of ``values_us`` (clamped to 0 µs .. 1 h); None if there are none."""
        histogram = _new_histogram()
        count = total = 0
        low, high = _HIGHEST_US, 0
        for raw in values_us:
            value = min(max(int(raw), 0), _HIGHEST_US)
            histogram.record_value(value)
            count, total = count + 1, total + value
            low, high = min(low, value), max(high, value)
        if count == 0:
            return None
        return cls._made(histogram, count=count, low=low, high=high, mean=total / count)

    @classmethod
    def merge(cls, parts: Iterable[Distribution | None]) -> Distribution | None:
        """One distribution of every value in ``parts`` (exact: histograms add)."""
        found = [part for part in parts if part is not None]
        if not found:
            return None
        histogram = _new_histogram()
        for part in found:
            histogram.add(part.histogram())
        count = sum(part.count for part in found)
        return cls._made(
            histogram,
            count=count,
            low=min(part.min_us for part in found),
            high=max(part.max_us for part in found),
            mean=sum(part.mean_us * part.count for part in found) / count,
        )

    @classmethod
    def _made(cls, histogram: Any, *, count: int, low: int, high: int, mean: float) -> Distribution:
        percentiles = {
            _percentile_name(p): min(max(int(histogram.get_value_at_percentile(p)), low), high)
            for p in PERCENTILES
        }
        return cls(
            count=count,
            min_us=low,
            max_us=high,
            mean_us=round(mean, 1),
            percentiles_us=percentiles,
            encoded=histogram.encode().decode("ascii"),
        )

    def histogram(self) -> Any:
        """The HdrHistogram itself (``hdrh.histogram.HdrHistogram``)."""
        return HdrHistogram.decode(self.encoded.encode("ascii"))

    def at(self, percentile: float) -> int:
        """The value (µs) at ``percentile``, e.g. ``at(99.0)``."""
        stored = self.percentiles_us.get(_percentile_name(percentile))
        if stored is not None:
            return stored
        found = int(self.histogram().get_value_at_percentile(percentile))
        return min(max(found, self.min_us), self.max_us)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
            "percentiles_us": dict(self.percentiles_us),
            "hdr": self.encoded,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Distribution | None:
        if data is None:
            return None
        return cls(
            count=int(data["count"]),
            min_us=int(data["min_us"]),
            max_us=int(data["max_us"]),
            mean_us=float(data["mean_us"]),
            percentiles_us={str(k): int(v) for k, v in data["percentiles_us"].items()},
            encoded=str(data["hdr"]),
        )


# --- one round, from its history -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """The series at one point of a round: ``t_s`` after the first measured publish."""

    t_s: float
    lag: int  # published and not yet accounted for, at t_s
    p50_us: int | None  # latency of the inputs accounted for in the interval ending at t_s
    max_us: int | None


@dataclass(frozen=True, kw_only=True)
class Round:
    """The figures of one run of the service."""

    messages: int  # measured inputs published (warm-up excluded)
    completed: int  # of those, accounted for by an output or a dead letter
    seconds: float  # first measured publish (or due time) → last output
    publish_seconds: float  # first → last measured publish call
    latency: Distribution | None
    in_service: Distribution | None  # delivered → sent, from the client probes
    series: tuple[Sample, ...] = ()
    ended_by: str = ""
    #: CPU time of this whole process (service, publisher, taps) over the measured
    #: phase: steadier than throughput on a busy machine.
    cpu_seconds: float | None = None

    @property
    def cpu_per_message_us(self) -> float | None:
        if self.cpu_seconds is None or not self.completed:
            return None
        return self.cpu_seconds / self.completed * 1e6

    @property
    def throughput(self) -> float:
        """Inputs accounted for per second over the measured window."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.messages - self.completed

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "completed": self.completed,
            "seconds": self.seconds,
            "publish_seconds": self.publish_seconds,
            "throughput": round(self.throughput, 1),
            "latency": None if self.latency is None else self.latency.to_json(),
            "in_service": None if self.in_service is None else self.in_service.to_json(),
            "series": [[s.t_s, s.lag, s.p50_us, s.max_us] for s in self.series],
            "ended_by": self.ended_by,
            "cpu_seconds": self.cpu_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Round:
        return cls(
            messages=int(data["messages"]),
            completed=int(data["completed"]),
            seconds=float(data["seconds"]),
            publish_seconds=float(data["publish_seconds"]),
            latency=Distribution.from_json(data.get("latency")),
            in_service=Distribution.from_json(data.get("in_service")),
            series=tuple(
                Sample(float(t), int(lag), p50, top) for t, lag, p50, top in data["series"]
            ),
            ended_by=str(data.get("ended_by", "")),
            cpu_seconds=None if data.get("cpu_seconds") is None else float(data["cpu_seconds"]),
        )


def analyze(
    history: History,
    measured: Sequence[str],
    *,
    due_ns: Mapping[str, int] | None = None,
    ended_by: str = "",
    cpu_seconds: float | None = None,
    points: int = SERIES_POINTS,
) -> Round:
    """The figures of the inputs ``measured`` (harness ids) in ``history``.

    An input's latency runs from its publish (or its due time in ``due_ns``,
    for open-loop publishing) to its first output or dead letter seen by the
    taps; its in-service time from the first probe-recorded delivery to the
    first probe-recorded send after it.
    """
    wanted = set(measured)
    published: dict[str, int] = {}
    done: dict[str, int] = {}
    delivered: dict[str, int] = {}
    sends: dict[str, list[int]] = {}
    for event in history.events:
        hid = event.harness_id
        if hid is None or hid not in wanted:
            continue
        if event.kind is Kind.PUBLISHED:
            _keep_first(published, hid, event.at_ns)
        elif event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED):
            _keep_first(done, hid, event.at_ns)
        elif event.kind is Kind.DELIVERED and event.source == "probe":
            _keep_first(delivered, hid, event.at_ns)
        elif event.kind is Kind.SENT and event.source == "probe":
            sends.setdefault(hid, []).append(event.at_ns)
    # The send that answers a delivery is the first one at or after it.
    sent = {
        hid: min(answers)
        for hid, at in delivered.items()
        if (answers := [t for t in sends.get(hid, ()) if t >= at])
    }
    due = dict(due_ns or {})
    starts = {hid: due.get(hid, at) for hid, at in published.items()}
    latencies = {hid: (done[hid] - starts[hid]) // 1000 for hid in done if hid in starts}
    in_service = [(sent[hid] - delivered[hid]) // 1000 for hid in sent]
    completed = [hid for hid in measured if hid in done and hid in starts]
    seconds = 0.0
    series: tuple[Sample, ...] = ()
    if starts:
        begin = min(starts.values())
        end = max((done[hid] for hid in completed), default=begin)
        seconds = (end - begin) / 1e9
        series = _series(
            begin,
            end,
            sorted(published.values()),
            sorted((done[hid], latencies[hid]) for hid in completed),
            points,
        )
    publish_times = list(published.values())
    return Round(
        messages=len(measured),
        completed=len(completed),
        seconds=seconds,
        publish_seconds=(max(publish_times) - min(publish_times)) / 1e9 if publish_times else 0.0,
        latency=Distribution.of(latencies[hid] for hid in completed),
        in_service=Distribution.of(in_service),
        series=series,
        ended_by=ended_by,
        cpu_seconds=cpu_seconds,
    )


def _keep_first(found: dict[str, int], hid: str, at_ns: int) -> None:
    if hid not in found or at_ns < found[hid]:
        found[hid] = at_ns


def _series(
    begin: int,
    end: int,
    publishes: list[int],
    completions: list[tuple[int, int]],
    points: int,
) -> tuple[Sample, ...]:
    """Lag and latency at ``points`` evenly spaced instants (exact, from the timestamps)."""
    points = max(points, 1)
    step = max((end - begin) / points, 1.0)
    done_times = [at for at, _ in completions]
    samples = []
    for index in range(1, points + 1):
        upper = begin + round(step * index)
        lower = begin + round(step * (index - 1))
        issued = bisect.bisect_right(publishes, upper)
        finished = bisect.bisect_right(done_times, upper)
        first = bisect.bisect_right(done_times, lower) if index > 1 else 0
        window = sorted(latency for _, latency in completions[first:finished])
        samples.append(
            Sample(
                t_s=(upper - begin) / 1e9,
                lag=max(issued - finished, 0),
                p50_us=window[(len(window) - 1) // 2] if window else None,
                max_us=window[-1] if window else None,
            )
        )
        if upper >= end:
            break
    return tuple(samples)


# --- the result ------------------------------------------------------------------------

Mode = Literal["fastest", "rate", "in_flight"]


@dataclass(frozen=True, kw_only=True)
class BenchResult:
    """What ``bench`` measured: per-round figures, and the rounds together."""

    flow: str
    broker: str
    messages: int
    rate: float | None
    in_flight: int | None
    payload_size: int
    keys: int
    warmup: int
    probes: bool
    rounds: tuple[Round, ...]
    host: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> Mode:
        if self.rate is not None:
            return "rate"
        return "in_flight" if self.in_flight is not None else "fastest"

    @property
    def throughputs(self) -> tuple[float, ...]:
        return tuple(r.throughput for r in self.rounds)

    @property
    def throughput(self) -> float:
        """The median round's throughput (inputs per second)."""
        return statistics.median(self.throughputs) if self.rounds else 0.0

    @property
    def latency(self) -> Distribution | None:
        """Publish → output over every round."""
        return Distribution.merge(r.latency for r in self.rounds)

    @property
    def in_service(self) -> Distribution | None:
        return Distribution.merge(r.in_service for r in self.rounds)

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.rounds)

    def describe_mode(self) -> str:
        if self.rate is not None:
            return f"open loop at {self.rate:g} msg/s"
        if self.in_flight == 1:
            return "round trip (1 in flight)"
        if self.in_flight is not None:
            return f"closed loop, {self.in_flight} in flight"
        return f"as fast as possible ({PUBLISH_CONCURRENCY} publishes in flight)"

    def table(self) -> str:
        """The figures as plain text: one line per round, then the rounds together."""
        head = (
            f"bench {self.flow} on {self.broker}: {self.messages} messages x"
            f" {_plural(len(self.rounds), 'round')}, {self.describe_mode()},"
            f" {self.payload_size} B payloads, {self.keys} keys, warm-up {self.warmup},"
            f" probes {'on' if self.probes else 'off'}"
        )
        columns = ("", "msg/s", "p50", "p90", "p99", "p99.9", "max", "in-service p50", "lost")
        rows: list[tuple[str, ...]] = [columns]
        for number, item in enumerate(self.rounds, 1):
            rows.append(
                _row(f"round {number}", item.throughput, item.latency, item.in_service, item.lost)
            )
        if len(self.rounds) > 1:
            rows.append(_row("all", self.throughput, self.latency, self.in_service, self.lost))
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        lines = [head]
        for row in rows:
            lines.append(
                "  ".join(
                    cell.ljust(width) if i == 0 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(row, widths, strict=True))
                ).rstrip()
            )
        if len(self.rounds) > 1:
            spread = self.throughputs
            lines.append(
                f"throughput: median {self.throughput:,.0f} msg/s, range"
                f" {min(spread):,.0f}..{max(spread):,.0f} over {len(spread)} rounds"
            )
        if self.lost:
            lines.append(
                f"{self.lost} inputs got no output or dead letter: their latency is missing"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_json(self) -> dict[str, Any]:
        latency = self.latency
        return {
            "format": FORMAT,
            "flow": self.flow,
            "broker": self.broker,
            "messages": self.messages,
            "rate": self.rate,
            "in_flight": self.in_flight,
            "payload_size": self.payload_size,
            "keys": self.keys,
            "warmup": self.warmup,
            "probes": self.probes,
            "mode": self.describe_mode(),
            "throughput": round(self.throughput, 1),
            "latency": None if latency is None else latency.to_json(),
            "host": dict(self.host),
            "rounds": [r.to_json() for r in self.rounds],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BenchResult:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise InvalidArgument(
                f"format={found!r} is not a bench result this version reads:"
                f" expected {FORMAT!r} (written by `harness bench --json`)"
            )
        rate = data.get("rate")
        in_flight = data.get("in_flight")
        return cls(
            flow=str(data["flow"]),
            broker=str(data["broker"]),
            messages=int(data["messages"]),
            rate=None if rate is None else float(rate),
            in_flight=None if in_flight is None else int(in_flight),
            payload_size=int(data["payload_size"]),
            keys=int(data["keys"]),
            warmup=int(data["warmup"]),
            probes=bool(data["probes"]),
            rounds=tuple(Round.from_json(r) for r in data["rounds"]),
            host=dict(data.get("host", {})),
        )

    def write_json(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path | str) -> BenchResult:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(
                f"cannot read a bench result from {path} ({exc}): give a file written by"
                " `harness bench --json`"
            ) from exc
        return cls.from_json(data)

    def svg(self) -> str:
        """Latency (log scale) and lag over time, one line per round."""
        return _svg(self)

    def write_svg(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.svg())
        return path


def _row(
    label: str,
    throughput: float,
    latency: Distribution | None,
    in_service: Distribution | None,
    lost: int,
) -> tuple[str, ...]:
    cells = [label, f"{throughput:,.0f}"]
    for percentile in PERCENTILES:
        cells.append(_duration(latency.at(percentile)) if latency else "-")
    cells.append(_duration(latency.max_us) if latency else "-")
    cells.append(_duration(in_service.at(50.0)) if in_service else "-")
    cells.append(str(lost))
    return tuple(cells)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _duration(us: float) -> str:
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1e6:.2f} s"


# --- comparing two results ----------------------------------------------------------


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test that ``a`` and ``b`` come from one population.

    Exact (every split of the pooled midranks is enumerated) while there are at
    most 200,000 splits, else the normal approximation with a tie correction.
    1.0 when either side is empty.
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return 1.0
    ranks = _midranks([*a, *b])
    rank_sum = sum(ranks[:n])
    expected = n * (n + m + 1) / 2
    observed = abs(rank_sum - expected)
    if math.comb(n + m, n) <= _EXACT_LIMIT:
        as_extreme = total = 0
        for chosen in itertools.combinations(ranks, n):
            total += 1
            if abs(sum(chosen) - expected) >= observed - 1e-9:
                as_extreme += 1
        return as_extreme / total
    counts: dict[float, int] = {}
    for rank in ranks:
        counts[rank] = counts.get(rank, 0) + 1
    ties = sum(t**3 - t for t in counts.values())
    size = n + m
    variance = n * m / 12 * ((size + 1) - ties / (size * (size - 1)))
    if variance <= 0:
        return 1.0
    z = max(observed - 0.5, 0.0) / math.sqrt(variance)  # with continuity correction
    return min(1.0, math.erfc(z / math.sqrt(2)))


def _midranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[order[position]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


Side = Literal["a", "b"]


@dataclass(frozen=True, kw_only=True)
class MetricComparison:
    """One figure of two results, round by round."""

    name: str
    unit: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    higher_is_better: bool

    @property
    def p_value(self) -> float:
        return mann_whitney_p(self.a, self.b)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def ratio(self) -> float:
        """median(b) / median(a)."""
        if not self.a or not self.b:
            return math.nan
        base = statistics.median(self.a)
        return statistics.median(self.b) / base if base else math.inf

    @property
    def better(self) -> Side | None:
        """The side whose figure is better, when the difference is significant."""
        if not self.significant:
            return None
        b_higher = statistics.median(self.b) > statistics.median(self.a)
        return "b" if b_higher == self.higher_is_better else "a"

    def __str__(self) -> str:
        def figures(values: tuple[float, ...]) -> str:
            if not values:
                return "-"
            if len(values) == 1:
                return f"{values[0]:,.0f}"
            return f"{statistics.median(values):,.0f} [{min(values):,.0f}..{max(values):,.0f}]"

        verdict = f"{self.better} is better" if self.better else "within the noise"
        return (
            f"{self.name}: a {figures(self.a)} {self.unit}, b {figures(self.b)} {self.unit},"
            f" b/a {self.ratio:.3f}, p={self.p_value:.3f} ({verdict})"
        )


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Which of two bench results is faster, and whether the difference is beyond the noise.

    Method: each round is one independent sample. For throughput and for the
    rounds' p50 and p99 latencies, a two-sided Mann-Whitney U test on the
    per-round figures of ``a`` against ``b``; a difference is significant when
    p < 0.05. With few rounds nothing can be significant: 3 rounds against 3
    give p >= 0.1, 4 against 4 p >= 0.029, so use ``rounds >= 4`` on both
    sides. ``faster`` judges throughput when both ran as fast as possible (or
    closed loop), and p50 latency when either ran at a fixed rate, where
    throughput only repeats the rate.
    """

    a: BenchResult
    b: BenchResult
    throughput: MetricComparison
    latency_p50: MetricComparison
    latency_p99: MetricComparison

    @property
    def deciding(self) -> MetricComparison:
        if self.a.rate is not None or self.b.rate is not None:
            return self.latency_p50
        return self.throughput

    @property
    def faster(self) -> Side | None:
        """ "a" or "b" when one is significantly faster; None when within the noise."""
        return self.deciding.better

    @property
    def settings_differ(self) -> list[str]:
        names = ("flow", "broker", "messages", "rate", "in_flight", "payload_size", "keys")
        return [
            f"{name} {getattr(self.a, name)!r} vs {getattr(self.b, name)!r}"
            for name in names
            if getattr(self.a, name) != getattr(self.b, name)
        ]

    def summary(self) -> str:
        deciding = self.deciding
        if self.faster is None:
            minimum = min(len(deciding.a), len(deciding.b))
            verdict = "no significant difference" + (
                f" (only {minimum} round{'s' if minimum != 1 else ''} on one side: use"
                " rounds >= 4 on both)"
                if minimum < 4
                else ""
            )
        else:
            verdict = f"{self.faster} is faster ({deciding.name}, p={deciding.p_value:.3f})"
        lines = [
            f"a: {self.a.flow} on {self.a.broker}, {len(self.a.rounds)} rounds;"
            f" b: {self.b.flow} on {self.b.broker}, {len(self.b.rounds)} rounds: {verdict}",
            f"  {self.throughput}",
            f"  {self.latency_p50}",
            f"  {self.latency_p99}",
        ]
        differ = self.settings_differ
        if differ:
            lines.append("  note: different settings: " + "; ".join(differ))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def compare(a: BenchResult, b: BenchResult) -> Comparison:
    """Compare ``b`` against ``a`` round by round (method in :class:`Comparison`)."""

    def per_round(result: BenchResult, percentile: float) -> tuple[float, ...]:
        return tuple(r.latency.at(percentile) / 1000 for r in result.rounds if r.latency)

    return Comparison(
        a=a,
        b=b,
        throughput=MetricComparison(
            name="throughput",
            unit="msg/s",
            a=a.throughputs,
            b=b.throughputs,
            higher_is_better=True,
        ),
        latency_p50=MetricComparison(
            name="p50 latency",
            unit="ms",
            a=per_round(a, 50.0),
            b=per_round(b, 50.0),
            higher_is_better=False,
        ),
        latency_p99=MetricComparison(
            name="p99 latency",
            unit="ms",
            a=per_round(a, 99.0),
            b=per_round(b, 99.0),
            higher_is_better=False,
        ),
    )


# --- running it -------------------------------------------------------------------------


def _check_count(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{name}={value!r} is invalid: give a whole number >= {minimum}")
    return value


def _validate(
    messages: int,
    rate: float | None,
    in_flight: int | None,
    payload_size: int,
    keys: int,
    warmup: int,
    rounds: int,
) -> None:
    _check_count("messages", messages, minimum=1)
    _check_count("payload_size", payload_size, minimum=0)
    _check_count("keys", keys, minimum=0)
    _check_count("warmup", warmup, minimum=0)
    _check_count("rounds", rounds, minimum=1)
    if in_flight is not None:
        _check_count("in_flight", in_flight, minimum=1)
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise InvalidArgument(f"rate={rate!r} is invalid: give messages per second, e.g. 500")
        if not 0 < rate < math.inf:
            raise InvalidArgument(f"rate={rate!r} is invalid: give a positive number of msg/s")
        if in_flight is not None:
            raise InvalidArgument(
                f"rate={rate!r} and in_flight={in_flight!r} are exclusive: a fixed rate is"
                " open loop, in_flight is closed loop; give one"
            )


def _host() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def inputs(count: int, *, payload_size: int, keys: int, start: int = 0) -> list[Message]:
    """``count`` inputs: ``payload_size``-byte values (numbered), keys cycling over ``keys``."""
    made = []
    for number in range(start, start + count):
        value = f"{number:012d}".encode().ljust(payload_size, b".")[:payload_size]
        key = f"key-{number % keys}".encode() if keys else None
        made.append(Message(value=value, key=key))
    return made


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
    _validate(messages, rate, in_flight, payload_size, keys, warmup, rounds)
    if broker is None:
        with brokers.provision(flow.broker) as info:
            return await bench(
                flow,
                messages=messages,
                rate=rate,
                in_flight=in_flight,
                payload_size=payload_size,
                keys=keys,
                broker=info,
                warmup=warmup,
                rounds=rounds,
            )
    measured: list[Round] = []
    async with brokers.adapter(broker) as adapter:
        for _ in range(rounds):
            measured.append(
                await _round(
                    flow,
                    broker,
                    adapter,
                    messages=messages,
                    rate=rate,
                    in_flight=in_flight,
                    payload_size=payload_size,
                    keys=keys,
                    warmup=warmup,
                )
            )
    return BenchResult(
        flow=flow.label,
        broker=flow.broker,
        messages=messages,
        rate=None if rate is None else float(rate),
        in_flight=in_flight,
        payload_size=payload_size,
        keys=keys,
        warmup=warmup,
        probes=flow.probes,
        rounds=tuple(measured),
        host=_host(),
    )


class _Driver:
    """Publishes stamped inputs into a live run and notices their outputs."""

    def __init__(self, live: LiveRun) -> None:
        self.live = live
        self.due_ns: dict[str, int] = {}
        self.done: set[str] = set()
        self._numbers = itertools.count(1)
        self._seen = 0

    def stamp(self, message: Message) -> tuple[str, Message]:
        harness_id = f"{self.live.run_id}-{next(self._numbers)}"
        return harness_id, message.with_headers(**{HARNESS_ID_HEADER: harness_id.encode()})

    async def publish(self, harness_id: str, message: Message) -> None:
        live = self.live
        at_ns = time.perf_counter_ns()
        receipt = await live.adapter.publish(live.endpoints.input, message)
        live.history.record(
            Kind.PUBLISHED,
            "harness",
            at_ns=at_ns,
            harness_id=harness_id,
            destination=live.endpoints.input,
            key=message.key,
            partition=receipt.partition,
            offset=receipt.offset,
            message=message,
        )
        live.published.append(message)

    def poll(self) -> set[str]:
        """Fold newly recorded outputs and dead letters into ``done``."""
        events = self.live.history.events
        for event in events[self._seen :]:
            if event.kind in (Kind.OUTPUT, Kind.DEAD_LETTERED) and event.harness_id:
                self.done.add(event.harness_id)
        self._seen = len(events)
        return self.done

    async def await_outputs(
        self, ids: Sequence[str], *, quiet: float, what: str, strict: bool = True
    ) -> None:
        """Wait until every input in ``ids`` is accounted for, or ``quiet`` s pass without
        progress: then raise HarnessTimeout (``strict``) or return."""
        waiting = set(ids) - self.poll()
        last_progress = time.monotonic()
        while waiting:
            await asyncio.sleep(_POLL_S)
            before = len(waiting)
            waiting -= self.poll()
            now = time.monotonic()
            if len(waiting) < before:
                last_progress = now
            elif now - last_progress > quiet:
                if not strict:
                    return
                raise HarnessTimeout(
                    f"{what}: {len(waiting)} of {len(ids)} inputs got no output or dead letter,"
                    f" and nothing arrived for {quiet:g} s: does the service copy the"
                    f" {HARNESS_ID_HEADER} header to its outputs (else pass Flow(correlate=...))?"
                    " Raise Flow(quiet=...) if it is just slow"
                )

    async def fastest(self, stamped: Sequence[tuple[str, Message]]) -> None:
        queue = iter(stamped)

        async def worker() -> None:
            for harness_id, message in queue:
                await self.publish(harness_id, message)

        await _all(worker() for _ in range(min(PUBLISH_CONCURRENCY, len(stamped))))

    async def at_rate(self, stamped: Sequence[tuple[str, Message]], rate: float) -> None:
        begin = time.perf_counter_ns()
        period_ns = 1e9 / rate
        slots = asyncio.Semaphore(_MAX_OUTSTANDING)
        tasks: list[asyncio.Task[None]] = []

        async def one(harness_id: str, message: Message) -> None:
            try:
                await self.publish(harness_id, message)
            finally:
                slots.release()

        try:
            for index, (harness_id, message) in enumerate(stamped):
                due = begin + round(index * period_ns)
                delay = (due - time.perf_counter_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                self.due_ns[harness_id] = due
                await slots.acquire()
                tasks.append(asyncio.create_task(one(harness_id, message)))
                if len(tasks) % 1000 == 0:
                    _raise_failed(tasks)  # a broker that refuses stops the run early
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def closed_loop(
        self, stamped: Sequence[tuple[str, Message]], in_flight: int, *, quiet: float
    ) -> None:
        queue = iter(stamped)
        waiters: dict[str, asyncio.Event] = {}

        async def watch() -> None:
            while True:
                for harness_id in self.poll() & waiters.keys():
                    waiters.pop(harness_id).set()
                await asyncio.sleep(_POLL_S)

        async def worker() -> None:
            for harness_id, message in queue:
                answered = waiters[harness_id] = asyncio.Event()
                await self.publish(harness_id, message)
                # A lost output must not stall the loop: after ``quiet`` s, move on.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(quiet):
                        await answered.wait()
                waiters.pop(harness_id, None)

        watcher = asyncio.create_task(watch())
        try:
            await _all(worker() for _ in range(min(in_flight, len(stamped))))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _raise_failed(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error


async def _all(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run every coroutine; the first failure cancels the rest and is raised."""
    async with asyncio.TaskGroup() as group:
        for item in work:
            group.create_task(item)


def _direct(broker: BrokerInfo) -> BrokerInfo:
    """``broker`` without its Kafka fault-proxy listeners, so the service connects directly.

    A bench injects no faults, and a proxy would add a hop, in this very event
    loop, to every request of the service (RabbitMQ services still get one:
    the runner puts a proxy in front of every RabbitMQ instance).
    """
    extra = {k: v for k, v in broker.extra.items() if not k.startswith("proxy")}
    return dataclasses.replace(broker, extra=extra)


async def _round(
    flow: Flow,
    broker: BrokerInfo,
    adapter: BrokerAdapter,
    *,
    messages: int,
    rate: float | None,
    in_flight: int | None,
    payload_size: int,
    keys: int,
    warmup: int,
) -> Round:
    # The run's deadline must outlast publishing at the slowest expected pace.
    pace = rate if rate is not None else 200.0
    timed = dataclasses.replace(flow, timeout=flow.timeout + (messages + warmup) / pace)
    async with LiveRun(timed, broker=_direct(broker), adapter=adapter) as live:
        driver = _Driver(live)
        if warmup:
            warm = [driver.stamp(m) for m in inputs(warmup, payload_size=payload_size, keys=keys)]
            await driver.fastest(warm)
            await driver.await_outputs(
                [hid for hid, _ in warm], quiet=flow.quiet, what=f"warm-up of {flow.label}"
            )
        stamped = [
            driver.stamp(m)
            for m in inputs(messages, payload_size=payload_size, keys=keys, start=warmup)
        ]
        measured = [hid for hid, _ in stamped]
        cpu_began = time.process_time()
        if rate is not None:
            await driver.at_rate(stamped, rate)
        elif in_flight is not None:
            await driver.closed_loop(stamped, in_flight, quiet=flow.quiet)
        else:
            await driver.fastest(stamped)
        await driver.await_outputs(measured, quiet=flow.quiet, what="", strict=False)
        cpu_seconds = time.process_time() - cpu_began
        result = await live.finish()
    return analyze(
        result.history,
        measured,
        due_ns=driver.due_ns,
        ended_by=result.ended_by,
        cpu_seconds=cpu_seconds,
    )


# --- the picture --------------------------------------------------------------------------

_ROUND_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _svg(result: BenchResult) -> str:
    left, width, panel, gap, top = 80, 900, 220, 60, 66
    height = top + 2 * panel + gap + 50
    series = [r.series for r in result.rounds]
    span = max((s[-1].t_s for s in series if s), default=0.0) or 1.0
    latencies = [v for s in series for p in s for v in (p.p50_us, p.max_us) if v is not None]
    low_exp = math.floor(math.log10(max(min(latencies, default=1000), 1) / 1000))
    high_exp = math.ceil(math.log10(max(max(latencies, default=1000), 1) / 1000))
    if high_exp <= low_exp:
        high_exp = low_exp + 1
    max_lag = max((p.lag for s in series for p in s), default=0) or 1

    def x(t_s: float) -> float:
        return left + t_s / span * width

    def y_latency(us: int) -> float:
        exponent = math.log10(max(us, 1) / 1000)
        return top + panel - (exponent - low_exp) / (high_exp - low_exp) * panel

    def y_lag(lag: int) -> float:
        return top + panel + gap + panel - lag / max_lag * panel

    latency = result.latency
    title = (
        f"{result.flow} on {result.broker}: {result.throughput:,.0f} msg/s (median of"
        f" {_plural(len(result.rounds), 'round')}), {result.describe_mode()}"
    )
    subtitle = (
        f"latency p50 {_duration(latency.at(50.0))}, p99 {_duration(latency.at(99.0))},"
        f" max {_duration(latency.max_us)} over {latency.count:,} inputs"
        if latency
        else "no input got an output"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}"'
        ' font-family="monospace" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="13">{html.escape(title)}</text>',
        f'<text x="10" y="34">{html.escape(subtitle)}</text>',
        f'<text x="10" y="{top - 8}">latency (ms, log scale): solid p50, dashed max</text>',
        f'<text x="10" y="{top + panel + gap - 8}">lag (inputs published, not yet output)</text>',
    ]
    for panel_top in (top, top + panel + gap):
        parts.append(
            f'<rect x="{left}" y="{panel_top}" width="{width}" height="{panel}" fill="none"'
            ' stroke="#999"/>'
        )
    for exponent in range(low_exp, high_exp + 1):
        ms = 10.0**exponent
        yy = y_latency(round(ms * 1000))
        parts.append(
            f'<line x1="{left}" y1="{yy:.1f}" x2="{left + width}" y2="{yy:.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{ms:g}</text>')
    for tick in sorted({0, max_lag // 2, max_lag}):
        parts.append(
            f'<text x="{left - 6}" y="{y_lag(tick) + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        xx = x(span * fraction)
        parts.append(
            f'<text x="{xx:.1f}" y="{height - 20}" text-anchor="middle">'
            f"{span * fraction:.2f} s</text>"
        )
    for number, samples in enumerate(series):
        colour = _ROUND_COLOURS[number % len(_ROUND_COLOURS)]
        for attribute, dash in (("p50_us", ""), ("max_us", ' stroke-dasharray="4 3"')):
            points = [
                f"{x(s.t_s):.1f},{y_latency(value):.1f}"
                for s in samples
                if (value := getattr(s, attribute)) is not None
            ]
            if points:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}"{dash} points="{" ".join(points)}"/>'
                )
        # Lag is a count that changes in steps: draw it as steps.
        lag_points, previous = [f"{x(0):.1f},{y_lag(0):.1f}"], 0
        for sample in samples:
            lag_points.append(f"{x(sample.t_s):.1f},{y_lag(previous):.1f}")
            lag_points.append(f"{x(sample.t_s):.1f},{y_lag(sample.lag):.1f}")
            previous = sample.lag
        parts.append(f'<polyline fill="none" stroke="{colour}" points="{" ".join(lag_points)}"/>')
        if len(series) > 1:
            parts.append(
                f'<text x="{left + 420 + 70 * number}" y="{top - 8}" fill="{colour}">'
                f"round {number + 1}</text>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


# --- pytest: the flow_bench fixture -------------------------------------------------------


class FlowBench:
    """``result = await flow_bench(flow, messages=500)``: bench a flow on the session's broker.

    Takes the options of :func:`bench` (the broker is the session's
    ``kafka_broker`` / ``rabbitmq_broker``), writes the result's JSON and SVG
    next to the test's temporary files, and lists it in the terminal summary.
    It asserts nothing: compare ``result.throughput`` or ``result.latency``
    yourself if a test must fail on a slowdown.
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self.results: list[BenchResult] = []

    async def __call__(self, flow: Flow, **options: Any) -> BenchResult:
        if "broker" in options:
            raise InvalidArgument(
                "flow_bench takes the session's broker: drop broker=, or call harness bench()"
            )
        request = self._request
        broker: BrokerInfo = request.getfixturevalue(f"{flow.broker}_broker")
        result = await bench(flow, broker=broker, **options)
        self.results.append(result)
        directory: Path = request.getfixturevalue("tmp_path")
        stem = f"bench-{flow.label}-{len(self.results)}"
        json_path = result.write_json(directory / f"{stem}.json")
        svg_path = result.write_svg(directory / f"{stem}.svg")
        _collected(request.config).append((request.node.nodeid, result, json_path, svg_path))
        return result


@functools.cache
def _results_key() -> Any:
    import pytest

    return pytest.StashKey[list[tuple[str, BenchResult, Path, Path]]]()


def _collected(config: pytest.Config) -> list[tuple[str, BenchResult, Path, Path]]:
    key = _results_key()
    found: list[tuple[str, BenchResult, Path, Path]] | None = config.stash.get(key, None)
    if found is None:
        found = config.stash[key] = []
    return found


def make_flow_bench(request: pytest.FixtureRequest) -> FlowBench:
    """The body of the ``flow_bench`` fixture (function scope)."""
    return FlowBench(request)


def terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every flow_bench result of the session (call from ``pytest_terminal_summary``)."""
    found = terminalreporter.config.stash.get(_results_key(), None)
    if not found:
        return
    terminalreporter.write_sep("-", "flow_bench results")
    for nodeid, result, json_path, svg_path in found:
        terminalreporter.write_line(nodeid)
        for line in result.table().splitlines():
            terminalreporter.write_line(f"  {line}")
        terminalreporter.write_line(f"  json: {json_path}  svg: {svg_path}")


# --- the command: harness bench MODULE:FLOW -------------------------------------------------


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``harness bench`` (what :func:`bench_command` reads)."""
    parser.add_argument("flow", metavar="MODULE:FLOW", help="e.g. myservice.tests:flow")
    parser.add_argument(
        "--messages",
        type=positive_int,
        default=1000,
        metavar="N",
        help="measured inputs per round (default 1000)",
    )
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--rate",
        type=positive_rate,
        default=None,
        metavar="R",
        help="publish at R msg/s, open loop (default: as fast as possible)",
    )
    pacing.add_argument(
        "--in-flight",
        type=positive_int,
        default=None,
        metavar="K",
        help="closed loop: at most K inputs unanswered (1: round trip)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        metavar="K",
        help="runs of the service (use >= 4 to compare; default 1)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="unmeasured inputs first, per round (default 100)",
    )
    parser.add_argument("--payload-size", type=non_negative_int, default=100, metavar="BYTES")
    parser.add_argument(
        "--keys",
        type=non_negative_int,
        default=10,
        metavar="K",
        help="distinct keys (0: no key; default 10)",
    )
    parser.add_argument("--json", default=None, metavar="FILE", help="write the result")
    parser.add_argument(
        "--svg", default=None, metavar="FILE", help="write latency and lag over time"
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="OLD.json",
        help="compare with an earlier --json result; exit 1 if slower",
    )
    parser.add_argument("--kafka-bootstrap", default=None, metavar="HOST:PORT")
    parser.add_argument("--amqp-url", default=None, metavar="URL")
    parser.add_argument(
        "--verbose", action="store_true", help="show the drivers' and services' logs"
    )


def bench_command(flow: Flow, args: argparse.Namespace) -> int:
    """``harness bench``: 0 done, 1 inputs without output or significantly slower than
    ``--compare``; a HarnessError (exit 2 in the CLI) for usage and broker errors.

    ``flow`` is the Flow that ``args.flow`` names: the CLI loads it (this module
    does not import the CLI, which imports it).
    """
    baseline = BenchResult.load(args.compare) if args.compare else None
    kafka_bootstrap = getattr(args, "kafka_bootstrap", None)
    amqp_url = getattr(args, "amqp_url", None)
    url = kafka_bootstrap if flow.broker == "kafka" else amqp_url
    with brokers.provision(flow.broker, url=url) as info:
        print(f"benching {flow.label} on {flow.broker} at {redact_url(info.url)}", flush=True)
        result = asyncio.run(
            bench(
                flow,
                messages=args.messages,
                rate=args.rate,
                in_flight=getattr(args, "in_flight", None),
                payload_size=getattr(args, "payload_size", 100),
                keys=getattr(args, "keys", 10),
                broker=info,
                warmup=getattr(args, "warmup", 100),
                rounds=args.rounds,
            )
        )
    print(result.table())
    if args.json:
        print(f"JSON: {result.write_json(args.json)}")
    if args.svg:
        print(f"SVG: {result.write_svg(args.svg)}")
    status = 0 if result.lost == 0 else 1
    if baseline is not None:
        comparison = compare(baseline, result)
        print(f"compared with {args.compare} (a = that, b = this run):")
        print(comparison.summary())
        if comparison.faster == "a":
            status = 1
    sys.stdout.flush()
    return status


__all__ = (
    "FORMAT",
    "BenchResult",
    "Comparison",
    "Distribution",
    "FlowBench",
    "MetricComparison",
    "Round",
    "Sample",
    "add_bench_arguments",
    "analyze",
    "bench",
    "bench_command",
    "compare",
    "inputs",
    "make_flow_bench",
    "mann_whitney_p",
    "terminal_summary",
)
