"""A harness error after a finding is kept beside it: in the summary, the JSON and the HTML;
and what cleanup left behind is named, each with how to delete it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from message_flow_harness import BrokerInfo, DestinationSpec, FuzzReport
from message_flow_harness._errors import DestinationError
from message_flow_harness._isolation import Isolation, leftovers
from message_flow_harness._report import write_failure
from tests.unit.test_fuzz_report import FLOW, failed


def _held(group: str) -> DestinationError:
    return DestinationError(f"consumer group {group!r} still had members: delete it with X")


def test_an_error_after_the_finding_is_a_line_beside_it_with_its_notes(tmp_path: Path) -> None:
    report = failed()
    error = _held("h-1-group")
    error.add_note("partial history: p.json")
    report.add_error(error)
    [line] = report.errors
    assert line == (
        "DestinationError: consumer group 'h-1-group' still had members: delete it with X"
        " (partial history: p.json)"
    )
    summary = report.summary()
    assert f"the harness failed after finding this (the finding stands):\n  {line}" in summary
    assert "reproduce it with this test:" in summary
    write_failure(report, tmp_path)
    assert report.history_path is not None
    assert report.report_path is not None
    assert json.loads(report.history_path.read_text())["errors"] == [line]
    assert "still had members" in report.report_path.read_text()


def test_a_report_without_errors_says_nothing_of_them() -> None:
    report = failed()
    assert report.to_json()["errors"] == []
    assert "the harness failed" not in report.summary()
    passed = FuzzReport(flow=FLOW, examples=3, elapsed=1.0, seed=1)
    assert passed.to_json()["errors"] == []


def test_leftovers_shows_three_and_counts_the_rest() -> None:
    failures: list[BaseException] = [_held(f"h-{n}-group") for n in range(5)]
    text = leftovers(failures)
    assert text.startswith("5 run(s) could not delete their destinations or consumer group (")
    assert all(f"'h-{n}-group'" in text for n in range(3))
    assert "'h-3-group'" not in text
    assert "; and 2 more)" in text


class _HeldGroups:
    """Deletes topics; its groups stay held (a crashed member's session never ends here)."""

    info = BrokerInfo(kind="kafka", url="127.0.0.1:9", provider="given")

    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def create_all(self, specs: Sequence[DestinationSpec]) -> None:
        return None

    async def forget_group(self, group_id: str) -> None:
        await asyncio.sleep(0.01)
        raise _held(group_id)

    async def delete_all(self, names: Sequence[str]) -> None:
        self.deleted.extend(names)


@pytest.mark.asyncio
async def test_a_held_group_does_not_keep_its_topics_and_is_named_on_exit() -> None:
    adapter = _HeldGroups()
    isolation = Isolation(adapter, 1, ahead=1)  # type: ignore[arg-type]
    fresh = await isolation.take()
    await isolation.give_back(fresh.endpoints)
    with pytest.raises(DestinationError) as raised:
        await isolation.__aexit__(None, None, None)
    assert fresh.endpoints.input in adapter.deleted  # deleted though its group is held
    assert f"consumer group {fresh.endpoints.group_id!r} still had members" in str(raised.value)
