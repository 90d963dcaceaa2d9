"""Example aiokafka services: one correct, the others each with one known defect.

They are written the way users write consumers: poll a batch, produce the
results, commit. Every service shares the skeleton in ``_consuming`` (clients,
group membership, the poll loop, a bounded graceful stop) and differs only in
how it handles a polled batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from message_flow_harness import Endpoints

from .totals import Totals, parse_amount

log = logging.getLogger(__name__)

#: Connecting and joining the consumer group must finish within this.
START_TIMEOUT_S = 15.0
#: Stopping waits this long for the batch in hand (then cancels the loop), and for each client.
STOP_TIMEOUT_S = 5.0
#: How long a cancelled loop may take to unwind.
CANCEL_TIMEOUT_S = 2.0
#: How long the "work" of the early-commit/ack services takes: the window a crash can hit.
WORK_SECONDS = 0.02
#: How long the transactional services wait before trying a failed recovery again.
RETRY_S = 0.1

Handle = Callable[[AIOKafkaConsumer, AIOKafkaProducer, list[ConsumerRecord]], Awaitable[None]]


class PoisonMessage(ValueError):
    """The input cannot be processed, however often it is retried."""


def process(value: bytes) -> bytes:
    """The business logic: values starting with ``poison`` fail."""
    if value.startswith(b"poison"):
        raise PoisonMessage(f"cannot process {value[:40]!r}")
    return b"processed:" + value


async def _send_output(producer: AIOKafkaProducer, topic: str, record: ConsumerRecord) -> Any:
    """Produce the result of ``record``; returns the delivery future (raises PoisonMessage)."""
    result = process(record.value)
    # Copying the key keeps per-key order; copying headers keeps the correlation id.
    return await producer.send(topic, result, key=record.key, headers=list(record.headers))


async def _send_dead_letter(
    producer: AIOKafkaProducer, topic: str, record: ConsumerRecord, error: Exception
) -> Any:
    headers = [*record.headers, ("x-error", str(error).encode())]
    return await producer.send(topic, record.value, key=record.key, headers=headers)


async def _send_result(
    producer: AIOKafkaProducer, endpoints: Endpoints, record: ConsumerRecord
) -> Any:
    """Produce ``record``'s output, or its dead letter if poison; returns the delivery future."""
    try:
        return await _send_output(producer, endpoints.output, record)
    except PoisonMessage as error:
        return await _send_dead_letter(producer, endpoints.dead_letter, record, error)


# aiokafka has no type information, so mypy sees its base class as Any.
class _Membership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Signals the first assignment; a revocation waits until the batch in hand is committed."""

    def __init__(self, *, guard_revocation: bool = True) -> None:
        self.assigned = asyncio.Event()
        self.batch = asyncio.Lock()
        self.guard_revocation = guard_revocation

    async def on_partitions_revoked(self, revoked: object) -> None:
        # Committing what was processed before giving the partitions away keeps
        # the new owner from processing it again.
        if self.guard_revocation:
            async with self.batch:
                pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.assigned.set()


async def _stop_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(client.stop(), STOP_TIMEOUT_S)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # a cancel aimed at us: let it through
        # aiokafka's Fetcher.close() cancels a fetch still backing off after a lost
        # connection and awaits it unguarded, so stop() raises its CancelledError
        # (aio-libs/aiokafka#647) before it closes the network client: close that.
        log.info("%s.stop() raised aiokafka's stray CancelledError", type(client).__name__)
        network = client._client if isinstance(client, AIOKafkaConsumer) else client.client
        await asyncio.wait_for(network.close(), STOP_TIMEOUT_S)


async def _wind_down(
    task: asyncio.Task[None], stopping: asyncio.Event, batch: asyncio.Lock
) -> None:
    """Stop polling and let the loop finish the batch in hand; cancel it past the bound.

    A loop waiting in ``getmany`` holds no batch: cancelling it at once loses
    nothing (no records are handed out mid-wait) and spares waiting out the poll.
    """
    stopping.set()
    if not batch.locked():
        task.cancel()
    try:
        done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
        if not done:
            log.warning("consumer did not stop within %s s: cancelling it", STOP_TIMEOUT_S)
    finally:
        if not task.done():
            task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_TIMEOUT_S)
    if task.done() and not task.cancelled():
        task.result()  # a loop that died surfaces here


@contextlib.asynccontextmanager
async def _consuming(
    endpoints: Endpoints, handle: Handle, *, guard_revocation: bool = True
) -> AsyncIterator[None]:
    """Run ``handle`` on every polled batch of ``endpoints.input`` until the block exits."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=endpoints.bootstrap_servers,
        group_id=endpoints.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
    )
    membership = _Membership(guard_revocation=guard_revocation)
    stopping = asyncio.Event()

    async def poll_loop(producer: AIOKafkaProducer) -> None:
        while not stopping.is_set():
            # Poll outside the lock: a rebalance runs inside the poll, and its
            # revocation waits for this lock (holding it here would deadlock).
            batches = await consumer.getmany(timeout_ms=100, max_records=100)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                continue
            async with membership.batch:
                try:
                    await handle(consumer, producer, records)
                except CommitFailedError:
                    # The group rebalanced under us: the new owner gets these again.
                    log.warning(
                        "commit failed after a rebalance: %d records redeliver", len(records)
                    )

    async with contextlib.AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                stack.push_async_callback(_stop_client, consumer)
                await consumer.start()
                # Joining the group goes on in the background while the producer starts.
                consumer.subscribe([endpoints.input], listener=membership)
                # Created only now: aiokafka warns about a client that is never closed.
                producer = AIOKafkaProducer(
                    bootstrap_servers=endpoints.bootstrap_servers, acks="all"
                )
                stack.push_async_callback(_stop_client, producer)
                await producer.start()
                await membership.assigned.wait()
        except TimeoutError:
            raise TimeoutError(
                f"no partitions of {endpoints.input!r} assigned to group {endpoints.group_id!r}"
                f" within {START_TIMEOUT_S} s: is Kafka up at {endpoints.bootstrap_servers}?"
            ) from None
        task = asyncio.create_task(poll_loop(producer), name=f"consume {endpoints.input}")
        try:
            yield
        finally:
            await _wind_down(task, stopping, membership.batch)


@contextlib.asynccontextmanager
async def kafka_correct(endpoints: Endpoints) -> AsyncIterator[None]:
    """Correct: produce a batch's outputs (poison to the dead-letter topic), await acks, commit."""

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        deliveries = [await _send_result(producer, endpoints, record) for record in records]
        await asyncio.gather(*deliveries)
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


@contextlib.asynccontextmanager
async def kafka_concurrent_batch(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: handles a batch's records concurrently, so outputs of one key reorder.

    Caught by ``per_key_order``.
    """

    async def handle_one(producer: AIOKafkaProducer, record: ConsumerRecord) -> None:
        await asyncio.sleep(random.uniform(0, 0.05))  # stands for a database call
        try:
            await (await _send_output(producer, endpoints.output, record))
        except PoisonMessage as error:
            await (await _send_dead_letter(producer, endpoints.dead_letter, record, error))

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        await asyncio.gather(*(handle_one(producer, record) for record in records))
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


@contextlib.asynccontextmanager
async def kafka_commit_before_process(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: commits a batch before producing its outputs.

    Correct while nothing fails; a crash between the commit and the acks
    loses the batch. Caught by ``no_loss`` under crash faults only.
    """

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        await consumer.commit()
        await asyncio.sleep(WORK_SECONDS)  # the work (a database call, say) takes a while
        deliveries = [await _send_result(producer, endpoints, record) for record in records]
        await asyncio.gather(*deliveries)

    async with _consuming(endpoints, handle):
        yield


@contextlib.asynccontextmanager
async def kafka_swallows_errors(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: logs and skips a record that fails, then commits past it.

    A poison message is neither processed nor dead-lettered. Caught by ``dead_lettered``.
    """

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        deliveries = []
        for record in records:
            try:
                deliveries.append(await _send_output(producer, endpoints.output, record))
            except Exception:
                log.exception("skipping record at offset %d", record.offset)
        await asyncio.gather(*deliveries)
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


@contextlib.asynccontextmanager
async def kafka_duplicate_output(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: produces every output twice (a retry that does not check the first attempt).

    Caught by ``no_duplicates``.
    """

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        deliveries = []
        for record in records:
            try:
                deliveries.append(await _send_output(producer, endpoints.output, record))
                deliveries.append(await _send_output(producer, endpoints.output, record))
            except PoisonMessage as error:
                deliveries.append(
                    await _send_dead_letter(producer, endpoints.dead_letter, record, error)
                )
        await asyncio.gather(*deliveries)
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


@contextlib.asynccontextmanager
async def kafka_slow(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: takes 200 ms per record (a slow call made for each one).

    Otherwise correct. Caught by ``within(0.1)``.
    """

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        for record in records:
            await asyncio.sleep(0.2)
            await (await _send_result(producer, endpoints, record))
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


@contextlib.asynccontextmanager
async def kafka_rebalance_duplicates(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: gives its partitions away in a rebalance without first committing the
    batch in hand, so the new owner processes that batch again.

    Correct while it consumes alone; caught by ``no_duplicates`` when a second
    instance joins (a ``Join`` fault).
    """

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        await asyncio.sleep(10 * WORK_SECONDS)  # slow work: a rebalance can land in it
        deliveries = [await _send_result(producer, endpoints, record) for record in records]
        await asyncio.gather(*deliveries)
        await consumer.commit()

    async with _consuming(endpoints, handle, guard_revocation=False):
        yield


async def _add_to_total(
    producer: AIOKafkaProducer, endpoints: Endpoints, totals: Totals, record: ConsumerRecord
) -> None:
    """Add the record's amount to its key's total and produce the new total.

    A value that is not a positive amount goes to the dead-letter topic.
    """
    amount = parse_amount(record.value)
    if amount is None:
        error = ValueError(f"not an amount: {record.value[:40]!r}")
        await (await _send_dead_letter(producer, endpoints.dead_letter, record, error))
        return
    # Read, modify, write: another handler may come in between. A record is
    # known by its place in the log, so a redelivered one adds nothing.
    total = await totals.add(record.key, amount, (record.topic, record.partition, record.offset))
    new = str(total).encode()
    await (await producer.send(endpoints.output, new, key=record.key, headers=list(record.headers)))


@contextlib.asynccontextmanager
async def kafka_lost_update(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: handles a batch's records concurrently, each a read-modify-write of its
    key's total in a shared store, so two updates of one key interleave and one is lost.

    Caught by ``totals_add_up`` (harness/zoo/totals.py, a check of one's own).
    """
    totals = Totals.of(endpoints)

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        await asyncio.gather(
            *(_add_to_total(producer, endpoints, totals, record) for record in records)
        )
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


@contextlib.asynccontextmanager
async def kafka_locked_totals(endpoints: Endpoints) -> AsyncIterator[None]:
    """Correct: as ``kafka_lost_update``, but one update of a key at a time (a lock per key);
    records of different keys are still handled concurrently."""
    totals = Totals.of(endpoints)

    async def add_locked(producer: AIOKafkaProducer, record: ConsumerRecord) -> None:
        async with totals.lock(record.key):
            await _add_to_total(producer, endpoints, totals, record)

    async def handle(
        consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, records: list[ConsumerRecord]
    ) -> None:
        await asyncio.gather(*(add_locked(producer, record) for record in records))
        await consumer.commit()

    async with _consuming(endpoints, handle):
        yield


# --- exactly-once: consume, transform and produce in one transaction ------------------

#: The broker aborts a transaction left open this long (a crashed instance's whose
#: partition nobody takes over); a takeover aborts it at once (see _TransactionalProducers).
TRANSACTION_TIMEOUT_MS = 10_000

CommitOffsets = Callable[
    [AIOKafkaConsumer, AIOKafkaProducer, TopicPartition, list[ConsumerRecord]], Awaitable[None]
]


class _TransactionalProducers(ConsumerRebalanceListener):  # type: ignore[misc]
    """One transactional producer per assigned input partition, its id derived from the partition.

    Why one per partition: aiokafka's ``send_offsets_to_transaction`` sends the
    group id but not the group's generation (no KIP-447 fencing by the group), so
    the only thing that stops a crashed or replaced instance from committing is a
    producer starting with the *same* ``transactional_id``: its InitProducerId
    aborts the old producer's open transaction and fences it. An id that follows
    the partition (``{group}-{topic}-{partition}``) does that wherever the
    partition moves; one id per instance would not (a new instance's id is new).
    """

    def __init__(self, endpoints: Endpoints) -> None:
        self.assigned = asyncio.Event()
        self.batch = asyncio.Lock()  # held while a batch's transaction is in hand
        self.endpoints = endpoints
        self.producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self.rebalances = 0  # revocations so far: a batch polled before one is stale
        self._starting = asyncio.Lock()

    async def on_partitions_revoked(self, revoked: object) -> None:
        async with self.batch:  # the transaction in hand ends first
            self.rebalances += 1
            for tp in list(self.producers):
                await self.drop(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            for tp in sorted(assigned):
                await self.ensure(tp)
        except (KafkaError, TimeoutError) as error:  # the poll loop starts it later
            log.warning("starting a transactional producer failed: %r", error)
        self.assigned.set()

    async def ensure(self, tp: TopicPartition) -> AIOKafkaProducer:
        """``tp``'s producer, started if it has none. Its start finishes or aborts what an
        earlier producer under its id left open (and fences that one)."""
        async with self._starting:  # one at a time: two under one id would fence each other
            producer = self.producers.get(tp)
            if producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.endpoints.bootstrap_servers,
                    transactional_id=f"{self.endpoints.group_id}-{tp.topic}-{tp.partition}",
                    transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                    enable_idempotence=True,
                )
                try:
                    async with asyncio.timeout(START_TIMEOUT_S):
                        await producer.start()
                except BaseException:
                    await _stop_client(producer)
                    raise
                self.producers[tp] = producer
            return producer

    async def drop(self, tp: TopicPartition) -> None:
        """Stop ``tp``'s producer (a failed transaction can leave it broken for good)."""
        async with self._starting:
            producer = self.producers.pop(tp, None)
            if producer is not None:
                await _stop_client(producer)

    async def close(self) -> None:
        for tp in list(self.producers):
            await self.drop(tp)


@contextlib.asynccontextmanager
async def _transforming(endpoints: Endpoints, commit_offsets: CommitOffsets) -> AsyncIterator[None]:
    """Consume ``read_committed``; each partition's batch goes out in one transaction of its
    partition's producer, and ``commit_offsets`` settles the batch's offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=endpoints.bootstrap_servers,
        group_id=endpoints.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
    )
    producers = _TransactionalProducers(endpoints)
    stopping = asyncio.Event()

    async def poll_loop() -> None:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=100)
            rebalances = producers.rebalances
            async with producers.batch:
                if producers.rebalances != rebalances:
                    # Revoked since the poll: the reassignment moved every position back to
                    # the committed offset, so these come again, here or to the new owner.
                    continue
                for tp, records in batches.items():
                    try:
                        # Started by the listener, or here if records came first or its
                        # start failed (a connection lost during the rebalance).
                        producer = await producers.ensure(tp)
                        await commit_offsets(consumer, producer, tp, records)
                    except CommitFailedError:
                        log.warning("commit failed after a rebalance: %s redelivers", tp)
                    except (KafkaError, TimeoutError) as error:
                        # A lost connection can fail the transaction, and even end the
                        # producer's sender for good (aio-libs/aiokafka#907): start over
                        # with a new producer and the batch from the committed offset.
                        log.warning("transaction on %s failed (%r): retrying its batch", tp, error)
                        await producers.drop(tp)
                        await resume(tp, records[0].offset)

    async def resume(tp: TopicPartition, first: int) -> None:
        """Fetch ``tp`` again from its committed offset, once a new producer has settled
        the old one's transaction (committed or aborted, the offset then says which)."""
        while not stopping.is_set():
            try:
                await producers.ensure(tp)
                committed = await consumer.committed(tp)
            except (KafkaError, TimeoutError) as error:
                log.warning("resuming %s failed (%r): trying again", tp, error)
                await asyncio.sleep(RETRY_S)
                continue
            consumer.seek(tp, first if committed is None else committed)
            return

    async with contextlib.AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                stack.push_async_callback(_stop_client, consumer)
                stack.push_async_callback(producers.close)
                await consumer.start()
                consumer.subscribe([endpoints.input], listener=producers)
                await producers.assigned.wait()
        except TimeoutError:
            raise TimeoutError(
                f"no partitions of {endpoints.input!r} assigned to group {endpoints.group_id!r}"
                f" within {START_TIMEOUT_S} s: is Kafka up at {endpoints.bootstrap_servers}?"
            ) from None
        task = asyncio.create_task(poll_loop(), name=f"transform {endpoints.input}")
        try:
            yield
        finally:
            await _wind_down(task, stopping, producers.batch)


async def _send_offsets(
    producer: AIOKafkaProducer,
    endpoints: Endpoints,
    tp: TopicPartition,
    records: list[ConsumerRecord],
) -> None:
    """Add the batch's input offsets to ``producer``'s open transaction."""
    offsets = {tp: records[-1].offset + 1}
    await producer.send_offsets_to_transaction(offsets, endpoints.group_id)


@contextlib.asynccontextmanager
async def kafka_transactional(endpoints: Endpoints) -> AsyncIterator[None]:
    """Correct, exactly-once: a batch's outputs and its input offsets commit in one transaction.

    A crash aborts the open transaction (its outputs never reach a ``read_committed``
    consumer) and the batch is consumed again from the last committed offset.
    """

    async def in_one_transaction(
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        tp: TopicPartition,
        records: list[ConsumerRecord],
    ) -> None:
        async with producer.transaction():
            for record in records:
                await _send_result(producer, endpoints, record)
            await _send_offsets(producer, endpoints, tp, records)

    async with _transforming(endpoints, in_one_transaction):
        yield


@contextlib.asynccontextmanager
async def kafka_offsets_outside_transaction(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: commits a batch's outputs in a transaction, then its offsets outside it.

    Between the two it writes the batch to its audit log (a database call). A
    crash after the transaction and before the offsets' commit leaves the outputs
    committed and the offsets not, so the batch is processed again: duplicates a
    ``read_committed`` consumer sees. Caught by ``no_duplicates`` under crash faults only.
    """

    async def offsets_after(
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        tp: TopicPartition,
        records: list[ConsumerRecord],
    ) -> None:
        async with producer.transaction():
            for record in records:
                await _send_result(producer, endpoints, record)
        await asyncio.sleep(WORK_SECONDS)  # the audit log's write
        await consumer.commit({tp: records[-1].offset + 1})

    async with _transforming(endpoints, offsets_after):
        yield


@contextlib.asynccontextmanager
async def kafka_outputs_outside_transaction(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: sends a batch's outputs with the service's plain producer, then commits its
    offsets in a transaction of the partition's transactional producer.

    The outputs are no part of the transaction: once acked they are in the
    committed view, whatever becomes of it. Between the two the service writes
    the batch to its audit log (a database call). A crash after the outputs and
    before the transaction commits aborts the offsets, so the batch is processed
    again: duplicates a ``read_committed`` consumer sees. Caught by
    ``no_duplicates`` under crash faults only.
    """
    # The producer the rest of the application publishes with (no transactional_id).
    plain = AIOKafkaProducer(bootstrap_servers=endpoints.bootstrap_servers, acks="all")

    async def outputs_before(
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        tp: TopicPartition,
        records: list[ConsumerRecord],
    ) -> None:
        deliveries = [await _send_result(plain, endpoints, record) for record in records]
        await asyncio.gather(*deliveries)
        await asyncio.sleep(WORK_SECONDS)  # the audit log's write
        async with producer.transaction():
            await _send_offsets(producer, endpoints, tp, records)

    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_stop_client, plain)
        async with asyncio.timeout(START_TIMEOUT_S):
            await plain.start()
        async with _transforming(endpoints, outputs_before):
            yield


KAFKA_SERVICES: dict[str, Callable[[Endpoints], contextlib.AbstractAsyncContextManager[None]]] = {
    service.__name__: service
    for service in (
        kafka_correct,
        kafka_concurrent_batch,
        kafka_commit_before_process,
        kafka_swallows_errors,
        kafka_duplicate_output,
        kafka_slow,
        kafka_rebalance_duplicates,
        kafka_lost_update,
        kafka_locked_totals,
        kafka_transactional,
        kafka_offsets_outside_transaction,
        kafka_outputs_outside_transaction,
    )
}
