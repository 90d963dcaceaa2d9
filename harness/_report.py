"""What a person reads about a fuzz campaign: the report, its JSON, a reproduction, a timeline.

:class:`FuzzReport` is what :func:`harness.fuzz` returns; :meth:`FuzzReport.to_json`
is the one JSON schema of a fuzz report (``harness fuzz --json`` and the
report directory both write it).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from message_flow_harness._flow import Flow, RunResult
from message_flow_harness._history import Event, History, Kind
from message_flow_harness._schedule import Step, faults_of, messages_of
from message_flow_harness._text import bounded, plural

#: The ``format`` of a fuzz report's JSON: bumped when a field changes meaning or goes.
FORMAT = "message-flow-harness/fuzz/1"


@dataclass(kw_only=True)
class FuzzReport:
    """What a fuzz campaign found: pass/fail, the minimal failing run, how it reproduces."""

    flow: Flow
    examples: int
    elapsed: float
    seed: int | None
    minimal: RunResult | None = None
    first_failure_at: int | None = None  # the example number that first failed
    reruns: list[bool] = field(default_factory=list)  # True where the re-run failed again
    flaky: bool = False
    timeline_path: Path | None = None
    history_path: Path | None = None
    flow_reference: str | None = None

    @property
    def ok(self) -> bool:
        return self.minimal is None

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.elapsed if self.elapsed else 0.0

    @property
    def violations(self) -> list[str]:
        return [] if self.minimal is None else [str(v) for v in self.minimal.failures()]

    def reproduction(self) -> str:
        """The minimal failing schedule as a ready-to-paste pytest test."""
        if self.minimal is None:
            return ""
        return reproduction_test(self.flow, self.minimal.schedule, self.flow_reference)

    def summary(self) -> str:
        return fuzz_summary(self)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (:data:`FORMAT`): what ``--json`` and the report directory hold.

        ``history`` and ``timeline`` are the paths of the files written to the
        report directory (None without one); ``minimal_history`` is the minimal
        run's history itself (:meth:`History.to_json`). A passing report has
        the same fields, empty or None.
        """
        minimal = self.minimal
        return {
            "format": FORMAT,
            "flow": self.flow.label,
            "broker": self.flow.broker,
            "ok": self.ok,
            "examples": self.examples,
            "elapsed_s": round(self.elapsed, 3),
            "seed": self.seed,
            "first_failure_at": self.first_failure_at,
            "violations": [
                {
                    "check": v.check,
                    "anomalies": [
                        {"kind": a.kind, "text": a.text, "ids": list(a.harness_ids)}
                        for a in v.anomalies
                    ],
                }
                for v in (minimal.failures() if minimal else [])
            ],
            "minimal_example": [repr(step) for step in minimal.schedule] if minimal else None,
            "reruns": len(self.reruns),
            "reruns_failed": sum(self.reruns),
            "flaky": self.flaky,
            "history": str(self.history_path) if self.history_path else None,
            "timeline": str(self.timeline_path) if self.timeline_path else None,
            "reproduction": self.reproduction() or None,
            "minimal_history": minimal.history.to_json() if minimal else None,
        }


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
    imports = "from message_flow_harness import Message\n" if "Publish" in used else ""
    if used:
        imports += f"from message_flow_harness.schedule import {', '.join(used)}\n"
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


def fuzz_summary(report: FuzzReport, *, rerun: str | None = None) -> str:
    """What a person reads after a campaign: counts, the seed, the minimal failure, a test.

    ``rerun`` says how to run the same search again in the reader's terms
    (the CLI passes ``--seed N``); by default, the ``fuzz()`` keyword. Long
    lists (steps, anomalies) show their first few: the JSON holds them all.
    """
    head = (
        f"fuzzed {report.flow.label} on {report.flow.broker}:"
        f" {plural(report.examples, 'example')} in {report.elapsed:.1f} s"
        f" ({report.examples_per_second:.1f}/s)"
    )
    lines = [head]
    if report.seed is not None:
        again = rerun or f"fuzz(..., seed={report.seed})"
        lines.append(f"seed {report.seed}: re-run with {again}")
    if report.minimal is None:
        return "\n".join([*lines, "every check held"])
    minimal = report.minimal
    schedule = minimal.schedule
    messages, faults = len(messages_of(schedule)), len(faults_of(schedule))
    failed_again = sum(report.reruns)
    lines += [
        f"first failure at example {report.first_failure_at};"
        f" minimal schedule has {plural(messages, 'message')} and {plural(faults, 'fault')}:",
        *bounded([f"  {step!r}" for step in schedule], indent="  "),
        "",
        *(str(v) for v in minimal.failures()),
        "",
        f"reproduced in {failed_again} of {plural(len(report.reruns), 're-run')}"
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


def write_failure(report: FuzzReport, directory: Path) -> None:
    """Write the report with the minimal run's history (JSON) and its timeline (SVG).

    Sets the report's ``history_path`` and ``timeline_path`` first, so the
    JSON written names both files, as ``--json`` does.
    """
    assert report.minimal is not None
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{_identifier(report.flow.label)}-{report.minimal.endpoints.input}"
    report.history_path = directory / f"{stem}.json"
    report.timeline_path = directory / f"{stem}.svg"
    report.timeline_path.write_text(timeline_svg(report.minimal.history, title=report.flow.label))
    report.history_path.write_text(json.dumps(report.to_json(), indent=1))


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
