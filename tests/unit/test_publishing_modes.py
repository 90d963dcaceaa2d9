"""``Flow(publishing=...)`` reaches the Kafka producer the adapter builds for each mode.

No broker: the producers are built and stopped unstarted. What the modes do on
a real broker (commit markers, the ``read_committed`` view) is checked in
tests/integration/kafka/test_transactions.py.
"""

from __future__ import annotations

import asyncio

import pytest

from message_flow_harness import brokers
from message_flow_harness._broker import PUBLISHING, Publishing
from message_flow_harness.brokers.kafka import KafkaAdapter


def _producer_settings(adapter: KafkaAdapter, publishing: Publishing) -> tuple[bool, str | None]:
    """Whether the producer ``adapter`` builds for ``publishing`` is idempotent, and its
    transactional id."""

    async def build() -> tuple[bool, str | None]:
        producer = adapter._new_producer(1, publishing)
        try:
            # aiokafka keeps a transaction manager exactly for idempotent producers.
            manager = producer._txn_manager
            return manager is not None, None if manager is None else manager.transactional_id
        finally:
            await producer.stop()

    return asyncio.run(build())


def _adapter() -> KafkaAdapter:
    adapter = brokers.adapter(brokers.info_from_url("kafka", "127.0.0.1:9"))
    assert isinstance(adapter, KafkaAdapter)
    return adapter


@pytest.mark.parametrize(
    ("publishing", "idempotent", "transactional"),
    [("plain", False, False), ("idempotent", True, False), ("transactional", True, True)],
)
def test_each_mode_builds_its_producer(
    publishing: Publishing, idempotent: bool, transactional: bool
) -> None:
    built_idempotent, transactional_id = _producer_settings(_adapter(), publishing)
    assert built_idempotent is idempotent
    assert (transactional_id is not None) is transactional


def test_two_adapters_transactional_ids_differ_so_neither_fences_the_other() -> None:
    first = _producer_settings(_adapter(), "transactional")[1]
    second = _producer_settings(_adapter(), "transactional")[1]
    assert first is not None
    assert second is not None
    assert first != second


def test_the_modes_are_the_kafka_drivers() -> None:
    from message_flow_harness._drivers import driver

    assert driver("kafka").publishing_modes == PUBLISHING
    assert driver("rabbitmq").publishing_modes == ("plain",)
