"""Fixtures of the RabbitMQ-only tests; the broker is the plugin's session ``rabbitmq_broker``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from message_flow_harness import BrokerInfo
from message_flow_harness.brokers.rabbitmq import RabbitAdapter


@pytest_asyncio.fixture
async def adapter(rabbitmq_broker: BrokerInfo) -> AsyncIterator[RabbitAdapter]:
    async with RabbitAdapter(rabbitmq_broker) as opened:
        yield opened


@pytest.fixture
def unique() -> str:
    """A queue-name prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"
