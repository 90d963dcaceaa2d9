"""KafkaAdapter against a real broker: topics, publishing, taps, errors."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer

from message_flow_harness import (
    BrokerInfo,
    BrokerUnavailable,
    DestinationError,
    DestinationSpec,
    InvalidArgument,
    Message,
    TapRecord,
)
from message_flow_harness.brokers._local import free_port
from message_flow_harness.brokers.kafka import KafkaAdapter

pytestmark = pytest.mark.kafka


class Collector:
    """A tap callback that keeps records and lets a test wait for a count, bounded."""

    def __init__(self) -> None:
        self.records: list[TapRecord] = []
        self._arrived = asyncio.Event()

    def __call__(self, record: TapRecord) -> None:
        self.records.append(record)
        self._arrived.set()

    async def wait_for(self, count: int, *, within: float = 10.0) -> list[TapRecord]:
        async with asyncio.timeout(within):
            while len(self.records) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.records


# --------------------------------------------------------------------------- connecting


@pytest.mark.asyncio
async def test_open_on_a_closed_port_fails_fast_naming_the_address() -> None:
    url = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        async with KafkaAdapter(BrokerInfo(kind="kafka", url=url, provider="url"), timeout=3.0):
            pass
    assert time.monotonic() - started < 3.5
    assert url in str(caught.value)
    assert "--kafka-bootstrap" in str(caught.value)
    assert "HARNESS_KAFKA_BOOTSTRAP" in str(caught.value)


@pytest.mark.asyncio
async def test_open_on_a_silent_server_is_bounded_by_the_timeout() -> None:
    # The kernel completes the handshake but nothing ever answers a request.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=r"within 1 s"):
            async with KafkaAdapter(BrokerInfo(kind="kafka", url=url, provider="url"), timeout=1.0):
                pass
        assert time.monotonic() - started < 3.0


@pytest.mark.asyncio
async def test_close_is_idempotent_and_a_closed_adapter_refuses_work(
    kafka_broker: BrokerInfo, topic_name: str
) -> None:
    adapter = KafkaAdapter(kafka_broker)
    await adapter.open()
    await adapter.close()
    await adapter.close()
    with pytest.raises(BrokerUnavailable, match="not open"):
        await adapter.create(DestinationSpec(name=topic_name))
    with pytest.raises(BrokerUnavailable, match="closed"):
        await adapter.open()


# --------------------------------------------------------------------------- topics


@pytest.mark.asyncio
@pytest.mark.parametrize("partitions", [0, -1])
async def test_partitions_below_one_are_invalid(
    adapter: KafkaAdapter, topic_name: str, partitions: int
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await adapter.create(DestinationSpec(name=topic_name, partitions=partitions))
    assert str(caught.value) == (
        f"partitions={partitions} is invalid: a topic needs at least one partition"
    )
    assert topic_name not in await adapter.list_destinations()


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["", "a b", "tópico", "a/b", "a:b", ".", "..", "x" * 250])
async def test_illegal_topic_names_are_invalid_everywhere(adapter: KafkaAdapter, name: str) -> None:
    with pytest.raises(InvalidArgument, match="topic name"):
        await adapter.create(DestinationSpec(name=name))
    with pytest.raises(InvalidArgument, match="topic name"):
        await adapter.delete(name)
    with pytest.raises(InvalidArgument, match="topic name"):
        await adapter.publish(name, Message(b"x"))
    with pytest.raises(InvalidArgument, match="topic name"):
        adapter.tap(name, Collector())


@pytest.mark.asyncio
async def test_longest_legal_topic_name_is_accepted(adapter: KafkaAdapter) -> None:
    name = "a.b_c-" + "x" * 243
    assert len(name) == 249
    await adapter.create(DestinationSpec(name=name))
    try:
        assert name in await adapter.list_destinations("a.b_c-")
    finally:
        await adapter.delete(name)


@pytest.mark.asyncio
async def test_creating_an_existing_topic_is_a_destination_error(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    await adapter.create(DestinationSpec(name=topic_name))
    try:
        with pytest.raises(DestinationError, match="already exists"):
            await adapter.create(DestinationSpec(name=topic_name, partitions=2))
    finally:
        await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_delete_is_clean_repeatable_and_the_name_reusable(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    await adapter.create(DestinationSpec(name=topic_name, partitions=2))
    await adapter.publish(topic_name, Message(b"old"))
    assert topic_name in await adapter.list_destinations(topic_name)

    await adapter.delete(topic_name)
    assert await adapter.list_destinations(topic_name) == []
    await adapter.delete(topic_name)  # a second delete is not an error

    started = time.monotonic()
    with pytest.raises(DestinationError, match="does not exist"):
        await adapter.publish(topic_name, Message(b"orphan"))
    assert time.monotonic() - started < 2.5

    # Recreated under the same name, the topic starts empty with its new layout.
    await adapter.create(DestinationSpec(name=topic_name, partitions=3))
    try:
        receipt = await adapter.publish(topic_name, Message(b"new"), partition=2)
        assert (receipt.partition, receipt.offset) == (2, 0)
        seen = Collector()
        async with adapter.tap(topic_name, seen):
            records = await seen.wait_for(1)
        assert [r.message.value for r in records] == [b"new"]
    finally:
        await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_list_destinations_filters_by_prefix_and_hides_internal_topics(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    names = [f"{topic_name}-a", f"{topic_name}-b"]
    for name in names:
        await adapter.create(DestinationSpec(name=name))
    try:
        assert await adapter.list_destinations(topic_name) == names
        assert await adapter.list_destinations(f"{topic_name}-b") == names[1:]
        assert not [t for t in await adapter.list_destinations() if t.startswith("__")]
    finally:
        for name in names:
            await adapter.delete(name)


# --------------------------------------------------------------------------- publishing


@pytest.mark.asyncio
async def test_explicit_partitions_get_their_own_offsets(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    await adapter.create(DestinationSpec(name=topic_name, partitions=3))
    try:
        receipts = [
            await adapter.publish(topic_name, Message(f"{p}-{i}".encode()), partition=p)
            for i in range(2)
            for p in (2, 0, 1)
        ]
        assert [(r.destination, r.partition, r.offset) for r in receipts] == [
            (topic_name, 2, 0),
            (topic_name, 0, 0),
            (topic_name, 1, 0),
            (topic_name, 2, 1),
            (topic_name, 0, 1),
            (topic_name, 1, 1),
        ]
        with pytest.raises(InvalidArgument, match=r"partition=3 is invalid: .* 0\.\.2"):
            await adapter.publish(topic_name, Message(b"x"), partition=3)
        with pytest.raises(InvalidArgument, match="partition=-1 is invalid"):
            await adapter.publish(topic_name, Message(b"x"), partition=-1)
    finally:
        await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_publishing_to_a_missing_topic_fails_fast(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    started = time.monotonic()
    with pytest.raises(DestinationError, match=f"topic '{topic_name}' does not exist"):
        await adapter.publish(topic_name, Message(b"x"))
    assert time.monotonic() - started < 2.5
    assert await adapter.list_destinations(topic_name) == []


# --------------------------------------------------------------------------- taps


@pytest.mark.asyncio
async def test_tap_keeps_per_partition_order(adapter: KafkaAdapter, topic_name: str) -> None:
    await adapter.create(DestinationSpec(name=topic_name, partitions=3))
    try:
        sent: dict[int, list[bytes]] = defaultdict(list)
        seen = Collector()
        async with adapter.tap(topic_name, seen):
            for i in range(200):
                value = f"m{i:03d}".encode()
                receipt = await adapter.publish(topic_name, Message(value, key=b"k%d" % (i % 7)))
                assert receipt.partition is not None
                sent[receipt.partition].append(value)
            records = await seen.wait_for(200)
        assert len(records) == 200
        assert len(sent) > 1, "keys should spread over partitions"
        got: dict[int, list[bytes]] = defaultdict(list)
        for record in records:
            assert record.partition is not None
            assert record.event == "landed"
            assert record.destination == topic_name
            assert record.offset == len(got[record.partition])
            got[record.partition].append(record.message.value)
        assert got == sent
    finally:
        await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_keys_headers_and_payloads_round_trip_exactly(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    messages = [
        Message(b"plain"),
        Message(b"keyed", key=b"key-1"),
        Message(b"", key=b""),
        Message(b""),
        Message(bytes(range(256)), key=bytes(range(255, -1, -1))),
        Message(
            b"with headers",
            headers={"x-harness-id": b"id-1", "empty": b"", "binary": bytes(range(256))},
        ),
        Message(bytes(range(256)) * 4096, key=b"big", headers={"size": b"1MiB"}),
    ]
    assert len(messages[-1].value) == 1024 * 1024
    await adapter.create(DestinationSpec(name=topic_name))
    try:
        seen = Collector()
        async with adapter.tap(topic_name, seen):
            before_ms = time.time_ns() // 1_000_000
            receipts = [await adapter.publish(topic_name, m) for m in messages]
            records = await seen.wait_for(len(messages))
        assert [r.message for r in records] == messages
        assert [r.offset for r in records] == [r.offset for r in receipts]
        for record in records:
            assert record.broker_timestamp_ms is not None
            assert record.broker_timestamp_ms >= before_ms - 1000
            assert record.seen_ns > 0
    finally:
        await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_taps_on_two_topics_are_isolated(adapter: KafkaAdapter, topic_name: str) -> None:
    first, second = f"{topic_name}-a", f"{topic_name}-b"
    await adapter.create(DestinationSpec(name=first, partitions=2))
    await adapter.create(DestinationSpec(name=second, partitions=2))
    try:
        on_first, on_second = Collector(), Collector()
        async with adapter.tap(first, on_first), adapter.tap(second, on_second):
            for i in range(10):
                await adapter.publish(second, Message(b"B%d" % i))
                await adapter.publish(first, Message(b"A%d" % i))
            await on_first.wait_for(10)
            await on_second.wait_for(10)
        assert sorted(r.message.value for r in on_first.records) == sorted(
            b"A%d" % i for i in range(10)
        )
        assert sorted(r.message.value for r in on_second.records) == sorted(
            b"B%d" % i for i in range(10)
        )
        assert {r.destination for r in on_first.records} == {first}
        assert {r.destination for r in on_second.records} == {second}
    finally:
        await adapter.delete(first)
        await adapter.delete(second)


@pytest.mark.asyncio
async def test_a_message_published_right_after_entering_the_tap_is_seen(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    for attempt in range(5):
        name = f"{topic_name}-{attempt}"
        await adapter.create(DestinationSpec(name=name, partitions=3))
        try:
            seen = Collector()
            async with adapter.tap(name, seen):
                await adapter.publish(name, Message(b"first"), partition=attempt % 3)
                records = await seen.wait_for(1, within=5.0)
            assert [r.message.value for r in records] == [b"first"]
        finally:
            await adapter.delete(name)


@pytest.mark.asyncio
async def test_tap_keeps_up_with_a_burst(
    adapter: KafkaAdapter, kafka_broker: BrokerInfo, topic_name: str
) -> None:
    count = 20_000
    await adapter.create(DestinationSpec(name=topic_name, partitions=4))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.url, linger_ms=5)
    await producer.start()
    try:
        seen = Collector()
        async with adapter.tap(topic_name, seen):
            started = time.monotonic()
            for i in range(count):
                await producer.send(topic_name, b"%06d" % i, key=b"%d" % (i % 16))
            await producer.flush()
            records = await seen.wait_for(count, within=30.0)
            elapsed = time.monotonic() - started
        assert sorted(int(r.message.value) for r in records) == list(range(count))
        assert elapsed < 30.0
    finally:
        await producer.stop()
        await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_tapping_a_missing_topic_is_a_destination_error(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    with pytest.raises(DestinationError, match=topic_name):
        async with adapter.tap(topic_name, Collector()):
            pass


@pytest.mark.asyncio
async def test_a_failing_tap_callback_is_raised_when_the_tap_exits(
    adapter: KafkaAdapter, topic_name: str
) -> None:
    class Boom(Exception):
        pass

    raised = asyncio.Event()

    def explode(record: TapRecord) -> None:
        raised.set()
        raise Boom(record.message.value)

    async def publish_and_wait() -> None:
        async with adapter.tap(topic_name, explode):
            await adapter.publish(topic_name, Message(b"trigger"))
            async with asyncio.timeout(10):
                await raised.wait()

    async def fail_in_body_too() -> None:
        async with adapter.tap(topic_name, explode):
            async with asyncio.timeout(10):
                await raised.wait()
            raise RuntimeError("body")

    await adapter.create(DestinationSpec(name=topic_name))
    try:
        with pytest.raises(Boom, match="trigger"):
            await publish_and_wait()
        # If the body fails too, the body's error propagates and names the tap's.
        raised.clear()
        with pytest.raises(RuntimeError, match="body") as caught:
            await fail_in_body_too()
        assert any("had failed too" in note for note in caught.value.__notes__)
    finally:
        await adapter.delete(topic_name)


@pytest.mark.asyncio
async def test_close_stops_open_taps(kafka_broker: BrokerInfo, topic_name: str) -> None:
    adapter = KafkaAdapter(kafka_broker)
    await adapter.open()
    try:
        await adapter.create(DestinationSpec(name=topic_name))
        tap = adapter.tap(topic_name, Collector())
        await tap.__aenter__()
        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == f"kafka-tap {topic_name}"]
    finally:
        await adapter.close()
    assert task.done()
    await tap.__aexit__(None, None, None)  # leaving a tap after close is harmless
    async with KafkaAdapter(kafka_broker) as other:
        await other.delete(topic_name)
