"""Traffic through RabbitAdapter and its firehose tap, checked against a plain aio-pika client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from message_flow_harness import (
    BrokerInfo,
    DestinationSpec,
    InvalidArgument,
    Message,
    TapRecord,
    eventually,
)
from message_flow_harness.brokers.rabbitmq import DEAD_LETTER_EXCHANGE, KEY_HEADER, RabbitAdapter

pytestmark = [pytest.mark.rabbitmq, pytest.mark.asyncio]

ONE_MIB = bytes(i % 251 for i in range(1 << 20))


async def until(condition: Callable[[], bool], what: str) -> None:
    await eventually(condition, within=15.0, what=what)


def landed(records: list[TapRecord]) -> list[TapRecord]:
    return [r for r in records if r.event == "landed"]


def delivered(records: list[TapRecord]) -> list[TapRecord]:
    return [r for r in records if r.event == "delivered"]


@contextlib.asynccontextmanager
async def client(info: BrokerInfo) -> AsyncIterator[AbstractChannel]:
    """A plain aio-pika channel, as a service under test would have."""
    async with asyncio.timeout(10):
        connection = await aio_pika.connect(info.url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def take(channel: AbstractChannel, queue: str, count: int) -> list[AbstractIncomingMessage]:
    """The next ``count`` messages on ``queue``, unacknowledged, polling for at most 15 s."""
    declared = await channel.declare_queue(queue, passive=True)
    taken: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(15):
        while len(taken) < count:
            message = await declared.get(no_ack=False, fail=False)
            if message is None:
                await asyncio.sleep(0.005)
            else:
                taken.append(message)
    return taken


def as_message(incoming: AbstractIncomingMessage) -> Message:
    """What a plain consumer got, in harness terms (the key travels in its header)."""
    headers = {name: bytes(value) for name, value in incoming.headers.items()}  # type: ignore[arg-type]
    key = headers.pop(KEY_HEADER, None)
    return Message(value=incoming.body, key=key, headers=headers)


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    count = declared.declaration_result.message_count
    assert count is not None
    return count


async def test_tap_entered_then_publish_is_seen(adapter: RabbitAdapter, unique: str) -> None:
    await adapter.create(DestinationSpec(name=unique))
    try:
        records: list[TapRecord] = []
        async with adapter.tap(unique, records.append):
            before = time.perf_counter_ns()
            await adapter.publish(unique, Message(b"hello", key=b"k"))
            await until(lambda: len(records) == 1, "the tap seeing the message")
        (record,) = records
        assert record.event == "landed"
        assert record.destination == unique
        assert record.message == Message(b"hello", key=b"k")
        assert record.exchange == ""
        assert record.routing_key == unique
        assert record.redelivered is None
        assert record.partition is None
        assert record.offset is None
        assert before < record.seen_ns < time.perf_counter_ns()
        async with client(adapter.info) as channel:
            assert await queue_depth(channel, unique) == 1  # observed, not consumed
    finally:
        await adapter.delete(unique)


async def test_tap_sees_200_messages_in_order_and_their_deliveries(
    adapter: RabbitAdapter, unique: str
) -> None:
    await adapter.create(DestinationSpec(name=unique))
    values = [f"m-{i:03d}".encode() for i in range(200)]
    try:
        records: list[TapRecord] = []
        async with adapter.tap(unique, records.append):
            for value in values:
                await adapter.publish(unique, Message(value))
            await until(lambda: len(landed(records)) == 200, "200 landed records")
            async with client(adapter.info) as channel:
                taken = await take(channel, unique, 200)
                assert [m.body for m in taken] == values
                for message in taken:
                    await message.ack()
            await until(lambda: len(delivered(records)) == 200, "200 delivered records")
        assert [r.message.value for r in landed(records)] == values
        assert [r.message.value for r in delivered(records)] == values
        assert all(r.redelivered is False for r in delivered(records))
        times = [r.seen_ns for r in records]
        assert times == sorted(times)
    finally:
        await adapter.delete(unique)


@pytest.mark.parametrize(
    "message",
    [
        Message(
            b"value",
            key=b"key\x00\xff",
            headers={"x-harness-id": b"id-1", "binary": bytes(range(256)), "empty": b""},
        ),
        Message(bytes(range(256))),
        Message(b""),
        Message(ONE_MIB, key=b"big"),
    ],
    ids=["key-and-headers", "all-256-byte-values", "empty", "one-mib"],
)
async def test_payloads_round_trip_through_tap_and_queue(
    adapter: RabbitAdapter, unique: str, message: Message
) -> None:
    await adapter.create(DestinationSpec(name=unique))
    try:
        records: list[TapRecord] = []
        async with adapter.tap(unique, records.append):
            await adapter.publish(unique, message)
            async with client(adapter.info) as channel:
                (taken,) = await take(channel, unique, 1)
                assert as_message(taken) == message
                assert taken.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                await taken.ack()
            await until(lambda: len(records) == 2, "landed and delivered records")
        assert [r.event for r in records] == ["landed", "delivered"]
        assert all(r.message == message for r in records)
    finally:
        await adapter.delete(unique)


@pytest.mark.parametrize("dead_letter_first", [True, False], ids=["dlq-first", "dlq-last"])
async def test_reject_moves_the_message_to_the_dead_letter_queue_and_the_tap_sees_it_land(
    adapter: RabbitAdapter, unique: str, dead_letter_first: bool
) -> None:
    source, dead = f"{unique}-in", f"{unique}-dlq"
    specs = [DestinationSpec(name=source, dead_letter=dead), DestinationSpec(name=dead)]
    for spec in reversed(specs) if dead_letter_first else specs:
        await adapter.create(spec)
    message = Message(b"poison", key=b"k1", headers={"x-harness-id": b"42"})
    try:
        on_source: list[TapRecord] = []
        on_dead: list[TapRecord] = []
        async with adapter.tap(source, on_source.append), adapter.tap(dead, on_dead.append):
            await adapter.publish(source, message)
            async with client(adapter.info) as channel:
                (taken,) = await take(channel, source, 1)
                await taken.reject(requeue=False)
                await until(lambda: len(on_dead) == 1, "the dead-letter tap seeing the message")
                (moved,) = await take(channel, dead, 1)
                assert moved.body == message.value
                assert moved.headers["x-first-death-reason"] == "rejected"
                assert moved.headers["x-first-death-queue"] == source
                await moved.ack()
                assert await queue_depth(channel, source) == 0
            await until(lambda: len(on_dead) == 2, "the dead-letter queue's delivery")
        assert [r.event for r in on_source] == ["landed", "delivered"]
        arrival, delivery = on_dead
        assert arrival.event == "landed"
        assert arrival.exchange == DEAD_LETTER_EXCHANGE
        assert arrival.routing_key == dead
        assert arrival.message.value == message.value
        assert arrival.message.key == message.key
        assert arrival.message.headers["x-harness-id"] == b"42"
        assert arrival.message.headers["x-first-death-reason"] == b"rejected"
        assert b'"reason": "rejected"' in arrival.message.headers["x-death"]
        assert delivery.event == "delivered"
        assert delivery.message.value == message.value
    finally:
        await adapter.delete(source)
        await adapter.delete(dead)


ROUTER = "harness.dead-letter"  # the direct exchange behind the dead-letter fanout


async def bindings_naming(adapter: RabbitAdapter, name: str) -> set[tuple[str, str, str]]:
    """(source, routing key, destination) of the vhost's bindings that name ``name``."""
    bindings = await adapter._management.call("GET", "bindings/{vhost}", "list the bindings")
    assert isinstance(bindings, list)
    return {
        (b["source"], b["routing_key"], b["destination"])
        for b in bindings
        if name in (b["routing_key"], b["destination"]) and b["source"]  # not the default's
    }


async def test_taps_cost_no_binding_and_see_dead_letters_through_the_one_fanout_binding(
    adapter: RabbitAdapter, unique: str
) -> None:
    """A run starts three taps: none of them, nor a queue's creation, binds the firehose."""
    other, source, dead = f"{unique}-other", f"{unique}-in", f"{unique}-dlq"
    await adapter.create(DestinationSpec(name=other))
    try:
        async with adapter.tap(other, lambda record: None):  # the firehose is running
            firehose = adapter._firehose
            assert firehose is not None
            assert firehose._queue is not None
            own = await bindings_naming(adapter, firehose._queue.name)
            assert (DEAD_LETTER_EXCHANGE, "", firehose._queue.name) in own
            await adapter.create_all(
                [DestinationSpec(name=dead), DestinationSpec(name=source, dead_letter=dead)]
            )
            on_dead: list[TapRecord] = []
            async with adapter.tap(dead, on_dead.append), adapter.tap(source, lambda r: None):
                for name in (source, dead):  # each queue's own binding on the router, no more
                    assert await bindings_naming(adapter, name) == {(ROUTER, name, name)}
                await adapter.publish(source, Message(b"poison"))
                async with client(adapter.info) as channel:
                    (taken,) = await take(channel, source, 1)
                    await taken.reject(requeue=False)
                    await until(lambda: len(landed(on_dead)) == 1, "the dead letter landing")
                    (moved,) = await take(channel, dead, 1)  # routed to the queue as well
                    assert moved.body == b"poison"
                    await moved.ack()
            assert await bindings_naming(adapter, firehose._queue.name) == own
            await adapter.delete_all([source, dead])
            assert await bindings_naming(adapter, dead) == set()
    finally:
        await adapter.delete_all([other, source, dead])


async def test_nack_with_requeue_shows_a_redelivery(adapter: RabbitAdapter, unique: str) -> None:
    await adapter.create(DestinationSpec(name=unique))
    try:
        records: list[TapRecord] = []
        async with adapter.tap(unique, records.append):
            await adapter.publish(unique, Message(b"again"))
            async with client(adapter.info) as channel:
                (first,) = await take(channel, unique, 1)
                await first.nack(requeue=True)
                (second,) = await take(channel, unique, 1)
                assert second.redelivered
                await second.ack()
            await until(lambda: len(delivered(records)) == 2, "two deliveries")
        assert [r.redelivered for r in delivered(records)] == [False, True]
        assert [r.message.value for r in records] == [b"again"] * 3
        assert len(landed(records)) == 1
    finally:
        await adapter.delete(unique)


async def test_two_queues_are_isolated(adapter: RabbitAdapter, unique: str) -> None:
    first, second = f"{unique}-a", f"{unique}-b"
    await adapter.create(DestinationSpec(name=first))
    await adapter.create(DestinationSpec(name=second))
    try:
        on_first: list[TapRecord] = []
        on_second: list[TapRecord] = []
        async with adapter.tap(first, on_first.append), adapter.tap(second, on_second.append):
            await adapter.publish(first, Message(b"a1"))
            await adapter.publish(second, Message(b"b1"))
            await adapter.publish(first, Message(b"a2"))
            await until(lambda: len(on_first) == 2 and len(on_second) == 1, "three records")
            async with client(adapter.info) as channel:
                assert [m.body for m in await take(channel, first, 2)] == [b"a1", b"a2"]
                assert [m.body for m in await take(channel, second, 1)] == [b"b1"]
                assert await queue_depth(channel, first) == 0
            await until(lambda: len(on_first) == 4 and len(on_second) == 2, "the deliveries")
        assert [r.message.value for r in landed(on_first)] == [b"a1", b"a2"]
        assert [r.message.value for r in landed(on_second)] == [b"b1"]
        assert {r.destination for r in on_first} == {first}
        assert {r.destination for r in on_second} == {second}
    finally:
        await adapter.delete(first)
        await adapter.delete(second)


async def test_longest_traceable_name_works_and_longer_is_refused(
    adapter: RabbitAdapter, unique: str
) -> None:
    # The firehose's "deliver.<queue>" routing key is a short string too: 8 + 247 = 255.
    name = (unique + "-" + "x" * 255)[:247]
    with pytest.raises(InvalidArgument, match="at most 247 bytes"):
        await adapter.create(DestinationSpec(name=name + "y"))
    with pytest.raises(InvalidArgument, match="at most 247 bytes"):
        adapter.tap(name + "y", lambda record: None)
    await adapter.create(DestinationSpec(name=name))
    try:
        records: list[TapRecord] = []
        async with adapter.tap(name, records.append):
            await adapter.publish(name, Message(b"long"))
            async with client(adapter.info) as channel:
                (taken,) = await take(channel, name, 1)
                await taken.ack()
            await until(lambda: len(records) == 2, "landed and delivered records")
        assert [r.event for r in records] == ["landed", "delivered"]
    finally:
        await adapter.delete(name)


async def test_a_failing_callback_is_raised_on_exit(adapter: RabbitAdapter, unique: str) -> None:
    await adapter.create(DestinationSpec(name=unique))
    calls: list[TapRecord] = []

    def on_record(record: TapRecord) -> None:
        calls.append(record)
        raise RuntimeError(f"callback failed on {record.message.value!r}")

    async def tap_twice() -> None:
        async with adapter.tap(unique, on_record):
            await adapter.publish(unique, Message(b"first"))
            await until(lambda: len(calls) == 1, "the callback being called")
            await adapter.publish(unique, Message(b"second"))
            async with client(adapter.info) as channel:
                assert await queue_depth(channel, unique) == 2

    try:
        with pytest.raises(RuntimeError, match="callback failed on b'first'"):
            await tap_twice()
        assert len(calls) == 1  # no callback after the first failure
    finally:
        await adapter.delete(unique)


async def test_tap_enter_and_exit_are_prompt(adapter: RabbitAdapter, unique: str) -> None:
    await adapter.create(DestinationSpec(name=unique))
    try:
        started = time.monotonic()
        async with adapter.tap(unique, lambda record: None):
            entered = time.monotonic()
        exited = time.monotonic()
        assert entered - started < 1.0
        assert exited - entered < 1.0
    finally:
        await adapter.delete(unique)
