"""A harness error after a finding (here while shrinking) does not throw the finding away.

The search finds a failure; the next run cannot start (the service's ledger
refuses more connections), which ends the campaign. It ends with the failure
found, the reproduction and the report files, and the error beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import strategies as st

from message_flow_harness import BrokerInfo, Endpoints, Flow, checks, fuzz
from message_flow_harness import strategies as hs
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_swallows_errors

pytestmark = pytest.mark.rabbitmq


class Ledger:
    """The service's database: one connection, never given back (its defect, not ours)."""

    def __init__(self) -> None:
        self.connections = 0

    def connect(self) -> None:
        if self.connections:
            raise ConnectionRefusedError("ledger: too many connections (max 1)")
        self.connections += 1


@pytest.mark.asyncio
async def test_a_harness_error_while_shrinking_keeps_the_finding(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    ledger = Ledger()

    @contextlib.asynccontextmanager
    async def settles(endpoints: Endpoints) -> AsyncIterator[None]:
        ledger.connect()
        async with rabbitmq_swallows_errors(endpoints):
            yield

    # Every example has two poison messages, which the service swallows: the first
    # example fails, and deleting one of them is the first shrink candidate.
    flow = Flow(
        sut=settles, broker="rabbitmq", checks=[checks.no_loss()], quiet=0.5,
        messages=hs.messages(values=st.just(POISON), min_size=2, max_size=2),
    )  # fmt: skip
    report = await fuzz(
        flow, max_examples=5, seed=1, broker=rabbitmq_broker, database=None,
        report_dir=tmp_path,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    assert "lost" in report.summary()
    [error] = report.errors
    assert "raised on start: ConnectionRefusedError('ledger: too many connections" in error
    assert report.reruns == []  # what ended the search would end them too
    summary = report.summary()
    assert "the harness failed after finding this (the finding stands):" in summary
    assert "reproduce it with this test:" in summary
    assert report.history_path is not None
    assert report.report_path is not None
    assert report.report_path.exists()
    saved = json.loads(report.history_path.read_text())
    assert saved["ok"] is False
    assert saved["errors"] == [error]


# The same service for ``harness fuzz``: a module a person would pass as MODULE:FLOW.
FLOWS = """\
import contextlib

from hypothesis import strategies as st

from message_flow_harness import Flow, checks
from message_flow_harness import strategies as hs
from message_flow_harness.strategies import POISON
from message_flow_harness.zoo.rabbitmq_services import rabbitmq_swallows_errors

started = []


@contextlib.asynccontextmanager
async def settles(endpoints):
    if started:
        raise ConnectionRefusedError("ledger: too many connections (max 1)")
    started.append(endpoints)
    async with rabbitmq_swallows_errors(endpoints):
        yield


flow = Flow(
    sut=settles, broker="rabbitmq", checks=[checks.no_loss()], quiet=0.5,
    messages=hs.messages(values=st.just(POISON), min_size=2, max_size=2),
)
"""


def test_harness_fuzz_exits_1_with_the_finding_and_the_error_beside_it(
    rabbitmq_broker: BrokerInfo, tmp_path: Path
) -> None:
    (tmp_path / "ledger_flows.py").write_text(FLOWS)
    root = Path(__file__).parents[2]
    # --amqp-url names the AMQP port only: the local node's management API is elsewhere.
    management = {"HARNESS_RABBITMQ_MANAGEMENT_URL": rabbitmq_broker.extra["management"]}
    done = subprocess.run(
        [sys.executable, "-m", "message_flow_harness._cli", "fuzz", "ledger_flows:flow",
         "--max-examples", "5", "--seed", "1", "--quiet", "--amqp-url", rabbitmq_broker.url,
         "--json", "report.json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{root}:{tmp_path}", **management},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "lost" in done.stdout
    assert "the harness failed after finding this (the finding stands):" in done.stdout
    assert "ServiceError: service settles raised on start" in done.stdout
    assert "reproduce it with this test:" in done.stdout
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["ok"] is False
    [error] = saved["errors"]
    assert "too many connections" in error
    assert list((tmp_path / "reports").glob("*.html"))  # the HTML report too
