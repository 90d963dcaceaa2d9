"""Statistics of timings: HdrHistogram distributions and percentiles; the Mann-Whitney U test."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

#: Percentiles every distribution reports.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)

_HIGHEST_US = 3_600_000_000  # one hour: anything slower is a hang, not a latency
_SIGNIFICANT_FIGURES = 3
_EXACT_LIMIT = 200_000  # Mann-Whitney: enumerate rank sums up to this many splits


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
