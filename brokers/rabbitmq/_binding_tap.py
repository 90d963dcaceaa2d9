"""The binding tap: a queue of the harness's own, bound to a service's exchange, read as it fills.

For services that declare their own exchanges (``Flow(topology=...)``): their
outputs go to an exchange by routing key and their dead letters through the
broker's dead-lettering, which the firehose does not trace. A queue bound to
that exchange with the flow's binding key sees both.

The queue (:class:`_BindingQueue`) belongs to the vhost's adapter, exclusive to
its connection, and serves run after run on a vhost the campaign reuses:
emptying the vhost deletes the service's exchange and the binding with it, so
a run only binds the queue again once its service has declared the exchange
(one round trip) and points it at its own history (:class:`_BindingTap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from types import TracebackType
from typing import TYPE_CHECKING

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.abc import DeliveredMessage

from message_flow_harness._broker import TapCallback, TapRecord
from message_flow_harness._errors import DestinationError
from message_flow_harness.brokers.rabbitmq._codec import _decode_message

if TYPE_CHECKING:
    from message_flow_harness.brokers.rabbitmq._adapter import RabbitAdapter

#: The header of the message :meth:`_BindingQueue.drain` sends itself.
_SENTINEL_HEADER = "x-harness-binding-tap-drain"


class _BindingQueue:
    """A queue bound to ``exchange`` with ``binding_key``, reporting to whichever run holds it."""

    def __init__(self, adapter: RabbitAdapter, exchange: str, binding_key: str) -> None:
        self._adapter = adapter
        self.exchange, self.binding_key = exchange, binding_key
        self.on_record: TapCallback | None = None  # the run holding it; None: idle
        self.error: BaseException | None = None  # what that run's callback raised
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._token = secrets.token_hex(8)
        self._drained = asyncio.Event()
        self._doing = f"binding a tap queue to exchange {exchange!r} with key {binding_key!r}"

    @property
    def usable(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def open(self) -> None:
        """Its queue, read from now on: none of this needs the exchange (see :meth:`bind`)."""
        try:
            async with self._adapter._translated(self._doing):
                channel = await self._adapter._open_channel(publisher_confirms=False)
                self._channel = channel
                self._queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                underlay = await channel.get_underlay_channel()
                await underlay.basic_consume(self._queue.name, self._on_message, no_ack=True)
        except BaseException:
            await self.close()
            raise

    async def bind(self) -> None:
        """Bind the queue to the exchange, which the service has declared once it consumes."""
        assert self._queue is not None, "bind() is for an opened queue"
        try:
            async with self._adapter._translated(self._doing):
                await self._queue.bind(self.exchange, routing_key=self.binding_key)
        except DestinationError as exc:
            if isinstance(exc.__cause__, aiormq.exceptions.ChannelNotFoundEntity):
                raise DestinationError(
                    f"exchange {self.exchange!r} does not exist on vhost {self._adapter._vhost!r}"
                    " once the service consumes its input: declare it before consuming, or"
                    " observe a queue instead (Topology(output='queue-name'))"
                ) from exc
            raise

    async def drain(self) -> None:
        """Wait (bounded) until what reached the queue before now is handled (or dropped).

        A sentinel sent to the queue itself comes after it: once the exchange is
        gone, nothing of the last run reaches the next run's history.
        """
        channel, queue = self._channel, self._queue
        if channel is None or queue is None or not self.usable:
            return
        self._drained.clear()
        sentinel = aio_pika.Message(body=b"", headers={_SENTINEL_HEADER: self._token})
        async with self._adapter._translated(f"draining the tap on exchange {self.exchange!r}"):
            await channel.default_exchange.publish(sentinel, routing_key=queue.name)
            await self._drained.wait()

    async def _on_message(self, message: DeliveredMessage) -> None:
        amqp = message.header.properties
        headers = amqp.headers or {}
        if headers.get(_SENTINEL_HEADER) in (self._token, self._token.encode()):
            self._drained.set()
            return
        on_record = self.on_record
        if on_record is None or self.error is not None:
            return  # between runs: what the last one left goes
        try:
            on_record(
                TapRecord(
                    event="landed",
                    destination=self.exchange,
                    message=_decode_message(message.body, amqp.headers),
                    seen_ns=time.perf_counter_ns(),
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                )
            )
        except Exception as exc:  # re-raised when the run's tap exits, never lost
            self.error = exc

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(TimeoutError, OSError, RuntimeError, aiormq.exceptions.AMQPError):
            await channel.close()


class _BindingTap:
    """One run's tap: reports ``landed`` on ``exchange`` each message it routes with
    ``binding_key``, through a :class:`_BindingQueue` of the adapter's."""

    def __init__(
        self, adapter: RabbitAdapter, exchange: str, binding_key: str, on_record: TapCallback
    ) -> None:
        self._adapter = adapter
        self.exchange, self.binding_key = exchange, binding_key
        self._on_record = on_record
        self._queue: _BindingQueue | None = None

    async def __aenter__(self) -> _BindingTap:
        self._queue = await self._adapter._binding_queue(
            self.exchange, self.binding_key, self._on_record
        )
        return self

    async def bind(self) -> None:
        assert self._queue is not None, "bind() is for an entered tap"
        await self._queue.bind()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        queue, self._queue = self._queue, None
        if queue is None:
            return
        error, queue.error, queue.on_record = queue.error, None, None
        if error is None:
            return
        if exc is not None:
            exc.add_note(f"the tap on exchange {self.exchange!r} also failed: {error!r}")
            return
        raise error
