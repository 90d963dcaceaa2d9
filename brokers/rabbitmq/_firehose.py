"""The firehose tap: RabbitMQ's own trace of every publish and delivery, read without consuming.

One :class:`_Firehose` per adapter consumes a server-named queue bound to the
vhost's publish and delivery traces (``amq.rabbitmq.trace``) and to the
dead-letter fanout, and hands each trace that concerns a tapped queue to that
queue's :class:`_FirehoseTap` (the adapter's ``tap()``) as a ``landed`` or
``delivered`` record. It remembers what it reported landing, so that after a
broker restart, which takes its queue and the traces still in it, it can
resume on the adapter's new connection and reconcile: report what the
unconsumed tapped queues hold and it never saw (:class:`Reconciled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import urllib.parse
from array import array
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.abc import DeliveredMessage

from message_flow_harness._broker import TapCallback, TapEvent, TapRecord
from message_flow_harness._errors import BrokerUnavailable, DestinationError
from message_flow_harness._message import Message
from message_flow_harness.brokers.rabbitmq._codec import (
    DEAD_LETTER_EXCHANGE,
    TRACE_EXCHANGE,
    _decode_message,
)

if TYPE_CHECKING:
    from message_flow_harness.brokers.rabbitmq._adapter import RabbitAdapter

#: Marks the message a tap publishes to itself to prove the firehose is live.
_SENTINEL_HEADER: Final = "x-harness-tap-sentinel"


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What :meth:`RabbitAdapter.reconnect` found in one tapped queue after a restart."""

    queue: str
    held: int = 0  # messages the queue holds
    reported: int = 0  # of those, reported ``landed`` now: the taps had missed their traces
    gone: int = 0  # landings the taps had reported that the queue no longer holds
    skipped: str | None = None  # why the queue was not read

    def __str__(self) -> str:
        if self.skipped is not None:
            return f"{self.queue}: not read ({self.skipped})"
        text = f"{self.queue}: {self.held} held, {self.reported} missed by the tap reported now"
        if self.gone:
            text += f", {self.gone} reported before and gone (not kept through the restart)"
        return text


class _Seen:
    """What the firehose reported landing on one tapped queue, to reconcile after a restart.

    ``landed`` holds one identity hash per landing (8 bytes each), until the
    queue turns out to be one reconciling must not read (``why_not``).
    """

    __slots__ = ("landed", "why_not")

    def __init__(self) -> None:
        self.landed: array[int] | None = array("q")
        self.why_not: str | None = None

    def exclude(self, why: str) -> None:
        if self.landed is not None:
            self.landed, self.why_not = None, why


def _identity(message_id: object, message: Message) -> int:
    """A message's identity across its trace and a later basic.get: message id, body, headers."""
    return hash(
        (_text(message_id), message.value, message.key, tuple(sorted(message.headers.items())))
    )


class _Firehose:
    """The adapter's one firehose consumer, shared by all its taps.

    One server-named queue bound to every publish and delivery trace of the
    vhost and to the dead-letter fanout. Each trace is decoded once, and only
    when a tapped queue is concerned, however many taps are live; a new tap
    costs no call to the broker at all (a run starts three). Consumed with
    aiormq's own consumer, not aio-pika's: each trace would otherwise cost a
    second task and an ``IncomingMessage``, and a run brings a few dozen.
    After a broker restart :meth:`resume` starts it again on the adapter's new
    connection, and :meth:`reconcile` reports what the lost queue's traces
    would have.
    """

    def __init__(self, adapter: RabbitAdapter) -> None:
        self._adapter = adapter
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._token = secrets.token_hex(8)
        self._live = asyncio.Event()
        self._taps: dict[str, list[_FirehoseTap]] = {}
        self._seen: dict[str, _Seen] = {}
        # The broker's name for the adapter's connection ("host:port -> host:port"),
        # from the sentinel's trace: deliveries to it are reconcile()'s own reads.
        self._connection_name: str | None = None
        self.lost: BaseException | None = None
        self._closing = False

    @property
    def usable(self) -> bool:
        channel = self._channel
        return self.lost is None and channel is not None and not channel.is_closed

    async def start(self) -> None:
        """Open the channel and queue, and wait until a sentinel publish is traced."""
        adapter = self._adapter
        async with adapter._translated("starting the firehose tap consumer"):
            channel = await adapter._open_channel(publisher_confirms=True, on_return_raises=True)
            self._channel = channel
            channel.close_callbacks.add(self._on_channel_closed)
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            self._queue = queue
            await queue.bind(TRACE_EXCHANGE, routing_key="publish.#")
            await queue.bind(TRACE_EXCHANGE, routing_key="deliver.#")
            await adapter._wire_dead_letters(channel)
            await queue.bind(DEAD_LETTER_EXCHANGE, routing_key="")  # a fanout: every dead letter
            underlay = await channel.get_underlay_channel()
            await underlay.basic_consume(queue.name, self._on_message, no_ack=True)
            sentinel = aio_pika.Message(body=b"", headers={_SENTINEL_HEADER: self._token})
            await channel.default_exchange.publish(sentinel, routing_key=queue.name, mandatory=True)
        try:
            async with asyncio.timeout(adapter._timeout):
                await self._live.wait()
        except TimeoutError as exc:
            vhost = adapter._vhost
            raise DestinationError(
                f"firehose tracing is off on vhost {vhost!r} at {adapter._where}: a tap's "
                f"sentinel message was not traced within {adapter._timeout:g} s; turn it on "
                f"with `rabbitmqctl trace_on -p {vhost}` or the management API "
                f"(PUT /api/vhosts/{urllib.parse.quote(vhost, safe='')} with "
                '{"tracing": true})'
            ) from exc

    async def drain(self) -> None:
        """Wait (bounded) until the traces of everything published before now are handled.

        A sentinel's trace comes after them: a vhost cleared for its next run
        hands none of the last run's late traces to the next run's taps.
        """
        channel, queue = self._channel, self._queue
        if channel is None or queue is None or not self.usable:
            return
        self._live = asyncio.Event()
        sentinel = aio_pika.Message(body=b"", headers={_SENTINEL_HEADER: self._token})
        async with self._adapter._translated("draining the firehose tap"):
            await channel.default_exchange.publish(sentinel, routing_key=queue.name, mandatory=True)
            await self._live.wait()

    async def resume(self) -> None:
        """Start again on the adapter's new connection after a broker restart, taps and all."""
        self._channel, self._queue = None, None  # died with the old connection
        self._closing = False
        self.lost = None
        self._live = asyncio.Event()
        self._token = secrets.token_hex(8)
        self._connection_name = None
        try:
            await self.start()
        except BaseException as exc:
            self.lost = exc  # the taps must not carry on as if nothing happened
            raise

    async def close(self) -> None:
        self._closing = True
        channel, self._channel = self._channel, None
        if channel is None or channel.is_closed:
            return
        # The exclusive, auto-delete queue goes away with its channel's consumer
        # (deleting it first would have the broker cancel the consumer, noisily).
        with contextlib.suppress(TimeoutError, OSError, RuntimeError, aiormq.exceptions.AMQPError):
            async with asyncio.timeout(self._adapter._timeout):
                await channel.close()

    def add(self, tap: _FirehoseTap) -> None:
        """Hand ``tap`` its queue's traces and dead letters from now on."""
        taps = self._taps.setdefault(tap.destination, [])
        taps.append(tap)
        if len(taps) == 1:
            self._seen[tap.destination] = _Seen()

    def remove(self, tap: _FirehoseTap) -> None:
        taps = self._taps.get(tap.destination, [])
        if tap in taps:
            taps.remove(tap)
        if not taps:
            self._taps.pop(tap.destination, None)
            self._seen.pop(tap.destination, None)

    # -- reconciling after a restart

    def tapped(self) -> list[str]:
        """The queues with live taps."""
        return list(self._taps)

    def mark_consumed(self, name: str) -> None:
        seen = self._seen.get(name)
        if seen is not None:
            seen.exclude("it had consumers when the restart began")

    def published_to(self, name: str) -> None:
        """The adapter publishes to ``name``: its landings are the harness's own, never missed."""
        seen = self._seen.get(name)
        if seen is not None:
            seen.exclude("the harness publishes to it")

    async def reconcile(self) -> list[Reconciled]:
        """Report ``landed`` what the unconsumed tapped queues hold and the taps never saw."""
        found: list[Reconciled] = []
        for name in self.tapped():
            seen = self._seen.get(name)
            if seen is None:
                continue  # its last tap left meanwhile
            if seen.landed is None:
                found.append(Reconciled(name, skipped=seen.why_not))
                continue
            held = await self._read(name)
            if held is None:
                found.append(Reconciled(name, skipped="the queue does not exist"))
                continue
            unmatched = Counter(seen.landed)
            missed: list[tuple[int, AbstractIncomingMessage, Message]] = []
            for message in held:
                decoded = _decode_message(message.body, message.headers)
                identity = _identity(message.message_id, decoded)
                if unmatched[identity] > 0:
                    unmatched[identity] -= 1
                else:
                    missed.append((identity, message, decoded))
            if seen.landed is not None and name in self._taps:  # still tracked and tapped
                seen.landed.extend(identity for identity, _, _ in missed)
                for _, message, decoded in missed:
                    record = TapRecord(
                        event="landed",
                        destination=name,
                        message=decoded,
                        seen_ns=time.perf_counter_ns(),
                        exchange=message.exchange,
                        routing_key=message.routing_key,
                    )
                    for tap in list(self._taps.get(name, ())):
                        tap.deliver(record)
            gone = sum(n for n in unmatched.values() if n > 0)
            found.append(Reconciled(name, len(held), len(missed), gone))
        return found

    async def _read(self, name: str) -> list[AbstractIncomingMessage] | None:
        """What queue ``name`` holds, in order, left in it (None if it does not exist).

        basic.get without ack, one message at a time, then one nack of them all
        with requeue: the broker puts them back where they were.
        """
        adapter = self._adapter
        async with adapter._translated(f"reading queue {name!r} after a broker restart"):
            try:
                async with adapter._scratch_channel() as channel:
                    queue = await channel.declare_queue(name, passive=True)
                    result = queue.declaration_result
                    count = 0 if result is None else int(result.message_count or 0)
                    held: list[AbstractIncomingMessage] = []
                    while len(held) < count:
                        message = await queue.get(no_ack=False, fail=False)
                        if message is None:
                            break
                        held.append(message)
                    if held:
                        await held[-1].nack(multiple=True, requeue=True)
                    return held
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None

    # -- traces

    def _on_channel_closed(self, channel: object, exc: BaseException | None) -> None:
        if channel is not self._channel:
            return  # the channel of before a restart
        if not self._closing and not self._adapter._closing:
            self.lost = exc or ConnectionError("the broker closed the firehose channel")

    async def _on_message(self, message: DeliveredMessage) -> None:
        try:
            self._route(message, time.perf_counter_ns())
        except Exception as exc:  # a trace we cannot read: every tap must say so
            for taps in self._taps.values():
                for tap in taps:
                    tap.fail(exc)

    def _route(self, message: DeliveredMessage, seen_ns: int) -> None:
        if message.exchange == DEAD_LETTER_EXCHANGE:
            # Every dead letter of the vhost: its routing key names the target queue.
            queue = message.routing_key or ""
            if queue not in self._taps:
                return
            amqp = message.header.properties
            decoded = _decode_message(message.body, amqp.headers)
            self._count_landed([queue], amqp.message_id, decoded)
            self._dispatch(
                queue,
                lambda queue: TapRecord(
                    event="landed",
                    destination=queue,
                    message=decoded,
                    seen_ns=seen_ns,
                    exchange=DEAD_LETTER_EXCHANGE,
                    routing_key=message.routing_key,
                ),
            )
            return
        if message.exchange != TRACE_EXCHANGE:
            return  # the sentinel's own copy, published straight to the queue
        routing_key = message.routing_key or ""
        trace: Mapping[str, Any] = message.header.properties.headers or {}
        if routing_key.startswith("deliver."):
            queues = [routing_key.removeprefix("deliver.")]
            event: TapEvent = "delivered"
        elif routing_key.startswith("publish."):
            queues = _routed_queues(trace)
            event = "landed"
            if not self._live.is_set() and self._queue is not None and self._queue.name in queues:
                self._connection_name = _text(trace.get("connection"))
                self._live.set()  # the sentinel: tracing is on
        else:
            return
        if not any(queue in self._taps for queue in queues):
            return  # not ours: do not even decode it
        if event == "delivered":
            if (
                self._connection_name is not None
                and _text(trace.get("connection")) == self._connection_name
            ):
                return  # reconcile() reading a queue: nobody else's delivery
            for queue in queues:
                seen = self._seen.get(queue)
                if seen is not None:
                    seen.exclude("a consumer takes messages from it")
        properties = trace.get("properties")
        if not isinstance(properties, Mapping):
            properties = {}
        headers = properties.get("headers")
        if not isinstance(headers, Mapping):
            headers = None
        decoded = _decode_message(message.body, headers)
        if event == "landed":
            self._count_landed(queues, properties.get("message_id"), decoded)
        routing_keys = trace.get("routing_keys")
        first_key = routing_keys[0] if isinstance(routing_keys, list) and routing_keys else None
        redelivered = bool(trace.get("redelivered")) if event == "delivered" else None
        for queue in queues:
            self._dispatch(
                queue,
                lambda queue: TapRecord(
                    event=event,
                    destination=queue,
                    message=decoded,
                    seen_ns=seen_ns,
                    redelivered=redelivered,
                    exchange=_text(trace.get("exchange_name")),
                    routing_key=_text(first_key),
                ),
            )

    def _count_landed(self, queues: list[str], message_id: object, message: Message) -> None:
        identity: int | None = None
        for queue in queues:
            seen = self._seen.get(queue)
            if seen is not None and seen.landed is not None:
                if identity is None:
                    identity = _identity(message_id, message)
                seen.landed.append(identity)

    def _dispatch(self, queue: str, record: Callable[[str], TapRecord]) -> None:
        taps = self._taps.get(queue)
        if not taps:
            return
        built = record(queue)
        for tap in list(taps):
            tap.deliver(built)


def _routed_queues(trace: Mapping[str, Any]) -> list[str]:
    """The queues a traced publish went to."""
    routed = trace.get("routed_queues")
    if isinstance(routed, list):
        return [name for name in map(_text, routed) if name is not None]
    # Brokers before 3.7 do not say where a publish went: trust the default exchange.
    keys = trace.get("routing_keys")
    if _text(trace.get("exchange_name")) == "" and isinstance(keys, list):
        return [name for name in map(_text, keys) if name is not None]
    return []


class _FirehoseTap(AbstractAsyncContextManager[None]):
    """One tap on one queue, fed by the adapter's shared :class:`_Firehose`."""

    def __init__(self, adapter: RabbitAdapter, destination: str, on_record: TapCallback) -> None:
        self._adapter = adapter
        self.destination = destination
        self._on_record = on_record
        self._firehose: _Firehose | None = None
        self._error: BaseException | None = None

    async def __aenter__(self) -> None:
        firehose = await self._adapter._shared_firehose()
        firehose.add(self)
        self._firehose = firehose

    def deliver(self, record: TapRecord) -> None:
        if self._error is not None:
            return
        try:
            self._on_record(record)
        except Exception as exc:  # re-raised from __aexit__, never lost
            self._error = exc

    def fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        firehose, self._firehose = self._firehose, None
        if firehose is None:
            return
        lost = firehose.lost
        if lost is None and not self._adapter._closing:
            if self._adapter._is_lost():
                lost = self._adapter._lost or ConnectionError("the connection closed")
            elif not firehose.usable:
                lost = ConnectionError("the broker closed the tap's channel")
        firehose.remove(self)
        problem: BaseException | None = self._error
        if problem is None and lost is not None:
            problem = BrokerUnavailable(
                f"the firehose tap on queue {self.destination!r} lost its channel to "
                f"{self._adapter._where} ({lost!r}): records after that were missed"
            )
            problem.__cause__ = lost
        if problem is None:
            return
        if exc is not None:
            exc.add_note(f"the tap on queue {self.destination!r} also failed: {problem!r}")
            return
        raise problem


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
