"""The broker contract, run unchanged against every adapter on the real brokers.

What the core relies on: isolated destinations, a tap that sees every
message that lands (with keys, headers and any payload) in order, clean
deletion, dead-letter destinations, and errors of the harness's own types.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from message_flow_harness import (
    BrokerAdapter,
    BrokerInfo,
    BrokerUnavailable,
    DestinationError,
    DestinationSpec,
    InvalidArgument,
    Message,
    TapRecord,
    brokers,
    eventually,
)
from message_flow_harness._drivers import driver

pytestmark = pytest.mark.asyncio


async def wait_until(condition: Callable[[], bool]) -> None:
    await eventually(condition, within=15.0)


def landed(records: list[TapRecord]) -> list[TapRecord]:
    return [r for r in records if r.event == "landed"]


async def publish_and_tap(
    adapter: BrokerAdapter, name: str, messages: list[Message]
) -> list[TapRecord]:
    seen: list[TapRecord] = []
    async with adapter.tap(name, seen.append):
        for message in messages:
            await adapter.publish(name, message)
        await wait_until(lambda: len(landed(seen)) >= len(messages))
    return landed(seen)


async def test_created_destination_is_listed_then_deleted_cleanly(
    any_adapter: BrokerAdapter, unique: str
) -> None:
    await any_adapter.create(DestinationSpec(name=f"{unique}-a"))
    await any_adapter.create(DestinationSpec(name=f"{unique}-b"))
    assert sorted(await any_adapter.list_destinations(unique)) == [f"{unique}-a", f"{unique}-b"]
    await any_adapter.delete(f"{unique}-a")
    assert await any_adapter.list_destinations(unique) == [f"{unique}-b"]
    await any_adapter.delete(f"{unique}-a")  # deleting twice is not an error
    await any_adapter.delete(f"{unique}-b")
    assert await any_adapter.list_destinations(unique) == []


async def test_round_trip_keeps_key_headers_and_value(
    any_adapter: BrokerAdapter, unique: str
) -> None:
    await any_adapter.create(DestinationSpec(name=unique))
    sent = Message(key=b"order-7", value=b'{"total": 3}', headers={"trace": b"abc", "n": b"\x00"})
    [record] = await publish_and_tap(any_adapter, unique, [sent])
    assert record.destination == unique
    assert record.message.key == sent.key
    assert record.message.value == sent.value
    assert {k: record.message.headers[k] for k in sent.headers} == dict(sent.headers)
    assert record.seen_ns > 0
    await any_adapter.delete(unique)


@pytest.mark.parametrize(
    "value",
    [bytes(range(256)), b"", b"\xff" * (1024 * 1024)],
    ids=["binary", "empty", "1MiB"],
)
async def test_payloads_round_trip_byte_for_byte(
    any_adapter: BrokerAdapter, unique: str, value: bytes
) -> None:
    await any_adapter.create(DestinationSpec(name=unique))
    [record] = await publish_and_tap(any_adapter, unique, [Message(value=value)])
    assert record.message.value == value
    await any_adapter.delete(unique)


async def test_order_is_kept_on_one_partition_or_queue(
    any_adapter: BrokerAdapter, unique: str
) -> None:
    await any_adapter.create(DestinationSpec(name=unique))
    sent = [Message(key=b"k", value=str(i).encode()) for i in range(200)]
    records = await publish_and_tap(any_adapter, unique, sent)
    assert [r.message.value for r in records] == [m.value for m in sent]
    assert [r.seen_ns for r in records] == sorted(r.seen_ns for r in records)
    await any_adapter.delete(unique)


async def test_a_burst_keeps_each_producers_order(any_adapter: BrokerAdapter, unique: str) -> None:
    await any_adapter.create(DestinationSpec(name=unique))
    seen: list[TapRecord] = []
    bursts = {
        p: [Message(key=b"k", value=f"{p}-{i}".encode()) for i in range(100)] for p in (0, 1, 2)
    }
    async with any_adapter.tap(unique, seen.append):
        # Three producers at once, each with 100 messages in flight.
        receipts = await asyncio.gather(
            *(any_adapter.publish_many(unique, sent, producer=p) for p, sent in bursts.items())
        )
        await wait_until(lambda: len(landed(seen)) >= 300)
    assert [len(r) for r in receipts] == [100, 100, 100]
    values = [r.message.value for r in landed(seen)]
    assert sorted(values) == sorted(m.value for sent in bursts.values() for m in sent)
    for p, sent in bursts.items():
        mine = [v for v in values if v.startswith(f"{p}-".encode())]
        assert mine == [m.value for m in sent], f"producer {p} out of order"
    if any_adapter.kind == "kafka":  # the receipts are the broker's own positions
        offsets = [r.offset for got in receipts for r in got]
        assert sorted(offsets) == list(range(300))
        for got in receipts:
            assert [r.offset for r in got] == sorted(r.offset or 0 for r in got)
    with pytest.raises(InvalidArgument, match="producer=-1 is invalid"):
        await any_adapter.publish_many(unique, [Message()], producer=-1)
    await any_adapter.delete(unique)


async def test_destinations_are_isolated(any_adapter: BrokerAdapter, unique: str) -> None:
    first, second = f"{unique}-1", f"{unique}-2"
    for name in (first, second):
        await any_adapter.create(DestinationSpec(name=name))
    seen_first: list[TapRecord] = []
    seen_second: list[TapRecord] = []
    async with (
        any_adapter.tap(first, seen_first.append),
        any_adapter.tap(second, seen_second.append),
    ):
        for i in range(10):
            await any_adapter.publish(first, Message(value=f"one-{i}".encode()))
            await any_adapter.publish(second, Message(value=f"two-{i}".encode()))
        await wait_until(lambda: len(landed(seen_first)) == len(landed(seen_second)) == 10)
        await asyncio.sleep(0.2)  # give a stray cross-delivery time to show up
    assert all(r.message.value.startswith(b"one-") for r in landed(seen_first))
    assert all(r.message.value.startswith(b"two-") for r in landed(seen_second))
    assert {r.destination for r in seen_first} == {first}
    for name in (first, second):
        await any_adapter.delete(name)


async def test_dead_letter_destination_is_created_and_tapped(
    any_adapter: BrokerAdapter, unique: str
) -> None:
    source, dead = f"{unique}-in", f"{unique}-dlq"
    await any_adapter.create(DestinationSpec(name=dead))
    await any_adapter.create(DestinationSpec(name=source, dead_letter=dead))
    [record] = await publish_and_tap(any_adapter, dead, [Message(value=b"poison")])
    assert record.destination == dead
    for name in (source, dead):
        await any_adapter.delete(name)
    assert await any_adapter.list_destinations(unique) == []


async def test_taps_leave_nothing_behind(any_broker: BrokerInfo, unique: str) -> None:
    def made_by_taps(names: list[str]) -> set[str]:
        # Other tests and runs on this broker make h-... and t-... destinations.
        return {name for name in names if not name.startswith(("h-", "t-"))}

    async with brokers.adapter(any_broker) as watcher:
        before = made_by_taps(await watcher.list_destinations())
        async with brokers.adapter(any_broker) as adapter:
            await adapter.create(DestinationSpec(name=unique))
            for _ in range(3):
                await publish_and_tap(adapter, unique, [Message(value=b"x")])
            during = made_by_taps(await watcher.list_destinations()) - before
            # At most the adapter's one shared firehose queue (RabbitMQ), whatever
            # the number of taps; Kafka taps make nothing.
            assert len(during) <= (1 if any_broker.kind == "rabbitmq" else 0), during
            await adapter.delete(unique)
        # The firehose queue is exclusive to the adapter's connection: gone with it.
        deadline = time.monotonic() + 10
        while made_by_taps(await watcher.list_destinations()) - before:
            assert time.monotonic() < deadline, "the tap's queue outlived its adapter"
            await asyncio.sleep(0.1)


async def test_creating_an_existing_destination_is_refused(
    any_adapter: BrokerAdapter, unique: str
) -> None:
    await any_adapter.create(DestinationSpec(name=unique))
    with pytest.raises(DestinationError, match=unique):
        await any_adapter.create(DestinationSpec(name=unique))
    await any_adapter.delete(unique)


async def test_publishing_to_a_missing_destination_is_refused(
    any_adapter: BrokerAdapter, unique: str
) -> None:
    with pytest.raises(DestinationError, match=unique):
        await any_adapter.publish(unique, Message(value=b"nowhere"))
    assert await any_adapter.list_destinations(unique) == []  # and nothing was auto-created


@pytest.mark.parametrize("name", ["", "x" * 300])
async def test_malformed_names_are_rejected_before_the_broker(
    any_adapter: BrokerAdapter, name: str
) -> None:
    with pytest.raises(InvalidArgument):
        await any_adapter.create(DestinationSpec(name=name))


async def test_unreachable_broker_fails_fast_with_the_fix(any_broker: BrokerInfo) -> None:
    port = brokers._local.free_port()  # nothing listens there
    url = f"127.0.0.1:{port}" if any_broker.kind == "kafka" else f"amqp://u:pw@127.0.0.1:{port}/"
    info = brokers.info_from_url(any_broker.kind, url)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=str(port)) as caught:
        async with brokers.adapter(info, timeout=3.0):
            pass
    assert time.monotonic() - started < 10.0
    assert driver(any_broker.kind).url_env in str(caught.value)
    assert "pw" not in str(caught.value)
