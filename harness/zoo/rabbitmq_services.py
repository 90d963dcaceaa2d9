"""Example aio-pika services: one correct, the others each with one known defect.

They are written the way users write consumers: iterate the input queue,
publish the result with publisher confirms, then ack. Every service shares the
skeleton in ``_consuming`` (connection, channel, consumer, a bounded graceful
stop) and differs only in its consume loop (and ``rabbitmq_robust`` in its
connection, which reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractQueueIterator,
)
from yarl import URL

from message_flow_harness import Endpoints

from .totals import Totals, parse_amount

log = logging.getLogger(__name__)

#: Connecting and starting to consume must finish within this.
START_TIMEOUT_S = 15.0
#: Stopping waits this long for the message in hand (then cancels the loop), and for the close.
STOP_TIMEOUT_S = 5.0
#: How long a cancelled loop may take to unwind.
CANCEL_TIMEOUT_S = 2.0
#: How long the "work" of the early-commit/ack services takes: the window a crash can hit.
WORK_SECONDS = 0.02
#: Deliveries the broker sends ahead of the acks.
PREFETCH_COUNT = 10
#: Bodies starting with this fail their first attempt in rabbitmq_retry_reorders.
FLAKY = b"flaky"
#: The harness carries ``Message.key`` in this header (AMQP messages have no key).
KEY_HEADER = "x-harness-key"
#: How long a publish may wait for the broker's confirm.
PUBLISH_TIMEOUT_S = 10.0
#: How often rabbitmq_robust tries to reconnect (aio-pika's default is 5 s).
RECONNECT_INTERVAL_S = 0.5
#: What a handler meets when the connection drops under it: a failed publish or ack,
#: or a confirm that never comes.
CONNECTION_LOST = (
    ConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    TimeoutError,
)

#: How often rabbitmq_quorum_retry's quorum input queue delivers a message before
#: dead-lettering it (x-delivery-limit: deliveries = limit + 1), and the queue's arguments
#: as the service declares them (beside ``x-queue-type``).
DELIVERY_LIMIT = 3
QUORUM_INPUT_ARGUMENTS: Mapping[str, Any] = {"x-delivery-limit": DELIVERY_LIMIT}

Consume = Callable[[AbstractChannel, AbstractQueueIterator], Coroutine[Any, Any, None]]
#: Declares a service's own topology on its channel and returns the queue it consumes.
Declare = Callable[[AbstractChannel], Awaitable[AbstractQueue]]


class PoisonMessage(ValueError):
    """The input cannot be processed, however often it is retried."""


def process(body: bytes) -> bytes:
    """The business logic: bodies starting with ``poison`` fail."""
    if body.startswith(b"poison"):
        raise PoisonMessage(f"cannot process {body[:40]!r}")
    return b"processed:" + body


async def _publish(
    channel: AbstractChannel, queue: str, incoming: AbstractIncomingMessage, body: bytes
) -> None:
    """Publish ``body`` to ``queue`` and wait for the broker's confirm."""
    # Copying the headers keeps the correlation id (and the harness's key header).
    outgoing = aio_pika.Message(
        body, headers=dict(incoming.headers), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
    )
    await channel.default_exchange.publish(outgoing, routing_key=queue, timeout=PUBLISH_TIMEOUT_S)


async def _wind_down(task: asyncio.Task[None], messages: AbstractQueueIterator) -> None:
    """Stop consuming and let the loop finish the message in hand; cancel it past the bound."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            # Cancelling the consumer ends the iteration after the message in
            # hand, and returns the prefetched rest to the queue.
            await messages.close()
            await asyncio.wait({task})
    except TimeoutError:
        log.warning("consumer did not stop within %s s: cancelling it", STOP_TIMEOUT_S)
    finally:
        if not task.done():
            task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_TIMEOUT_S)
    if task.done() and not task.cancelled():
        task.result()  # a loop that died surfaces here


@contextlib.asynccontextmanager
async def _consuming(
    endpoints: Endpoints,
    consume: Consume,
    *,
    robust: bool = False,
    declare: Declare | None = None,
) -> AsyncIterator[None]:
    """Run ``consume`` over the deliveries of ``endpoints.input`` until the block exits.

    ``robust``: connect with ``connect_robust``, which reconnects after a
    connection loss and declares the channel, its QoS and the consumer again.
    ``declare``: declare the service's own topology on its channel (exchanges,
    queues with their arguments, bindings) and return the queue to consume, as
    a service that owns its topology does, rather than use the input queue as
    it is.
    """
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            connection = await (
                aio_pika.connect_robust(endpoints.amqp_url, reconnect_interval=RECONNECT_INTERVAL_S)
                if robust
                else aio_pika.connect(endpoints.amqp_url)
            )
    except TimeoutError:
        where = URL(str(endpoints.amqp_url)).with_password(None)
        raise TimeoutError(f"no connection to {where} within {START_TIMEOUT_S} s") from None
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            channel = await connection.channel()  # publisher confirms are on by default
            await channel.set_qos(prefetch_count=PREFETCH_COUNT)
            queue = await (
                channel.get_queue(endpoints.input) if declare is None else declare(channel)
            )
            messages = queue.iterator()
            await messages.consume()
        task = asyncio.create_task(consume(channel, messages), name=f"consume {endpoints.input}")
        try:
            yield
        finally:
            await _wind_down(task, messages)
    finally:
        await asyncio.wait_for(connection.close(), STOP_TIMEOUT_S)


async def _handle_correctly(
    channel: AbstractChannel, endpoints: Endpoints, message: AbstractIncomingMessage
) -> None:
    """Publish the result and ack once confirmed; reject poison so it is dead-lettered."""
    try:
        result = process(message.body)
    except PoisonMessage:
        # The input queue's dead-letter policy routes it to the dead-letter queue.
        await message.reject(requeue=False)
        return
    await _publish(channel, endpoints.output, message, result)
    await message.ack()


@contextlib.asynccontextmanager
async def rabbitmq_correct(endpoints: Endpoints) -> AsyncIterator[None]:
    """Correct: publish the result, ack once confirmed; reject poison to dead-letter it."""

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            await _handle_correctly(channel, endpoints, message)

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_robust(endpoints: Endpoints) -> AsyncIterator[None]:
    """Correct, and survives a broker restart: as ``rabbitmq_correct``, on ``connect_robust``.

    A message whose publish or ack fails with the connection stays unacked, so
    the broker delivers it again once the service has reconnected (its output
    may then come twice: at-least-once).
    """

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            try:
                await _handle_correctly(channel, endpoints, message)
            except CONNECTION_LOST as exc:
                log.info("connection lost handling %s (%r): redelivered later", message, exc)

    async with _consuming(endpoints, consume, robust=True):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_concurrent(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: handles each delivery in its own task, so outputs of one key reorder.

    Caught by ``per_key_order``.
    """

    async def handle(channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        await asyncio.sleep(random.uniform(0, 0.05))  # stands for a database call
        await _handle_correctly(channel, endpoints, message)

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async with asyncio.TaskGroup() as handlers:
            async for message in messages:
                handlers.create_task(handle(channel, message))

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_ack_before_process(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: acks a delivery on receipt, then processes it.

    Correct while nothing fails; a crash between the ack and the publish
    loses the message. Caught by ``no_loss`` under crash faults only.
    """

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            await message.ack()
            await asyncio.sleep(WORK_SECONDS)  # the work (a database call, say) takes a while
            try:
                result = process(message.body)
            except PoisonMessage:
                # Already acked, so it can no longer be rejected: dead-letter it by hand.
                await _publish(channel, endpoints.dead_letter, message, message.body)
                continue
            await _publish(channel, endpoints.output, message, result)

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_requeue_forever(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: requeues a message that fails, so a poison message is redelivered without end.

    Caught by ``max_deliveries`` (and ``dead_lettered``).
    """

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            try:
                result = process(message.body)
            except PoisonMessage:
                await message.nack(requeue=True)  # "maybe it works next time"
                continue
            await _publish(channel, endpoints.output, message, result)
            await message.ack()

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_quorum_retry(endpoints: Endpoints) -> AsyncIterator[None]:
    """Correct on a quorum queue: a failure is nacked with requeue, the broker bounds the retries.

    The service declares its input as a quorum queue with ``x-delivery-limit``
    (:data:`QUORUM_INPUT_ARGUMENTS`), the standard poison-message guard: a
    message that fails every time is delivered ``DELIVERY_LIMIT + 1`` times,
    then the broker dead-letters it. Its flow needs ``Flow(queue_type="quorum",
    queue_arguments=QUORUM_INPUT_ARGUMENTS)``. The same handling on a classic
    queue is ``rabbitmq_requeue_forever``.
    """

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            try:
                result = process(message.body)
            except Exception:
                # The quorum queue counts the earlier deliveries of a redelivered message.
                count = message.headers.get("x-delivery-count", 0)
                attempt = (count if isinstance(count, int) else 0) + 1
                log.warning("attempt %d of %d failed: requeued", attempt, DELIVERY_LIMIT + 1)
                await message.nack(requeue=True)
                continue
            await _publish(channel, endpoints.output, message, result)
            await message.ack()

    async def declare(channel: AbstractChannel) -> AbstractQueue:
        arguments = {"x-queue-type": "quorum", **QUORUM_INPUT_ARGUMENTS}
        return await channel.declare_queue(endpoints.input, durable=True, arguments=arguments)

    async with _consuming(endpoints, consume, declare=declare):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_swallows_errors(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: logs a message that fails and acks it anyway.

    A poison message is neither processed nor dead-lettered. Caught by ``dead_lettered``.
    """

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            try:
                await _publish(channel, endpoints.output, message, process(message.body))
            except Exception:
                log.exception("skipping message %s", message.delivery_tag)
            await message.ack()

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_duplicate_output(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: publishes every output twice (a retry that does not check the first attempt).

    Caught by ``no_duplicates``.
    """

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            try:
                result = process(message.body)
            except PoisonMessage:
                await message.reject(requeue=False)
                continue
            await _publish(channel, endpoints.output, message, result)
            await _publish(channel, endpoints.output, message, result)
            await message.ack()

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_slow(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: takes 200 ms per message (a slow call made for each one).

    Otherwise correct. Caught by ``within(0.1)``.
    """

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            await asyncio.sleep(0.2)
            await _handle_correctly(channel, endpoints, message)

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_retry_reorders(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: retries a failed attempt by publishing the message again to the back
    of the queue (and acking the original), so a later message of its key overtakes it.

    A message whose body starts with ``flaky`` fails its first attempt (a timeout
    downstream, say). Caught by ``per_key_order`` once another message of the
    same key follows it.
    """
    failed_once: set[str] = set()

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            attempt = str(message.headers.get("x-harness-id") or message.message_id)
            if message.body.startswith(FLAKY) and attempt not in failed_once:
                failed_once.add(attempt)
                await _publish(channel, endpoints.input, message, message.body)  # retry later
                await message.ack()
                continue
            await _handle_correctly(channel, endpoints, message)

    async with _consuming(endpoints, consume):
        yield


def _key_of(message: AbstractIncomingMessage) -> bytes | None:
    key = message.headers.get(KEY_HEADER)
    return bytes(key) if isinstance(key, bytes | bytearray) else None


async def _add_to_total(
    channel: AbstractChannel, endpoints: Endpoints, totals: Totals, message: AbstractIncomingMessage
) -> None:
    """Add the body's amount to its key's total, publish the new total, then ack.

    A body that is not a positive amount is rejected, so it is dead-lettered.
    """
    amount = parse_amount(message.body)
    if amount is None:
        await message.reject(requeue=False)
        return
    # Read, modify, write: another handler may come in between. A message is
    # known by its message id (kept on redelivery), so a redelivered one adds
    # nothing; one without an id cannot be told from a redelivery and always counts.
    total = await totals.add(_key_of(message), amount, message.message_id or object())
    await _publish(channel, endpoints.output, message, str(total).encode())
    await message.ack()


@contextlib.asynccontextmanager
async def rabbitmq_lost_update(endpoints: Endpoints) -> AsyncIterator[None]:
    """Defect: handles each delivery in its own task, each a read-modify-write of its
    key's total in a shared store, so two updates of one key interleave and one is lost.

    Caught by ``totals_add_up`` (harness/zoo/totals.py, a check of one's own).
    """
    totals = Totals.of(endpoints)

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async with asyncio.TaskGroup() as handlers:
            async for message in messages:
                handlers.create_task(_add_to_total(channel, endpoints, totals, message))

    async with _consuming(endpoints, consume):
        yield


@contextlib.asynccontextmanager
async def rabbitmq_locked_totals(endpoints: Endpoints) -> AsyncIterator[None]:
    """Correct: as ``rabbitmq_lost_update``, but one update of a key at a time (a lock per
    key); deliveries of different keys are still handled concurrently."""
    totals = Totals.of(endpoints)

    async def add_locked(channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        async with totals.lock(_key_of(message)):
            await _add_to_total(channel, endpoints, totals, message)

    async def consume(channel: AbstractChannel, messages: AbstractQueueIterator) -> None:
        async with asyncio.TaskGroup() as handlers:
            async for message in messages:
                handlers.create_task(add_locked(channel, message))

    async with _consuming(endpoints, consume):
        yield


RABBITMQ_SERVICES: dict[
    str, Callable[[Endpoints], contextlib.AbstractAsyncContextManager[None]]
] = {
    service.__name__: service
    for service in (
        rabbitmq_correct,
        rabbitmq_robust,
        rabbitmq_concurrent,
        rabbitmq_ack_before_process,
        rabbitmq_requeue_forever,
        rabbitmq_quorum_retry,
        rabbitmq_swallows_errors,
        rabbitmq_duplicate_output,
        rabbitmq_slow,
        rabbitmq_retry_reorders,
        rabbitmq_lost_update,
        rabbitmq_locked_totals,
    )
}
