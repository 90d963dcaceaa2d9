"""The Kafka adapter's taps: every record that lands on a topic, read without a consumer group.

A tap assigns itself every partition of its topic from offset 0 and hands each
record to a callback from a background task. It reads in the committed view:
a ``read_committed`` reader's records are what landed, as a downstream
consumer sees them; a ``read_uncommitted`` reader beside it finds the records
of aborted transactions, handed over with ``aborted=True`` (see
brokers/kafka/_committed_view.py). A service that uses no transactions looks
the same in both views: its records land as before. :class:`Taps` holds one
adapter's live taps and the reader pairs that finished taps left behind, which
the next tap reuses (skipping two starts: bootstrap and metadata); closing
stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors

from message_flow_harness._broker import BrokerInfo, TapCallback, TapRecord
from message_flow_harness._errors import DestinationError, HarnessError
from message_flow_harness._message import Message
from message_flow_harness.brokers.kafka._clients import MAX_MESSAGE_BYTES, stop_consumer
from message_flow_harness.brokers.kafka._committed_view import CommittedView
from message_flow_harness.brokers.kafka._errors import translate

#: How long the committed reader waits for records in one poll (the uncommitted one does not wait).
POLL_MS = 200


@dataclass(eq=False)
class _Readers:
    """A tap's two consumers: the committed view and everything appended."""

    committed: Any
    uncommitted: Any

    def both(self) -> tuple[Any, Any]:
        return self.committed, self.uncommitted


@dataclass(eq=False)
class _LiveTap:
    readers: _Readers
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
        self._idle_readers: list[_Readers] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def tap(self, name: str, on_record: TapCallback) -> AsyncIterator[None]:
        """Tap topic ``name``, already checked (see ``KafkaAdapter.tap``)."""
        # Readers another tap is done with skip two starts (bootstrap and metadata).
        readers = self._idle_readers.pop() if self._idle_readers else None
        started: list[Any] = [] if readers is None else list(readers.both())
        try:
            async with asyncio.timeout(self._timeout):
                partitions = await self._partitions_of(name)
                if readers is None:
                    for isolation in ("read_committed", "read_uncommitted"):
                        consumer = self._new_consumer(isolation)
                        await consumer.start()
                        started.append(consumer)
                    readers = _Readers(*started)
                for consumer in readers.both():
                    consumer.assign(partitions)
                    # Offset 0 is the beginning, or out of range after retention, which
                    # auto_offset_reset="earliest" turns into the beginning: no round trip.
                    for tp in partitions:
                        consumer.seek(tp, 0)
        except BaseException as err:
            for consumer in started:
                await stop_consumer(consumer, self._timeout)
            if isinstance(err, TimeoutError | kafka_errors.KafkaError | OSError):
                raise self._translate(err, f"starting a tap on topic {name!r}") from err
            raise
        live = _LiveTap(
            readers=readers,
            task=asyncio.create_task(
                self._pump(readers, name, on_record), name=f"kafka-tap {name}"
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
        while self._idle_readers:
            for consumer in self._idle_readers.pop().both():
                await stop_consumer(consumer, self._timeout)

    def _new_consumer(self, isolation: Literal["read_committed", "read_uncommitted"]) -> Any:
        return AIOKafkaConsumer(
            bootstrap_servers=self._info.url,
            client_id="harness-tap",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation,
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

    async def _pump(self, readers: _Readers, name: str, on_record: TapCallback) -> None:
        """Hand over the committed reader's records, then the aborted ones the pair reveals.

        Only the committed reader waits: the uncommitted one's records are fetched
        in the background and drained at once, so the outputs' times are the
        committed view's and an aborted record is handed over within a poll. An
        uncommitted record becomes a tap record only if it aborted (most pair off).
        """
        view: CommittedView[tuple[Any, int]] = CommittedView()
        while True:
            try:
                committed = await readers.committed.getmany(timeout_ms=POLL_MS)
                seen_ns = time.perf_counter_ns()
                uncommitted = await readers.uncommitted.getmany(timeout_ms=0)
                uncommitted_ns = time.perf_counter_ns()
                for tp, records in committed.items():
                    partition = tp.partition
                    for record in records:
                        view.committed(partition, record.offset)
                        on_record(_tap_record(name, partition, record, seen_ns))
                for tp, records in uncommitted.items():
                    partition = tp.partition
                    for record in records:
                        if view.uncommitted(partition, record.offset, (record, uncommitted_ns)):
                            on_record(_tap_record(name, partition, record, uncommitted_ns, True))
                # Past aborted batches and markers the committed reader moves on without
                # returning a record: its position says how far it has decided.
                for tp in readers.committed.assignment():
                    position = await readers.committed.position(tp)
                    for record, at_ns in view.passed(tp.partition, position):
                        on_record(_tap_record(name, tp.partition, record, at_ns, True))
            except kafka_errors.KafkaError as err:
                raise self._translate(err, f"tapping topic {name!r}") from err

    def _translate(self, err: BaseException, doing: str) -> HarnessError:
        return translate(err, doing, url=self._info.url, timeout=self._timeout)

    async def _stop(self, live: _LiveTap) -> BaseException | None:
        """Stop a tap's task and consumer (bounded); return the task's failure, if any."""
        self._live.discard(live)
        live.task.cancel()
        await asyncio.wait([live.task], timeout=self._timeout)
        if live.task.cancelled() and not self._closed:
            for consumer in live.readers.both():
                consumer.unsubscribe()  # healthy: keep them for the next tap
            self._idle_readers.append(live.readers)
            return None
        for consumer in live.readers.both():
            await stop_consumer(consumer, self._timeout)
        if live.task.done() and not live.task.cancelled():
            return live.task.exception()
        return None


def _tap_record(
    topic: str, partition: int, record: Any, seen_ns: int, aborted: bool = False
) -> TapRecord:
    return TapRecord(
        event="landed",
        destination=topic,
        message=Message(
            value=b"" if record.value is None else record.value,
            key=record.key,
            headers={k: b"" if v is None else v for k, v in record.headers},
        ),
        seen_ns=seen_ns,
        partition=partition,
        offset=record.offset,
        broker_timestamp_ms=record.timestamp,
        aborted=aborted,
    )
