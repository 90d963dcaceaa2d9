"""A FastStream app as the service under test, unchanged: in-process, and run by `faststream run`.

The app (faststream_orders.py) keeps FastStream's habits: a subscriber with
an ack policy, publishers for its topics, confirmations as new JSON records
carrying the order id. The harness reaches it through the app's settings
and correlates by that id; its aiokafka clients are probed as any others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import strategies as st

from message_flow_harness import (
    BrokerInfo,
    Endpoints,
    Flow,
    Kind,
    Message,
    by_json_field,
    checks,
    fuzz,
    process,
)
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import Crash, Publish, Restart
from tests.doc_pages import page_namespace
from tests.integration.faststream_orders import Settings, create_app, create_typed_app

pytestmark = [pytest.mark.asyncio, pytest.mark.kafka]


def settings_for(endpoints: Endpoints) -> Settings:
    """The app's own settings, pointed at the run's topics and group."""
    assert endpoints.bootstrap_servers is not None
    return Settings(
        bootstrap_servers=endpoints.bootstrap_servers,
        orders_topic=endpoints.input,
        confirmations_topic=endpoints.output,
        rejected_topic=endpoints.dead_letter,
        group_id=endpoints.group_id or "order-confirmer",
    )


@contextlib.asynccontextmanager
async def confirmer(endpoints: Endpoints) -> AsyncIterator[None]:
    app = create_app(settings_for(endpoints))
    await app.start()
    try:
        yield
    finally:
        await app.stop()


@contextlib.asynccontextmanager
async def typed_confirmer(endpoints: Endpoints) -> AsyncIterator[None]:
    app = create_typed_app(settings_for(endpoints))
    await app.start()
    try:
        yield
    finally:
        await app.stop()


def order(number: int) -> Message:
    return Message(
        key=b"customer-1", value=json.dumps({"id": number, "quantity": 2, "price": 5}).encode()
    )


FLOW = Flow(
    sut=confirmer,
    broker="kafka",
    correlate=by_json_field("id", output="order_id"),  # the rejected topic keeps the headers
    checks=[
        checks.no_loss(),
        checks.no_duplicates(),
        checks.per_key_order(),
        checks.dead_lettered(when=lambda message: b"price" not in message.value),
    ],
    messages=st.lists(st.integers(0, 10_000), min_size=1, max_size=5, unique=True).map(
        lambda numbers: [order(n) for n in numbers]
    ),
)


async def test_the_faststream_app_confirms_in_order_and_rejects_bad_orders(
    flow_check: FlowCheck,
) -> None:
    inputs = [order(n) for n in range(10)]
    inputs.append(Message(key=b"customer-1", value=b'{"id": 99}'))  # no quantity, no price
    result = await flow_check(FLOW, inputs)
    assert result.ok
    assert len(result.history.inputs()) == 11


async def test_a_body_that_does_not_parse_is_committed_and_gone(flow_check: FlowCheck) -> None:
    """FastStream's model-typed handler: a bad order never reaches it, and nothing rejects it."""
    flow = dataclasses.replace(FLOW, sut=typed_confirmer, name="typed")
    inputs = [order(1), Message(key=b"customer-1", value=b'{"id": 99}'), order(2)]
    with pytest.raises(pytest.fail.Exception) as failed:
        await flow_check(flow, inputs)
    report = str(failed.value)
    assert "not-dead-lettered: input #2" in report, report
    assert "input #1" not in report  # the good orders came out
    assert "input #3" not in report
    # The cause is in the run's logs (and its report): FastStream's own line.
    page = next(line for line in report.splitlines() if line.startswith("report: "))
    html = await asyncio.to_thread(Path(page.removeprefix("report: ")).read_text)
    assert "ValidationError" in html.split("<h2>Logs</h2>")[1]


async def test_a_crash_campaign_on_the_app_ends_with_a_verdict(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    """Commits after its handler returns: crashes cost redeliveries, never an order."""
    flow = dataclasses.replace(FLOW, checks=[checks.no_loss(), checks.per_key_order()])
    report = await fuzz(
        flow,
        max_examples=6,
        seed=3,
        faults=["crash"],
        broker=kafka_broker,
        database=None,
        report_dir=tmp_path,
    )
    assert report.ok, report.summary()
    assert report.examples == 6


#: The app as it is deployed: FastStream's command line, its settings in the environment.
DEPLOYED = process(
    [sys.executable, "-m", "faststream", "run", "faststream_orders:app_from_env", "--factory"],
    cwd=Path(__file__).parent,
    env={
        "KAFKA_BOOTSTRAP_SERVERS": "{bootstrap_servers}",
        "ORDERS_TOPIC": "{input}",
        "CONFIRMATIONS_TOPIC": "{output}",
        "REJECTED_TOPIC": "{dead_letter}",
        "ORDERS_GROUP": "{group_id}",
    },
    ready="started successfully",  # FastStream's own line once its subscribers run
)


async def test_the_app_run_by_faststream_s_command_line_survives_a_crash(
    flow_check: FlowCheck,
) -> None:
    flow = dataclasses.replace(FLOW, sut=DEPLOYED, name="faststream_run")
    inputs = [order(n) for n in range(6)]
    schedule = [*map(Publish, inputs[:3]), Crash(0), Restart(0), *map(Publish, inputs[3:])]
    result = await flow_check(flow, schedule)
    assert result.ok
    # What it printed is in the history, one record per line, without its terminal colours.
    printed = [e.message for e in result.history.logs if e.logger.startswith("sut0.std")]
    assert any("started successfully" in line for line in printed), printed
    assert not any("\x1b[" in line for line in printed), printed


async def test_the_how_tos_faststream_app_confirms_every_order(flow_check: FlowCheck) -> None:
    page = page_namespace(Path(__file__).parents[2] / "docs/pages/how-to/wire-your-service.md")
    flow = dataclasses.replace(page["faststream_flow"], checks=[checks.no_loss()])
    result = await flow_check(flow, [order(n) for n in range(5)])
    assert len([e for e in result.history if e.kind is Kind.OUTPUT]) == 5
