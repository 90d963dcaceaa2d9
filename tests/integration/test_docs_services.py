"""The services of the how-to "Wire your service" keep the page's contract on real brokers.

The page's python blocks run as a reader would paste them, in order, into one
namespace; its flows then run through ``flow_check`` with the page's inputs
(a bad order between two good ones of one key). Every check of the page's
contract must hold: outputs in order, the bad order dead-lettered, nothing
lost or doubled. A service on the page that stopped doing what the page says
fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from message_flow_harness import Kind
from message_flow_harness.pytest_plugin import FlowCheck
from tests.doc_pages import page_namespace

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pages" / "how-to" / "wire-your-service.md"

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    "flow_name",
    [
        pytest.param("kafka_flow", marks=pytest.mark.kafka, id="kafka"),
        pytest.param("rabbitmq_flow", marks=pytest.mark.rabbitmq, id="rabbitmq"),
    ],
)
async def test_the_pages_service_keeps_its_contract(flow_check: FlowCheck, flow_name: str) -> None:
    page = page_namespace(PAGE)
    result = await flow_check.run(page[flow_name], page["orders"])
    assert result.ok, result.report()
    dead = [e for e in result.history if e.kind is Kind.DEAD_LETTERED]
    outputs = [e for e in result.history if e.kind is Kind.OUTPUT]
    assert [e.message.value for e in dead if e.message] == [b"not json"], result.report()
    assert len(outputs) == 2, result.report()
