"""A fuzz report's files: one JSON schema for ``harness fuzz --json`` and the report directory,
and the HTML report beside it."""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from message_flow_harness import (
    Endpoints,
    Flow,
    FuzzReport,
    History,
    Message,
    RunResult,
    _html_report,
)
from message_flow_harness._checks import Anomaly, Verdict
from message_flow_harness._cli import fuzz_json
from message_flow_harness._history import LogEntry
from message_flow_harness._html_report import MAX_ANOMALIES
from message_flow_harness._report import FORMAT, Unsteady, write_failure
from message_flow_harness.schedule import Crash, Join, Publish
from tests.unit.histories import Script


@asynccontextmanager
async def service(endpoints: Endpoints) -> AsyncIterator[None]:
    yield


FLOW = Flow(sut=service, broker="kafka", name="orders")
FIRST, SECOND = Message(key=b"k", value=b"1"), Message(key=b"k", value=b"2")
HISTORY = Script().publish("r-1", key=b"k").publish("r-2", key=b"k").output("r-2").output("r-1")
MINIMAL = RunResult(
    flow=FLOW,
    endpoints=Endpoints(
        kind="kafka",
        input="in-1",
        output="out-1",
        dead_letter="dlq-1",
        bootstrap_servers="localhost:9092",
    ),
    messages=(FIRST, SECOND),
    schedule=(Publish(FIRST), Crash(0), Publish(SECOND)),
    history=HISTORY.build(),
    verdicts=(
        Verdict("no_loss()"),
        Verdict("per_key_order()", (Anomaly("nonmonotonic", "#2 before #1", ("r-1", "r-2")),)),
    ),
    ended_by="quiet",
)

#: What ``harness fuzz --json`` wrote before both outputs shared one schema (kept as they
#: were, but for ``timeline``, the SVG that format 2 replaced by the HTML ``report``).
CLI_FIELDS = {
    "flow", "broker", "ok", "examples", "elapsed_s", "seed", "violations", "minimal_example",
    "reruns", "reruns_failed", "flaky", "history", "report", "reproduction",
}  # fmt: skip


def failed() -> FuzzReport:
    return FuzzReport(
        flow=FLOW,
        examples=12,
        elapsed=3.2104,
        seed=1,
        minimal=MINIMAL,
        first_failure_at=7,
        reruns=[True, False, True],
        flow_reference="shop.tests:orders",
    )


def shape(data: Any) -> Any:
    """The keys and value types of ``data``, recursively (a list by its items' shapes)."""
    if isinstance(data, dict):
        return {key: shape(value) for key, value in data.items()}
    if isinstance(data, list):
        return sorted({json.dumps(shape(item), sort_keys=True) for item in data})
    return type(data).__name__


def test_the_report_directory_and_json_option_write_one_schema(tmp_path: Path) -> None:
    report = failed()
    write_failure(report, tmp_path)
    assert report.history_path is not None
    saved = json.loads(report.history_path.read_text())
    written = json.loads(json.dumps(fuzz_json(report), indent=1))  # as `harness fuzz --json`
    assert shape(saved) == shape(written)
    assert saved == written
    assert saved["format"] == FORMAT == "message-flow-harness/fuzz/2"
    assert "timeline" not in saved


def test_nothing_either_output_had_is_lost(tmp_path: Path) -> None:
    report = failed()
    write_failure(report, tmp_path)
    data = fuzz_json(report)
    assert set(data) >= CLI_FIELDS
    assert (data["ok"], data["examples"], data["elapsed_s"], data["seed"]) == (False, 12, 3.21, 1)
    assert (data["reruns"], data["reruns_failed"], data["flaky"]) == (3, 2, False)
    assert data["first_failure_at"] == 7
    # The report directory's "schedule" and "history" (the events) are these two now.
    assert data["minimal_example"] == [repr(step) for step in MINIMAL.schedule]
    history = History.from_json(data["minimal_history"])
    assert list(history) == list(MINIMAL.history)
    [violation] = data["violations"]
    assert violation == {
        "check": "per_key_order()",
        "anomalies": [{"kind": "nonmonotonic", "text": "#2 before #1", "ids": ["r-1", "r-2"]}],
    }
    assert data["history"] == str(report.history_path)
    assert data["report"] == str(report.report_path)
    assert Path(data["report"]).read_text().startswith("<!DOCTYPE html>")
    assert "from shop.tests import orders as flow" in data["reproduction"]


def test_a_passing_report_has_the_same_fields() -> None:
    passed = fuzz_json(FuzzReport(flow=FLOW, examples=100, elapsed=20.0, seed=None))
    assert set(passed) == set(fuzz_json(failed()))
    assert passed["ok"] is True
    assert passed["violations"] == []
    assert passed["minimal_example"] is passed["minimal_history"] is passed["history"] is None
    assert passed["report"] is None


def test_the_html_report_says_the_verdict_and_holds_everything(tmp_path: Path) -> None:
    report = failed()
    write_failure(report, tmp_path)
    assert report.report_path is not None
    page = report.report_path.read_text()
    assert "<title>orders: FAIL - 1 nonmonotonic</title>" in page
    assert "<svg" in page
    assert "#2 output before #1" in page
    assert html.escape("from shop.tests import orders as flow") in page  # the reproduction
    events = page.split("<h2>History</h2>")[1]
    assert events.count("<tr") == len(MINIMAL.history) + 1  # the event table and its head
    assert "12 examples" in page
    assert str(report.history_path) in page
    assert "report:" in report.summary()
    assert str(report.report_path) in report.summary()
    # Self-contained: nothing to fetch, nothing to run.
    assert "<script" not in page
    assert "src=" not in page
    assert "href=" not in page


def test_two_runs_of_a_flow_write_separate_reports(tmp_path: Path) -> None:
    first, second = failed(), failed()
    other_run = dataclasses.replace(
        MINIMAL, endpoints=dataclasses.replace(MINIMAL.endpoints, input="in-2")
    )
    second.minimal = other_run
    write_failure(first, tmp_path)
    write_failure(second, tmp_path)
    assert first.report_path != second.report_path
    assert first.history_path != second.history_path
    assert len(list(tmp_path.iterdir())) == 4


def test_a_long_list_of_anomalies_is_bounded(tmp_path: Path) -> None:
    many = tuple(Anomaly("late", f"input #{n} took long", ()) for n in range(MAX_ANOMALIES + 7))
    result = dataclasses.replace(MINIMAL, verdicts=(Verdict("within(1)", many),))
    page = _html_report.render(result, reproduction="")
    assert "<title>orders: FAIL - 32 late</title>" in page
    assert page.count("took long") == MAX_ANOMALIES
    assert "... and 7 more" in page


def test_the_html_report_shows_what_the_service_and_its_clients_logged() -> None:
    history = HISTORY.build()
    start = history.started_ns
    history.add_log(LogEntry(start + 5_000_000, "INFO", "orders.service", "consuming <orders>"))
    history.add_log(LogEntry(start + 9_000_000, "ERROR", "aiokafka.conn", "Unable to connect"))
    history.logs_dropped = 3
    page = _html_report.render(dataclasses.replace(MINIMAL, history=history), reproduction="")
    logs = page.split("<h2>Logs</h2>")[1].split("<h2>History</h2>")[0]
    assert logs.count("<tr") == 3  # the head and the two lines, in order
    assert logs.index("consuming &lt;orders&gt;") < logs.index("Unable to connect")
    assert '<tr class="ERROR">' in logs
    assert "3 older lines were not kept" in logs
    quiet = _html_report.render(MINIMAL, reproduction="")
    assert "logged nothing" in quiet.split("<h2>Logs</h2>")[1].split("<h2>History</h2>")[0]


def test_a_steadier_reproduction_keeps_the_smaller_unsteady_schedule_beside_it(
    tmp_path: Path,
) -> None:
    smaller = (Publish(Message(b"1", key=b"a")), Join())
    report = dataclasses.replace(
        failed(), reruns=[True] * 5, smaller_unsteady=Unsteady(smaller, 2, 5)
    )
    summary = report.summary()
    assert "reproduced in 5 of 5 re-runs" in summary
    assert "smallest steady schedule has 2 messages and 1 fault" in summary
    assert "a smaller one failed again in only 2 of 5 re-runs" in summary
    assert repr(smaller[0]) in summary
    assert "attempts=" not in report.reproduction()  # the steady one is what the test runs
    data = fuzz_json(report)
    assert data["smaller_unsteady"] == {
        "schedule": [repr(step) for step in smaller],
        "reruns": 5,
        "reruns_failed": 2,
    }
    assert fuzz_json(failed())["smaller_unsteady"] is None
    write_failure(report, tmp_path)
    assert report.report_path is not None
    assert "failed again in only 2 of 5 re-runs" in report.report_path.read_text()
