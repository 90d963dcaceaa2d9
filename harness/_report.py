"""What a person reads about a fuzz campaign: the report, its JSON, a reproduction, its HTML.

:class:`FuzzReport` is what :func:`harness.fuzz` returns; :meth:`FuzzReport.to_json`
is the one JSON schema of a fuzz report (``harness fuzz --json`` and the
report directory both write it); harness._html_report draws the HTML page of
the minimal failing run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from message_flow_harness import _html_report
from message_flow_harness._flow import Flow, RunResult
from message_flow_harness._schedule import Step, faults_of, messages_of
from message_flow_harness._text import bounded, plural, shorten

#: The ``format`` of a fuzz report's JSON: bumped when a field changes meaning or goes.
#: 2: ``timeline`` (an SVG) went; ``report`` is the HTML report, timeline included.
FORMAT = "message-flow-harness/fuzz/2"


class Unsteady(NamedTuple):
    """A smaller failing schedule than the reproduction, which failed again in few re-runs."""

    schedule: tuple[Step, ...]
    failed_again: int
    reruns: int


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
    report_path: Path | None = None  # the HTML report of the minimal run
    history_path: Path | None = None
    flow_reference: str | None = None
    #: Harness errors raised after the failure was found (a lost broker while
    #: shrinking, a consumer group that could not be deleted): the finding stands.
    errors: list[str] = field(default_factory=list)
    #: The minimal schedule shrinking ended with, when it failed again in too few
    #: re-runs and a larger one seen failing reproduced steadily (then ``minimal``).
    smaller_unsteady: Unsteady | None = None

    @property
    def ok(self) -> bool:
        return self.minimal is None

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.elapsed if self.elapsed else 0.0

    @property
    def violations(self) -> list[str]:
        return [] if self.minimal is None else [str(v) for v in self.minimal.failures()]

    def add_error(self, error: BaseException) -> None:
        """Keep ``error``, raised after the finding, as a line beside it (its notes too)."""
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", ()))
        self.errors.append(f"{type(error).__name__}: {error}{notes}")

    def reproduction(self) -> str:
        """The minimal failing schedule as a ready-to-paste pytest test."""
        if self.minimal is None:
            return ""
        return reproduction_test(
            self.flow,
            self.minimal.schedule,
            self.flow_reference,
            failed_again=(sum(self.reruns), len(self.reruns)),
        )

    def summary(self) -> str:
        return fuzz_summary(self)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (:data:`FORMAT`): what ``--json`` and the report directory hold.

        ``history`` (this JSON) and ``report`` (the HTML report) are the paths
        of the files written to the report directory (None without one);
        ``minimal_history`` is the minimal run's history itself
        (:meth:`History.to_json`); ``errors`` lists harness errors raised after
        the failure was found (the finding stands). A passing report has the
        same fields, empty or None. A violation has ``notes`` only when the run
        knows the likely cause of its anomalies (a service that consumed nothing, say).
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
                    **({"notes": list(v.notes)} if v.notes else {}),
                }
                for v in (minimal.failures() if minimal else [])
            ],
            "minimal_example": [repr(step) for step in minimal.schedule] if minimal else None,
            "reruns": len(self.reruns),
            "reruns_failed": sum(self.reruns),
            "flaky": self.flaky,
            "smaller_unsteady": _unsteady_json(self.smaller_unsteady),
            "history": str(self.history_path) if self.history_path else None,
            "report": str(self.report_path) if self.report_path else None,
            "reproduction": self.reproduction() or None,
            "minimal_history": minimal.history.to_json() if minimal else None,
            "errors": list(self.errors),
        }


def _unsteady_json(unsteady: Unsteady | None) -> dict[str, Any] | None:
    if unsteady is None:
        return None
    return {
        "schedule": [repr(step) for step in unsteady.schedule],
        "reruns": unsteady.reruns,
        "reruns_failed": unsteady.failed_again,
    }


def _identifier(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_").lower() or "flow"


#: How surely the pasted test catches a race that fails in some runs only.
CATCH_RATE = 0.99
MAX_ATTEMPTS = 20


def attempts_to_catch(failed: int, runs: int) -> int:
    """How many runs of a schedule fail at least once, :data:`CATCH_RATE` of the time.

    At the rate the re-runs saw (1 when every one failed, or none were made;
    none failing counts as half of one, the shrinking having seen it fail).
    """
    if runs == 0 or failed >= runs:
        return 1
    rate = max(failed, 0.5) / runs
    return min(MAX_ATTEMPTS, math.ceil(math.log(1 - CATCH_RATE) / math.log(1 - rate)))


def reproduction_test(
    flow: Flow,
    schedule: Sequence[Step],
    reference: str | None,
    *,
    failed_again: tuple[int, int] = (0, 0),
) -> str:
    """A pytest test that replays ``schedule`` on ``flow`` (paste it into your suite).

    ``failed_again`` (failed, re-runs) sets ``attempts`` for a race that failed
    in some re-runs only, so the pasted test still catches it.
    """
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
    attempts = attempts_to_catch(*failed_again)
    repeat, why = "", ""
    if attempts > 1:
        failed, runs = failed_again
        repeat = f", attempts={attempts}"
        why = (
            f"    # failed again in {failed} of {runs} re-runs:"
            f" {attempts} attempts catch it {CATCH_RATE:.0%} of the time\n"
        )
    return (
        "import pytest\n"
        f"{imports}"
        f"{load}\n\n"
        "@pytest.mark.asyncio\n"
        f"@pytest.mark.{flow.broker}\n"
        f"async def test_{_identifier(flow.label)}_minimal_reproduction(flow_check):\n"
        f"{why}"
        "    await flow_check(flow, [\n"
        f"{steps}"
        f"    ]{repeat})\n"
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
    attempts = attempts_to_catch(failed_again, len(report.reruns))
    lines += [
        f"first failure at example {report.first_failure_at};"
        f" {'minimal schedule' if report.smaller_unsteady is None else 'smallest steady schedule'}"
        f" has {plural(messages, 'message')} and {plural(faults, 'fault')}:",
        *bounded([f"  {step!r}" for step in schedule], indent="  "),
        "",
        *(str(v) for v in minimal.failures()),
        "",
        f"reproduced in {failed_again} of {plural(len(report.reruns), 're-run')}"
        + (
            " (the failure did not repeat while shrinking: this is the smallest seen)"
            if report.flaky
            else ""
        )
        + (f"; the test below runs it up to {attempts} times" if attempts > 1 else ""),
    ]
    if report.smaller_unsteady is not None:
        smaller = report.smaller_unsteady
        lines += [
            f"a smaller one failed again in only {smaller.failed_again} of"
            f" {plural(smaller.reruns, 're-run')} (the race also needed luck no step sets,"
            " such as which instance gets a partition):",
            *bounded([f"  {step!r}" for step in smaller.schedule], indent="  "),
        ]
    if report.errors:
        lines += ["", "the harness failed after finding this (the finding stands):"]
        lines += [f"  {shorten(error, limit=1000)}" for error in report.errors]
        lines.append("")
    if report.history_path is not None:
        lines.append(f"history:  {report.history_path}")
    if report.report_path is not None:
        lines.append(f"report:   {report.report_path}")
    lines += ["", "reproduce it with this test:", "", report.reproduction()]
    return "\n".join(lines)


def write_failure(report: FuzzReport, directory: Path) -> None:
    """Write the report as JSON and the minimal run as a self-contained HTML page.

    Sets the report's ``history_path`` and ``report_path`` first, so the JSON
    written names both files, as ``--json`` does. The names hold the flow and
    the run's own input destination, so two flows or two runs never share one.
    """
    minimal = report.minimal
    assert minimal is not None
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{_identifier(report.flow.label)}-{minimal.endpoints.input}"
    report.history_path = directory / f"{stem}.json"
    report.report_path = directory / f"{stem}.html"
    facts = [
        ("campaign", f"{report.examples} examples in {report.elapsed:.1f} s"),
        ("seed", str(report.seed)),
        ("first failure at example", str(report.first_failure_at)),
        ("re-runs that failed again", f"{sum(report.reruns)} of {len(report.reruns)}"),
        ("report (JSON)", str(report.history_path)),
    ]
    if report.flaky:
        facts.append(("flaky", "the failure did not repeat while shrinking"))
    if report.smaller_unsteady is not None:
        smaller = report.smaller_unsteady
        facts.append(
            (
                f"a smaller schedule, failed again in only {smaller.failed_again} of"
                f" {smaller.reruns} re-runs",
                "; ".join(repr(step) for step in smaller.schedule),
            )
        )
    facts += [("harness error after the finding", error) for error in report.errors]
    _html_report.write(minimal, report.report_path, reproduction=report.reproduction(), facts=facts)
    report.history_path.write_text(json.dumps(report.to_json(), indent=1))
