"""Fixtures shared by the integration tests: the same contract on every broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from message_flow_harness import BrokerAdapter, BrokerInfo, brokers


@pytest.fixture(
    params=[
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
def any_broker(request: pytest.FixtureRequest) -> BrokerInfo:
    """Each real broker in turn (the plugin's session fixtures)."""
    info: BrokerInfo = request.getfixturevalue(f"{request.param}_broker")
    return info


@pytest_asyncio.fixture
async def any_adapter(any_broker: BrokerInfo) -> AsyncIterator[BrokerAdapter]:
    async with brokers.adapter(any_broker) as adapter:
        yield adapter


@pytest.fixture
def unique() -> str:
    """A destination-name prefix no other test (or worker) uses."""
    return f"t-{uuid.uuid4().hex[:12]}"
