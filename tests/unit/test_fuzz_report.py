"""A fuzz report's JSON: one schema for ``harness fuzz --json`` and the report directory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from message_flow_harness import Endpoints, Flow, FuzzReport, History, Message, RunResult
from message_flow_harness._checks import Anomaly, Verdict
from message_flow_harness._cli import fuzz_json
from message_flow_harness._report import FORMAT, write_failure
from message_flow_harness.schedule import Crash, Publish
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

#: What ``harness fuzz --json`` wrote before both outputs shared one schema (kept as they were).
CLI_FIELDS = {
    "flow", "broker", "ok", "examples", "elapsed_s", "seed", "violations", "minimal_example",
    "reruns", "reruns_failed", "flaky", "history", "timeline", "reproduction",
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
    assert saved["format"] == FORMAT == "message-flow-harness/fuzz/1"


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
    assert data["timeline"] == str(report.timeline_path)
    assert Path(data["timeline"]).read_text().startswith("<svg")
    assert "from shop.tests import orders as flow" in data["reproduction"]


def test_a_passing_report_has_the_same_fields() -> None:
    passed = fuzz_json(FuzzReport(flow=FLOW, examples=100, elapsed=20.0, seed=None))
    assert set(passed) == set(fuzz_json(failed()))
    assert passed["ok"] is True
    assert passed["violations"] == []
    assert passed["minimal_example"] is passed["minimal_history"] is passed["history"] is None
