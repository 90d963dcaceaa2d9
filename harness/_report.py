"""What a person reads about a failure: summary, reproduction test, history JSON, timeline SVG."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness._history import Event, History, Kind
from harness._schedule import Step, faults_of, messages_of

if TYPE_CHECKING:
    from harness._flow import Flow
    from harness._fuzz import FuzzReport


def _identifier(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_").lower() or "flow"


def reproduction_test(flow: Flow, schedule: Sequence[Step], reference: str | None) -> str:
    """A pytest test that replays ``schedule`` on ``flow`` (paste it into your suite)."""
    module, _, name = (reference or "").partition(":")
    load = (
        f"from {module} import {name} as flow\n"
        if reference
        else "flow = ...  # your Flow object\n"
    )
    steps = "".join(f"        {step!r},\n" for step in schedule)
    # Import only what the steps use, so the pasted test passes linters as it is.
    used = sorted({type(step).__name__ for step in schedule})
    imports = "from harness import Message\n" if "Publish" in used else ""
    if used:
        imports += f"from harness.schedule import {', '.join(used)}\n"
    return (
        "import pytest\n"
        f"{imports}"
        f"{load}\n\n"
        "@pytest.mark.asyncio\n"
        f"@pytest.mark.{flow.broker}\n"
        f"async def test_{_identifier(flow.label)}_minimal_reproduction(flow_check):\n"
        "    await flow_check(flow, [\n"
        f"{steps}"
        "    ])\n"
    )


def fuzz_summary(report: FuzzReport) -> str:
    head = (
        f"fuzzed {report.flow.label} on {report.flow.broker}: {report.examples} examples"
        f" in {report.elapsed:.1f} s ({report.examples_per_second:.1f}/s)"
        + (f", seed {report.seed}" if report.seed is not None else "")
    )
    if report.minimal is None:
        return f"{head}\nevery check held"
    minimal = report.minimal
    schedule = minimal.schedule
    failed_again = sum(report.reruns)
    lines = [
        head,
        f"first failure at example {report.first_failure_at};"
        f" minimal schedule has {len(messages_of(schedule))} messages and"
        f" {len(faults_of(schedule))} faults:",
        *(f"  {step!r}" for step in schedule),
        "",
        *(str(v) for v in minimal.failures()),
        "",
        f"reproduced in {failed_again} of {len(report.reruns)} re-runs"
        + (
            " (the failure did not repeat while shrinking: this is the smallest seen)"
            if report.flaky
            else ""
        ),
    ]
    if report.history_path is not None:
        lines.append(f"history:  {report.history_path}")
    if report.timeline_path is not None:
        lines.append(f"timeline: {report.timeline_path}")
    lines += ["", "reproduce it with this test:", "", report.reproduction()]
    return "\n".join(lines)


def write_failure(report: FuzzReport, directory: Path) -> tuple[Path, Path]:
    """Write the minimal run's history (JSON, with the report) and its timeline (SVG)."""
    assert report.minimal is not None
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{_identifier(report.flow.label)}-{report.minimal.endpoints.input}"
    history_path = directory / f"{stem}.json"
    history_path.write_text(
        json.dumps(
            {
                "flow": report.flow.label,
                "broker": report.flow.broker,
                "ok": False,
                "examples": report.examples,
                "seed": report.seed,
                "reruns_failed": sum(report.reruns),
                "reruns": len(report.reruns),
                "flaky": report.flaky,
                "schedule": [repr(step) for step in report.minimal.schedule],
                "violations": [
                    {
                        "check": v.check,
                        "anomalies": [
                            {"kind": a.kind, "text": a.text, "ids": list(a.harness_ids)}
                            for a in v.anomalies
                        ],
                    }
                    for v in report.minimal.failures()
                ],
                "history": report.minimal.history.to_json(),
            },
            indent=1,
        )
    )
    timeline_path = directory / f"{stem}.svg"
    timeline_path.write_text(timeline_svg(report.minimal.history, title=report.flow.label))
    return history_path, timeline_path


# --- the timeline picture ------------------------------------------------------------

_COLOURS = {
    Kind.PUBLISHED: "#1f77b4",
    Kind.DELIVERED: "#9467bd",
    Kind.ACKED: "#2ca02c",
    Kind.NACKED: "#d62728",
    Kind.COMMITTED: "#17becf",
    Kind.SENT: "#8c564b",
    Kind.OUTPUT: "#2ca02c",
    Kind.DEAD_LETTERED: "#ff7f0e",
    Kind.FAULT: "#d62728",
    Kind.NOTE: "#7f7f7f",
}


def _lane_of(event: Event) -> str:
    if event.kind is Kind.PUBLISHED:
        return "harness: published"
    if event.kind is Kind.OUTPUT:
        return "broker: output"
    if event.kind is Kind.DEAD_LETTERED:
        return "broker: dead letters"
    if event.source == "tap":
        return "broker: deliveries"
    return event.lane or event.source


def _label(event: Event) -> str:
    """The short text over a mark: which input (its number), or what happened."""
    if event.kind in (Kind.FAULT, Kind.NOTE):
        return event.detail or str(event.kind)
    if event.kind is Kind.COMMITTED:
        return f"commit p{event.partition}@{event.offset}"
    number = (event.harness_id or "?").rpartition("-")[2]
    if event.kind is Kind.NACKED:
        return f"{number} {'requeue' if event.requeue else 'reject'}"
    if event.kind is Kind.DELIVERED and event.redelivered:
        return f"{number} again"
    return number


def timeline_svg(history: History, *, title: str = "") -> str:
    """One row per lane (publisher, each consumer, broker taps), events as labelled marks."""
    events = list(history)
    lanes: list[str] = []
    for event in events:
        lane = _lane_of(event)
        if lane not in lanes:
            lanes.append(lane)
    if not events:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"></svg>'
    start = min(e.at_ns for e in events)
    span = max(max(e.at_ns for e in events) - start, 1)
    left, width, row = 190, 1000, 34
    height = 80 + row * len(lanes)

    def x(at_ns: int) -> float:
        return left + (at_ns - start) / span * width

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}"'
        ' font-family="monospace" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="13">{html.escape(title)} — {len(events)} events,'
        f" {span / 1e6:.1f} ms</text>",
    ]
    for index, lane in enumerate(lanes):
        y = 45 + index * row
        parts.append(f'<text x="10" y="{y + 4}">{html.escape(lane)}</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{left + width}" y2="{y}" stroke="#ddd"/>')
    for event in events:
        y = 45 + lanes.index(_lane_of(event)) * row
        colour = _COLOURS.get(event.kind, "#000")
        label = (
            event.detail
            if event.kind in (Kind.FAULT, Kind.NOTE)
            else ((event.harness_id or "?").rpartition("-")[2])
        )
        tip = html.escape(
            f"{event.kind} {event.harness_id or ''} {event.detail or ''}"
            f" {history.since_start(event.at_ns)}"
        )
        cx = x(event.at_ns)
        if event.kind is Kind.FAULT:
            parts.append(
                f'<line x1="{cx:.1f}" y1="30" x2="{cx:.1f}" y2="{height - 10}" stroke="{colour}"'
                ' stroke-dasharray="4 3"/>'
            )
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{y}" r="4" fill="{colour}"><title>{tip}</title></circle>'
        )
        parts.append(
            f'<text x="{cx:.1f}" y="{y - 7}" text-anchor="middle" fill="{colour}">'
            f"{html.escape(str(label))}</text>"
        )
    legend_y = height - 12
    for index, (kind, colour) in enumerate(_COLOURS.items()):
        lx = left + index * 112
        parts.append(f'<circle cx="{lx}" cy="{legend_y - 4}" r="4" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 8}" y="{legend_y}">{kind}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
