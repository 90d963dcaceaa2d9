"""The Kafka adapter's taps: every record that lands on a topic, read without a consumer group.

A tap assigns itself every partition of its topic from offset 0 and hands each
record to a callback from a background task. :class:`Taps` holds one adapter's
live taps and the consumers that finished taps left behind, which the next tap
reuses (skipping a start: bootstrap and metadata); closing stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors

from message_flow_harness._broker import BrokerInfo, TapCallback, TapRecord
from message_flow_harness._errors import DestinationError, HarnessError
from message_flow_harness._message import Message
from message_flow_harness.brokers.kafka._clients import MAX_MESSAGE_BYTES, stop_consumer
from message_flow_harness.brokers.kafka._errors import translate


@dataclass(eq=False)
class _LiveTap:
    consumer: Any
    task: asyncio.Task[None]


class Taps:
    """The taps of one adapter, every step bounded by ``timeout``.

    ``clients`` returns the adapter's admin client and producer, or raises
    BrokerUnavailable when the adapter is not open: a tap learns its topic's
    partitions from them.
    """

    def __init__(
        self, info: BrokerInfo, *, timeout: float, clients: Callable[[], tuple[Any, Any]]
    ) -> None:
        self._info = info
        self._timeout = timeout
        self._clients = clients
        self._live: set[_LiveTap] = set()
        self._idle_consumers: list[Any] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def tap(self, name: str, on_record: TapCallback) -> AsyncIterator[None]:
        """Tap topic ``name``, already checked (see ``KafkaAdapter.tap``)."""
        # A consumer another tap is done with skips a start (bootstrap and metadata).
        consumer = self._idle_consumers.pop() if self._idle_consumers else None
        try:
            async with asyncio.timeout(self._timeout):
                partitions = await self._partitions_of(name)
                if consumer is None:
                    consumer = self._new_consumer()
                    await consumer.start()
                consumer.assign(partitions)
                # Offset 0 is the beginning, or out of range after retention, which
                # auto_offset_reset="earliest" turns into the beginning: no round trip.
                for tp in partitions:
                    consumer.seek(tp, 0)
        except BaseException as err:
            if consumer is not None:
                await stop_consumer(consumer, self._timeout)
            if isinstance(err, TimeoutError | kafka_errors.KafkaError | OSError):
                raise self._translate(err, f"starting a tap on topic {name!r}") from err
            raise
        live = _LiveTap(
            consumer=consumer,
            task=asyncio.create_task(
                self._pump(consumer, name, on_record), name=f"kafka-tap {name}"
            ),
        )
        self._live.add(live)
        try:
            yield
        except BaseException as body_error:
            failure = await self._stop(live)
            if failure is not None:
                body_error.add_note(f"the Kafka tap on {name!r} had failed too: {failure!r}")
            raise
        failure = await self._stop(live)
        if failure is not None:
            raise failure

    async def close(self) -> None:
        """Stop every live tap and every idle consumer; taps stopped later keep no consumer."""
        self._closed = True
        for tap in list(self._live):
            await self._stop(tap)
        while self._idle_consumers:
            await stop_consumer(self._idle_consumers.pop(), self._timeout)

    def _new_consumer(self) -> Any:
        return AIOKafkaConsumer(
            bootstrap_servers=self._info.url,
            client_id="harness-tap",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_uncommitted",
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            request_timeout_ms=int(self._timeout * 1000),
            # A new topic's leader is unknown until a metadata refresh: retry soon,
            # not after the default 100 ms, so a tap goes live quickly.
            retry_backoff_ms=10,
            fetch_max_wait_ms=50,
            **self._info.client_options,
        )

    async def _partitions_of(self, name: str) -> list[TopicPartition]:
        admin, producer = self._clients()
        known = producer.client.cluster.partitions_for_topic(name)  # fresh after create()
        if not known:
            # All-topics metadata: asking for this one topic would create it
            # on a broker with auto.create.topics.enable.
            found = [t for t in await admin.describe_topics(None) if t["topic"] == name]
            if not found:
                raise DestinationError(
                    f"cannot tap topic {name!r} on {self._info.url}: it does not exist; "
                    "create it first"
                )
            known = {p["partition"] for p in found[0]["partitions"]}
        return [TopicPartition(name, partition) for partition in sorted(known)]

    async def _pump(self, consumer: Any, name: str, on_record: TapCallback) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except kafka_errors.KafkaError as err:
                raise self._translate(err, f"tapping topic {name!r}") from err
            seen_ns = time.perf_counter_ns()
            for tp, records in batches.items():
                for record in records:
                    on_record(
                        TapRecord(
                            event="landed",
                            destination=name,
                            message=Message(
                                value=b"" if record.value is None else record.value,
                                key=record.key,
                                headers={k: b"" if v is None else v for k, v in record.headers},
                            ),
                            seen_ns=seen_ns,
                            partition=tp.partition,
                            offset=record.offset,
                            broker_timestamp_ms=record.timestamp,
                        )
                    )

    def _translate(self, err: BaseException, doing: str) -> HarnessError:
        return translate(err, doing, url=self._info.url, timeout=self._timeout)

    async def _stop(self, live: _LiveTap) -> BaseException | None:
        """Stop a tap's task and consumer (bounded); return the task's failure, if any."""
        self._live.discard(live)
        live.task.cancel()
        await asyncio.wait([live.task], timeout=self._timeout)
        if live.task.cancelled() and not self._closed:
            live.consumer.unsubscribe()  # healthy: keep it for the next tap
            self._idle_consumers.append(live.consumer)
            return None
        await stop_consumer(live.consumer, self._timeout)
        if live.task.done() and not live.task.cancelled():
            return live.task.exception()
        return None
