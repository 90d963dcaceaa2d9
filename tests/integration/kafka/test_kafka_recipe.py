"""The local Kafka broker: jars, configuration that really applies, extra listeners, readiness."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from message_flow_harness import BrokerInfo, BrokerStartError, DestinationSpec, Message
from message_flow_harness.brokers._local import free_port
from message_flow_harness.brokers.kafka import KAFKA_VERSION, KafkaAdapter, KafkaRecipe, ensure_jars

pytestmark = pytest.mark.kafka


def test_jars_are_resolved_once_and_then_cached() -> None:
    started = time.monotonic()
    libs = ensure_jars()
    assert time.monotonic() - started < 1.0
    assert (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert (libs / f"kafka-tools-{KAFKA_VERSION}.jar").is_file()
    assert list(libs.glob("log4j-slf4j-impl-*.jar")), "the broker needs an SLF4J binding"
    assert not list(libs.glob("*reload4j*")), "only one logging backend"


def test_prepare_writes_a_formatted_single_node_setup(tmp_path: Path) -> None:
    plan = KafkaRecipe().prepare(tmp_path)
    properties = (tmp_path / "server.properties").read_text()
    assert "process.roles=broker,controller\n" in properties
    assert (tmp_path / "data" / "meta.properties").is_file(), "storage is formatted"
    assert plan.argv[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]
    assert plan.extra["log"] == str(tmp_path / "kafka.log")
    assert plan.extra["data"] == str(tmp_path)
    ports = [plan.url] + [
        plan.extra[f"proxy{i}.{side}"] for i in (0, 1) for side in ("listen", "advertised")
    ]
    assert len(set(ports)) == 5
    assert all(p.startswith("127.0.0.1:") for p in ports)


async def _broker_config(url: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
    finally:
        await admin.close()
    (resource,) = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


@pytest.mark.asyncio
async def test_broker_runs_with_the_test_configuration(kafka_broker: BrokerInfo) -> None:
    config = await _broker_config(kafka_broker.url)
    assert {
        key: config[key]
        for key in (
            "auto.create.topics.enable",
            "group.initial.rebalance.delay.ms",
            "group.min.session.timeout.ms",
            "message.max.bytes",
            "replica.fetch.max.bytes",
            "offsets.topic.replication.factor",
            "offsets.topic.num.partitions",
            "transaction.state.log.min.isr",
            "delete.topic.enable",
        )
    } == {
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "500",
        "message.max.bytes": str(8 * 1024 * 1024),
        "replica.fetch.max.bytes": str(8 * 1024 * 1024),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.min.isr": "1",
        "delete.topic.enable": "true",
    }


@pytest.mark.asyncio
async def test_a_group_with_a_one_second_session_joins_at_once(
    kafka_broker: BrokerInfo, topic_name: str
) -> None:
    async with KafkaAdapter(kafka_broker) as adapter:
        await adapter.create(DestinationSpec(name=topic_name, partitions=2))
        await adapter.publish(topic_name, Message(b"hello"))
        consumer = AIOKafkaConsumer(
            topic_name,
            bootstrap_servers=kafka_broker.url,
            group_id=f"{topic_name}-group",
            session_timeout_ms=1000,
            heartbeat_interval_ms=300,
            auto_offset_reset="earliest",
        )
        started = time.monotonic()
        await consumer.start()
        try:
            async with asyncio.timeout(10):
                record = await consumer.getone()
            # The default 3 s initial rebalance delay and 6 s minimum session are gone.
            assert time.monotonic() - started < 3.0
            assert record.value == b"hello"
            assert len(consumer.assignment()) == 2
        finally:
            await consumer.stop()
            await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_producing_to_a_missing_topic_does_not_create_it(
    kafka_broker: BrokerInfo, topic_name: str
) -> None:
    # A plain client asks for metadata allowing auto-creation; the broker must refuse.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.url, request_timeout_ms=1500)
    await producer.start()
    try:
        started = time.monotonic()
        with pytest.raises(KafkaError):
            await producer.send_and_wait(topic_name, b"x")
        assert time.monotonic() - started < 5.0
    finally:
        await producer.stop()
    async with KafkaAdapter(kafka_broker) as adapter:
        assert await adapter.list_destinations(topic_name) == []


@pytest.mark.asyncio
async def test_proxy_listeners_listen_and_advertise_the_proxy_ports(
    kafka_broker: BrokerInfo,
) -> None:
    for i in (0, 1):
        host, _, port = kafka_broker.extra[f"proxy{i}.listen"].rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5):
            pass
        # Metadata fetched through the listener points clients at the proxy's port.
        client = AIOKafkaClient(bootstrap_servers=kafka_broker.extra[f"proxy{i}.listen"])
        await client.bootstrap()
        try:
            brokers = client.cluster.brokers()
        finally:
            await client.close()
        assert [f"{b.host}:{b.port}" for b in brokers] == [
            kafka_broker.extra[f"proxy{i}.advertised"]
        ]


def test_wait_ready_gives_up_in_time_with_the_reason() -> None:
    info = BrokerInfo(kind="kafka", url=f"127.0.0.1:{free_port()}", provider="local")
    started = time.monotonic()
    with pytest.raises(BrokerStartError, match=r"within 1\.5 s; last error: .*(refused|111)"):
        KafkaRecipe().wait_ready(info, 1.5)
    assert time.monotonic() - started < 3.0


def test_prerequisites_are_met_here() -> None:
    KafkaRecipe().check_prerequisites()
