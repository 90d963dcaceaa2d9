"""A bench result drawn for people: the text table, and latency and lag over time as SVG."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from message_flow_harness._bench.stats import PERCENTILES, Distribution

if TYPE_CHECKING:
    from message_flow_harness._bench.result import BenchResult

_ROUND_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def table(result: BenchResult) -> str:
    """The figures as plain text: one line per round, then the rounds together."""
    head = (
        f"bench {result.flow} on {result.broker}: {result.messages} messages x"
        f" {_plural(len(result.rounds), 'round')}, {result.describe_mode()},"
        f" {result.payload_size} B payloads, {result.keys} keys, warm-up {result.warmup},"
        f" probes {'on' if result.probes else 'off'}"
    )
    columns = ("", "msg/s", "p50", "p90", "p99", "p99.9", "max", "in-service p50", "lost")
    rows: list[tuple[str, ...]] = [columns]
    for number, item in enumerate(result.rounds, 1):
        rows.append(
            _row(f"round {number}", item.throughput, item.latency, item.in_service, item.lost)
        )
    if len(result.rounds) > 1:
        rows.append(_row("all", result.throughput, result.latency, result.in_service, result.lost))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [head]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    if len(result.rounds) > 1:
        spread = result.throughputs
        lines.append(
            f"throughput: median {result.throughput:,.0f} msg/s, range"
            f" {min(spread):,.0f}..{max(spread):,.0f} over {len(spread)} rounds"
        )
    if result.lost:
        lines.append(f"{result.lost} inputs got no output or dead letter: their latency is missing")
    return "\n".join(lines)


def svg(result: BenchResult) -> str:
    """Latency (log scale) and lag over time, one line per round."""
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
