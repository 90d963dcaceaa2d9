"""Kafka transactions judged in the committed view, on the real broker.

The tap reports what a ``read_committed`` consumer sees as outputs and the
records of aborted transactions as ``aborted`` events; the zoo's exactly-once
service (``kafka_transactional``) passes crash faults, and its twins that
commit the offsets, or send the outputs, outside the transaction are found.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from message_flow_harness import BrokerInfo, Flow, Kind, Message, checks, fuzz
from message_flow_harness._broker import DestinationSpec, TapRecord
from message_flow_harness.brokers.kafka import KafkaAdapter
from message_flow_harness.pytest_plugin import FlowCheck
from message_flow_harness.schedule import Crash, Join, Leave, Pause, Publish, Restart, Step
from message_flow_harness.zoo import Service
from message_flow_harness.zoo.kafka_services import (
    kafka_offsets_outside_transaction,
    kafka_outputs_outside_transaction,
    kafka_transactional,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.kafka]

EXACTLY_ONCE = [checks.no_loss(), checks.no_duplicates(), checks.no_unexpected()]


class Landed:
    """A tap callback that keeps what it is handed; a test waits for a count, bounded."""

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


async def test_the_tap_hands_over_aborted_records_apart_from_committed_ones(
    adapter: KafkaAdapter, kafka_broker: BrokerInfo, topic_name: str
) -> None:
    await adapter.create(DestinationSpec(name=topic_name))
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.url, transactional_id=f"tap-test-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        landed = Landed()
        async with adapter.tap(topic_name, landed):
            async with producer.transaction():
                await producer.send(topic_name, b"kept-1")
                await producer.send(topic_name, b"kept-2")
            await producer.begin_transaction()
            await producer.send(topic_name, b"dropped-1")
            await producer.send(topic_name, b"dropped-2")
            await producer.abort_transaction()
            await adapter.publish(topic_name, Message(b"plain"))  # no transaction at all
            records = await landed.wait_for(5)
        by_value = {r.message.value: r for r in records}
        assert len(records) == 5, [(r.message.value, r.aborted) for r in records]
        assert [v for v, r in by_value.items() if r.aborted] == [b"dropped-1", b"dropped-2"]
        assert {v for v, r in by_value.items() if not r.aborted} == {b"kept-1", b"kept-2", b"plain"}
    finally:
        await producer.stop()
        await adapter.delete(topic_name)


async def test_transactional_publishing_commits_each_call_in_one_transaction(
    adapter: KafkaAdapter, kafka_broker: BrokerInfo, topic_name: str
) -> None:
    await adapter.create(DestinationSpec(name=topic_name))
    sent = [Message(key=b"k", value=str(n).encode()) for n in range(5)]
    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=kafka_broker.url,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    try:
        first = await adapter.publish_many(topic_name, sent[:3], publishing="transactional")
        second = await adapter.publish_many(topic_name, sent[3:], publishing="transactional")
        idempotent = await adapter.publish_many(topic_name, sent[:2], publishing="idempotent")
        # Each transaction ends in a commit marker, which takes an offset of its own.
        assert [r.offset for r in first] == [0, 1, 2]
        assert [r.offset for r in second] == [4, 5]
        assert [r.offset for r in idempotent] == [7, 8]
        await consumer.start()
        seen: list[bytes] = []
        async with asyncio.timeout(10):
            while len(seen) < 7:
                batches = await consumer.getmany(timeout_ms=200)
                seen += [r.value for batch in batches.values() for r in batch]
        assert seen == [m.value for m in (*sent, *sent[:2])]
    finally:
        await consumer.stop()
        await adapter.delete(topic_name)


def crash_and_restart(count: int) -> list[Step]:
    """A steady stream of ``count`` inputs over 3 keys, the service crashed and restarted in it."""
    steps: list[Step] = []
    for index in range(count):
        steps += [Publish(Message(key=b"abc"[index % 3 :][:1], value=str(index).encode()))]
        steps.append(Pause(0.005))
        if index == count // 2:
            steps += [Crash(0), Restart(0)]
    return steps


def crashes_mid_batch() -> list[Step]:
    """One input at a time, each followed by a crash a little later than the one before:
    one of them lands after the batch's transaction and before its offsets' commit."""
    steps: list[Step] = []
    for index, pause in enumerate((0.01, 0.02, 0.03, 0.04, 0.05, 0.07)):
        message = Message(key=b"k", value=str(index).encode())
        steps += [Publish(message), Pause(pause), Crash(0), Restart(0)]
    return steps


@pytest.mark.parametrize(
    "schedule", [crash_and_restart(40), crashes_mid_batch()], ids=["stream", "mid-batch"]
)
async def test_an_exactly_once_service_passes_crashes_and_restarts(
    flow_check: FlowCheck, schedule: list[Step]
) -> None:
    flow = Flow(sut=kafka_transactional, broker="kafka", checks=EXACTLY_ONCE, quiet=3.0)
    result = await flow_check(flow, schedule)
    crashes = [e for e in result.history.of(Kind.FAULT) if e.detail == "crash"]
    assert crashes
    inputs = [s for s in schedule if isinstance(s, Publish)]
    assert len({e.harness_id for e in result.history.of(Kind.OUTPUT)}) == len(inputs)


async def test_an_exactly_once_service_keeps_every_input_through_a_join_and_leave(
    flow_check: FlowCheck,
) -> None:
    # A campaign with join faults found this: records a rebalance hands over before the
    # listener has started their partition's producer were skipped, and lost.
    flow = Flow(sut=kafka_transactional, broker="kafka", checks=EXACTLY_ONCE, quiet=3.0)
    inputs = [Message(key=b"b", value=str(n).encode()) for n in range(4)]
    steps: list[Step] = [Join(), Leave(), *map(Publish, inputs[:2]), Join(), Leave()]
    result = await flow_check(flow, [*steps, *map(Publish, inputs[2:])])
    assert len(result.history.of(Kind.OUTPUT)) == len(inputs)


async def test_an_exactly_once_service_passes_a_crash_campaign(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    flow = Flow(sut=kafka_transactional, broker="kafka", checks=EXACTLY_ONCE, quiet=3.0)
    report = await fuzz(
        flow, max_examples=6, seed=5, faults=["crash"], broker=kafka_broker, database=None,
        report_dir=tmp_path,
    )  # fmt: skip
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    "service",
    [kafka_offsets_outside_transaction, kafka_outputs_outside_transaction],
    ids=["offsets-outside", "outputs-outside"],
)
async def test_a_twin_that_settles_part_of_a_batch_outside_the_transaction_duplicates(
    flow_check: FlowCheck, service: Service
) -> None:
    flow = Flow(sut=service, broker="kafka", checks=EXACTLY_ONCE, quiet=3.0)
    result = await flow_check.run(flow, crashes_mid_batch())
    assert not result.ok, result.report()
    anomalies = [a for v in result.failures() for a in v.anomalies]
    assert {a.kind for a in anomalies} == {"duplicate"}, result.report()


async def test_fuzz_with_crashes_finds_outputs_sent_outside_the_transaction(
    kafka_broker: BrokerInfo, tmp_path: Path
) -> None:
    flow = Flow(
        sut=kafka_outputs_outside_transaction, broker="kafka", checks=EXACTLY_ONCE, quiet=3.0
    )
    report = await fuzz(
        flow, max_examples=60, seed=1, faults=["crash"], broker=kafka_broker, database=None,
        report_dir=tmp_path, shrink_seconds=90, reruns=3,
    )  # fmt: skip
    assert not report.ok, report.summary()
    assert report.minimal is not None
    schedule = report.minimal.schedule
    assert any(isinstance(s, Crash) for s in schedule), report.summary()
    assert len([s for s in schedule if isinstance(s, Publish)]) <= 2, report.summary()
    anomalies = [a for v in report.minimal.failures() for a in v.anomalies]
    assert {a.kind for a in anomalies} == {"duplicate"}, report.summary()
    assert any(report.reruns), f"the minimal schedule did not fail again: {report.summary()}"


async def test_inputs_published_in_transactions_pass_an_exactly_once_service(
    flow_check: FlowCheck,
) -> None:
    # The service consumes read_committed: every output is an input it saw committed.
    flow = Flow(
        sut=kafka_transactional,
        broker="kafka",
        checks=EXACTLY_ONCE,
        quiet=3.0,
        publishing="transactional",
    )
    inputs = [Message(key=b"ab"[n % 2 :][:1], value=str(n).encode()) for n in range(8)]
    bursts: list[Step] = [
        *map(Publish, inputs[:3]), Pause(0.05),
        *map(Publish, inputs[3:5]), Crash(0), Restart(0),
        *map(Publish, inputs[5:]),
    ]  # fmt: skip
    result = await flow_check(flow, bursts)
    outputs = {e.harness_id for e in result.history.of(Kind.OUTPUT)}
    assert len(outputs) == len(inputs)
    # One transaction per burst: its commit marker takes the offset after it.
    offsets = [e.offset for e in result.history.of(Kind.PUBLISHED)]
    assert offsets == [0, 1, 2, 4, 5, 7, 8, 9], offsets
