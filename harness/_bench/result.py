"""What a bench measured, and its JSON: one ``Round`` per run of the service, a ``BenchResult``.

The text table and the SVG picture of a result are drawn by
:mod:`harness._bench.render`; reading the figures out of a history is
:mod:`harness._bench.analysis`.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from message_flow_harness._bench import render
from message_flow_harness._bench.publishers import PUBLISH_CONCURRENCY
from message_flow_harness._bench.stats import Distribution
from message_flow_harness._errors import InvalidArgument

FORMAT = "message-flow-harness/bench/1"


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

    def settings(self) -> dict[str, object]:
        """What this bench was asked to do (two results compare when these agree)."""
        return {
            "flow": self.flow,
            "broker": self.broker,
            "messages": self.messages,
            "rate": self.rate,
            "in_flight": self.in_flight,
            "payload_size": self.payload_size,
            "keys": self.keys,
            "warmup": self.warmup,
            "probes": self.probes,
        }

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
        return render.table(self)

    def __str__(self) -> str:
        return self.table()

    def to_json(self) -> dict[str, Any]:
        latency = self.latency
        return {
            "format": FORMAT,
            **self.settings(),
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
        return render.svg(self)

    def write_svg(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.svg())
        return path
