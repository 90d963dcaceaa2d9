"""Fixtures of the Kafka-only tests; the broker is the plugin's session ``kafka_broker``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from message_flow_harness import BrokerInfo
from message_flow_harness.brokers.kafka import KafkaAdapter


@pytest_asyncio.fixture
async def adapter(kafka_broker: BrokerInfo) -> AsyncIterator[KafkaAdapter]:
    async with KafkaAdapter(kafka_broker) as opened:
        yield opened


@pytest.fixture
def topic_name() -> str:
    """A topic name unique to this test."""
    return f"test-{uuid.uuid4().hex[:12]}"
