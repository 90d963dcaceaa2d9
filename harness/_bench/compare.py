"""Which of two bench results is faster: a Mann-Whitney test per figure, round by round."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from message_flow_harness._bench.result import BenchResult
from message_flow_harness._bench.stats import mann_whitney_p
from message_flow_harness._text import plural

#: A p-value below this makes a difference between two results significant.
ALPHA = 0.05


Side = Literal["a", "b"]

#: The settings two results must share for their speeds to compare, and the option
#: (or Flow field) that sets each.
SETTINGS = {
    "flow": "flow",
    "broker": "broker",
    "messages": "--messages",
    "rate": "--rate",
    "in_flight": "--in-flight",
    "payload_size": "--payload-size",
    "keys": "--keys",
    "warmup": "--warmup",
    "probes": "Flow(probes=...)",
}


@dataclass(frozen=True, kw_only=True)
class SettingDifference:
    """One setting in which two bench results differ."""

    name: str
    option: str
    a: object
    b: object

    @staticmethod
    def show(value: object) -> str:
        return (
            "not given"
            if value is None
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )

    def __str__(self) -> str:
        return f"{self.option} {self.show(self.a)} vs {self.show(self.b)}"


def setting_differences(
    a: Mapping[str, object], b: Mapping[str, object]
) -> list[SettingDifference]:
    """The :data:`SETTINGS` in which ``a`` and ``b`` differ."""
    return [
        SettingDifference(name=name, option=option, a=a.get(name), b=b.get(name))
        for name, option in SETTINGS.items()
        if a.get(name) != b.get(name)
    ]


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
    def settings_differ(self) -> list[SettingDifference]:
        return setting_differences(self.a.settings(), self.b.settings())

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
        differ = self.settings_differ
        # First, so nobody reads the verdict without it.
        lines = ["note: different settings: " + "; ".join(map(str, differ))] if differ else []
        lines += [
            f"a: {self.a.flow} on {self.a.broker}, {plural(len(self.a.rounds), 'round')};"
            f" b: {self.b.flow} on {self.b.broker}, {plural(len(self.b.rounds), 'round')}:"
            f" {verdict}",
            f"  {self.throughput}",
            f"  {self.latency_p50}",
            f"  {self.latency_p99}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def compare(a: BenchResult, b: BenchResult) -> Comparison:
    """Compare ``b`` against ``a`` round by round (method in :class:`Comparison`)."""

    def latency(percentile: float) -> MetricComparison:
        def per_round(result: BenchResult) -> tuple[float, ...]:
            return tuple(r.latency.at(percentile) / 1000 for r in result.rounds if r.latency)

        return MetricComparison(
            name=f"p{percentile:g} latency",
            unit="ms",
            a=per_round(a),
            b=per_round(b),
            higher_is_better=False,
        )

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
        latency_p50=latency(50.0),
        latency_p99=latency(99.0),
    )
