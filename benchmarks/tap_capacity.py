"""Tap capacity: how fast the adapters' taps record what lands, without loss, against raw clients.

Kafka: N records (100 B values, a key, the harness-id header) are produced
to a fresh one-partition topic by a raw aiokafka producer; then the same
backlog is read from the beginning by, in turn, the adapter's tap (each
record recorded into a History, as the runner's tap callback does), a raw
aiokafka loop with the tap's fetch sizes that only counts, and Kafka's own
``ConsumerPerformance`` tool (JVM start excluded: its ``fetch.nMsg.sec``).
The broker's count is the topic's end offset.

RabbitMQ: the firehose shows publishes as they happen, not a backlog. To
measure what a consumer keeps up with rather than what a publisher manages,
another process publishes N messages (transient, no confirms) to a fresh
queue while this process's event loop is held, so the firehose copies wait
in the consumer's queue; the rate is N over the time the consumer then
takes to drain them. First the adapter's tap (recording into a History),
then, with a second N, a raw aio-pika firehose consumer that only counts
the traces routed to the queue; last a raw aio-pika consumer drains the
queue itself (2N messages, prefetch 1000, no acks). The broker's count is
the queue's depth after the first N.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aio_pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks import Figure, Options
from message_flow_harness import brokers
from message_flow_harness._broker import BrokerAdapter, BrokerInfo, DestinationSpec, TapRecord
from message_flow_harness._history import History, Kind
from message_flow_harness._message import HARNESS_ID_HEADER, BrokerKind

NAME = "tap_capacity"
_VALUE = b"v" * 100
_FETCH_MAX_BYTES = 32 * 1024 * 1024  # the adapter's tap: 4 x 8 MiB
_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
_BATCH = 10_000  # produce futures awaited per batch
_TRACE_EXCHANGE = "amq.rabbitmq.trace"


def _recording(history: History, wanted: int, done: asyncio.Event) -> Callable[[TapRecord], None]:
    """What the runner's tap callback does with a landed record, plus a count."""
    state = {"count": 0}

    def on_record(record: TapRecord) -> None:
        if record.event != "landed":
            return
        history.record_tap(Kind.OUTPUT, record, record.message.harness_id)
        state["count"] += 1
        if state["count"] == wanted:
            done.set()

    return on_record


def _rate(count: int, began_ns: int, ended_ns: int) -> float:
    return count / ((ended_ns - began_ns) / 1e9) if ended_ns > began_ns else 0.0


FigureAdder = Callable[..., None]


def _collector(broker: BrokerKind, count: int) -> tuple[list[Figure], FigureAdder]:
    """A list of this benchmark's figures for ``broker``, and the function that adds one."""
    figures: list[Figure] = []

    def figure(name: str, value: float | None, note: str = "", **details: Any) -> None:
        figures.append(
            Figure(
                benchmark=NAME,
                name=name,
                value=value,
                unit="msg/s",
                broker=broker,
                note=note,
                details={"messages": count, **details},
            )
        )

    return figures, figure


async def _wait(event: asyncio.Event, within: float) -> int:
    """Wait for ``event`` (bounded); the perf_counter_ns when it was seen set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await event.wait()
    return time.perf_counter_ns()


# --- Kafka -------------------------------------------------------------------------------------


async def _produce(url: str, topic: str, count: int) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=url, acks=1, linger_ms=5, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        began = time.perf_counter_ns()
        pending = []
        for number in range(count):
            key = f"key-{number % 10}".encode()
            headers = [(HARNESS_ID_HEADER, f"tap-{number}".encode())]
            pending.append(await producer.send(topic, _VALUE, key=key, headers=headers))
            if len(pending) >= _BATCH:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return _rate(count, began, time.perf_counter_ns())
    finally:
        await producer.stop()


async def _end_offset(url: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=None)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        offsets: dict[Any, int] = await consumer.end_offsets([partition])
        return int(offsets[partition])
    finally:
        await consumer.stop()


async def _raw_kafka(url: str, topic: str, count: int, within: float) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=url,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=_FETCH_MAX_BYTES,
        max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await consumer.position(partition)
        seen = 0
        began = time.perf_counter_ns()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while seen < count:
                    batches = await consumer.getmany(timeout_ms=1000)
                    seen += sum(len(records) for records in batches.values())
        return _rate(seen, began, time.perf_counter_ns()), seen
    finally:
        await consumer.stop()


async def _tap_kafka(
    adapter: BrokerAdapter, topic: str, count: int, within: float
) -> tuple[float, int]:
    history = History()
    done = asyncio.Event()
    async with adapter.tap(topic, _recording(history, count, done)):
        began = time.perf_counter_ns()
        ended = await _wait(done, within)
    return _rate(len(history), began, ended), len(history)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java") or "java"


def consumer_performance(url: str, topic: str, count: int, group: str) -> dict[str, float]:
    """Run Kafka's ConsumerPerformance tool; its CSV figures by column name."""
    from message_flow_harness.brokers.kafka import ensure_jars

    argv = [
        _java(),
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-cp",
        str(ensure_jars() / "*"),
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        url,
        "--topic",
        topic,
        "--num-records",
        str(count),
        "--group",
        group,
        "--timeout",
        "30000",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    lines = [line.strip() for line in done.stdout.splitlines() if line.count(",") >= 9]
    if done.returncode != 0 or len(lines) < 2:
        raise RuntimeError(
            f"ConsumerPerformance failed (exit {done.returncode}): "
            + (done.stdout + done.stderr)[-600:]
        )
    names = [name.strip() for name in lines[0].split(",")]
    values = [value.strip() for value in lines[-1].split(",")]
    figures = {}
    for name, value in zip(names, values, strict=False):
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            figures[name] = float(value)
    return figures


async def _kafka(info: BrokerInfo, count: int) -> list[Figure]:
    topic = f"bench-tap-{uuid.uuid4().hex[:10]}"
    group = f"{topic}-perf"
    within = max(60.0, count / 2000)
    figures, figure = _collector("kafka", count)

    async with brokers.adapter(info, timeout=30.0) as adapter:
        await adapter.create(DestinationSpec(name=topic))
        try:
            produced = await _produce(info.url, topic, count)
            stored = await _end_offset(info.url, topic)
            figure("produce (raw aiokafka, acks=1)", produced, f"{count} records")
            rate, seen = await _tap_kafka(adapter, topic, count, within)
            loss = "" if seen == stored else f"; recorded {seen} but the broker has {stored}"
            figure(
                "adapter tap -> History",
                rate,
                f"recorded {seen} of {stored} (end offset){loss}",
                recorded=seen,
                broker_count=stored,
            )
            rate, seen = await _raw_kafka(info.url, topic, count, within)
            figure("raw aiokafka getmany loop (count only)", rate, f"read {seen}", read=seen)
            try:
                tool = await asyncio.to_thread(consumer_performance, info.url, topic, count, group)
                figure(
                    "Kafka ConsumerPerformance (fetch.nMsg.sec)",
                    tool.get("fetch.nMsg.sec"),
                    f"nMsg.sec with group join {tool.get('nMsg.sec', 0):,.0f};"
                    f" read {tool.get('data.consumed.in.nMsg', 0):,.0f}",
                    tool=tool,
                )
            except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
                figure("Kafka ConsumerPerformance (fetch.nMsg.sec)", None, f"failed: {exc}")
            finally:
                await adapter.forget_group(group)
        finally:
            await adapter.delete(topic)
    return figures


# --- RabbitMQ ----------------------------------------------------------------------------------

# Run by a separate Python process: publishing must not share this process's CPU.
_PUBLISHER = """
import asyncio, sys, time
import aio_pika

async def main(url, queue, count):
    connection = await aio_pika.connect(url, timeout=30)
    channel = await connection.channel(publisher_confirms=False)
    began = time.perf_counter()
    for number in range(count):
        message = aio_pika.Message(b"v" * 100, headers={"x-harness-id": f"tap-{number}"})
        await channel.default_exchange.publish(message, routing_key=queue)
    print(count / (time.perf_counter() - began))
    await connection.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _publish_elsewhere(url: str, queue: str, count: int) -> float:
    """Publish ``count`` messages from another process, blocking this one; its msg/s."""
    done = subprocess.run(
        [sys.executable, "-c", _PUBLISHER, url, queue, str(count)],
        capture_output=True,
        text=True,
        timeout=max(120.0, count / 200),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the publisher failed (exit {done.returncode}): {done.stderr[-600:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _routed_to(headers: Mapping[str, Any], queue: str) -> bool:
    routed = headers.get("routed_queues")
    if not isinstance(routed, list):
        return False
    return any(
        (q.decode() if isinstance(q, bytes | bytearray) else str(q)) == queue for q in routed
    )


async def _backlog_drain(
    info: BrokerInfo, queue: str, count: int, done: asyncio.Event, within: float
) -> tuple[float, float]:
    """Publish ``count`` with this event loop held, then time the drain until ``done``.

    While the loop is held, the consumers of this process read nothing, so
    the firehose copies wait in their queues: the drain shows what a
    consumer keeps up with, not what the publisher managed.
    """
    publish_rate = _publish_elsewhere(info.url, queue, count)  # blocks the loop on purpose
    began = time.perf_counter_ns()
    ended = await _wait(done, within)
    return publish_rate, count / ((ended - began) / 1e9)


async def _rabbitmq(info: BrokerInfo, count: int) -> list[Figure]:
    queue_name = f"bench-tap-{uuid.uuid4().hex[:10]}"
    within = max(60.0, count / 500)
    figures, figure = _collector("rabbitmq", count)

    async with brokers.adapter(info, timeout=30.0) as adapter:
        await adapter.create(DestinationSpec(name=queue_name))
        connection = await aio_pika.connect(info.url, timeout=30)
        try:
            history, tap_done = History(), asyncio.Event()
            async with adapter.tap(queue_name, _recording(history, count, tap_done)):
                published, tap_rate = await _backlog_drain(
                    info, queue_name, count, tap_done, within
                )
            depth = await _queue_depth(connection, queue_name, count, within)
            figure(
                "publish (another process, aio-pika, no confirms)",
                published,
                f"{count} transient messages, firehose on",
            )
            loss = "" if len(history) == depth else f"; recorded {len(history)}, queue has {depth}"
            figure(
                "adapter tap (firehose) -> History, backlog",
                tap_rate if len(history) == count else None,
                f"recorded {len(history)} of {depth} (queue depth){loss}",
                recorded=len(history),
                broker_count=depth,
            )
            raw_rate, counted = await _raw_firehose(connection, info, queue_name, count, within)
            figure(
                "raw aio-pika firehose consumer (count only), backlog",
                raw_rate if counted == count else None,
                f"counted {counted} of {count}",
                counted=counted,
            )
            rate, drained = await _drain(
                connection,
                queue_name,
                await _queue_depth(connection, queue_name, 2 * count, within),
                within,
            )
            figure("raw aio-pika queue consumer (drain, prefetch 1000)", rate, f"drained {drained}")
        finally:
            await connection.close()
            await adapter.delete(queue_name)
    return figures


async def _raw_firehose(
    connection: aio_pika.abc.AbstractConnection,
    info: BrokerInfo,
    queue: str,
    count: int,
    within: float,
) -> tuple[float, int]:
    """A second backlog of ``count`` publishes, drained by a plain firehose consumer."""
    done = asyncio.Event()
    state = {"count": 0}

    async def on_trace(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if _routed_to(message.headers, queue):
            state["count"] += 1
            if state["count"] == count:
                done.set()

    channel = await connection.channel()
    try:
        traces = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await traces.bind(_TRACE_EXCHANGE, routing_key="publish.#")
        await traces.consume(on_trace, no_ack=True)
        _, rate = await _backlog_drain(info, queue, count, done, within)
        return rate, state["count"]
    finally:
        await channel.close()


async def _queue_depth(
    connection: aio_pika.abc.AbstractConnection, name: str, expected: int, within: float
) -> int:
    """The queue's message count, once it stops growing towards ``expected`` (bounded)."""
    channel = await connection.channel()
    try:
        deadline = time.monotonic() + within
        while True:
            queue = await channel.declare_queue(name, passive=True)
            depth = queue.declaration_result.message_count or 0
            if depth >= expected or time.monotonic() > deadline:
                return depth
            await asyncio.sleep(0.05)
    finally:
        await channel.close()


async def _drain(
    connection: aio_pika.abc.AbstractConnection, name: str, count: int, within: float
) -> tuple[float, int]:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.get_queue(name)
    done = asyncio.Event()
    state = {"count": 0, "last": 0}

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        state["count"] += 1
        if state["count"] >= count:
            state["last"] = time.perf_counter_ns()
            done.set()

    began = time.perf_counter_ns()
    await queue.consume(on_message, no_ack=True)
    ended = await _wait(done, within)
    await channel.close()
    return _rate(state["count"], began, state["last"] or ended), state["count"]


def run(options: Options) -> list[Figure]:
    figures = []
    for kind in options.brokers:
        count = options.tap_messages[kind]
        with brokers.provision(kind) as info:
            if kind == "kafka":
                figures += asyncio.run(_kafka(info, count))
            else:
                figures += asyncio.run(_rabbitmq(info, count))
    return figures
