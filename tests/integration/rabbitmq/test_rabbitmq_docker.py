"""The Docker provider: a real container round trip, skipped only when no Docker engine answers."""

from __future__ import annotations

import uuid

import pytest

from message_flow_harness import BrokerUnavailable, DestinationSpec, Message, TapRecord, eventually
from message_flow_harness.brokers.rabbitmq import RabbitAdapter, start_container

pytestmark = [pytest.mark.docker, pytest.mark.asyncio]


async def test_container_broker_round_trip_with_tracing_on() -> None:
    try:
        info, stop = start_container(timeout=180.0)
    except BrokerUnavailable as exc:
        if "no Docker engine answers" not in str(exc):
            raise
        pytest.skip(str(exc))
    try:
        assert info.provider == "docker"
        name = f"docker-{uuid.uuid4().hex[:12]}"
        records: list[TapRecord] = []
        async with RabbitAdapter(info) as adapter:
            await adapter.create(DestinationSpec(name=name))
            try:
                async with adapter.tap(name, records.append):
                    await adapter.publish(name, Message(b"through docker", key=b"k"))
                    await eventually(lambda: len(records) == 1, within=15.0)
                assert records[0].message == Message(b"through docker", key=b"k")
                assert name in await adapter.list_destinations(name)
            finally:
                await adapter.delete(name)
    finally:
        stop()
