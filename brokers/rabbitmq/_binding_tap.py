"""The binding tap: a queue of the harness's own, bound to a service's exchange, read as it fills.

For services that declare their own exchanges (``Flow(topology=...)``): their
outputs go to an exchange by routing key and their dead letters through the
broker's dead-lettering, which the firehose does not trace. A queue bound to
that exchange with the flow's binding key sees both. It is exclusive to the
adapter's connection, so it goes when the tap or the connection does, and in
any case with the run's vhost. The queue is made and read while the service
starts; only binding it waits for the service's exchange (one round trip).
"""

from __future__ import annotations

import contextlib
import time
from types import TracebackType
from typing import TYPE_CHECKING

import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.abc import DeliveredMessage

from message_flow_harness._broker import TapCallback, TapRecord
from message_flow_harness._errors import DestinationError
from message_flow_harness.brokers.rabbitmq._codec import _decode_message

if TYPE_CHECKING:
    from message_flow_harness.brokers.rabbitmq._adapter import RabbitAdapter


class _BindingTap:
    """Reports ``landed`` on ``exchange`` each message it routes with ``binding_key``."""

    def __init__(
        self, adapter: RabbitAdapter, exchange: str, binding_key: str, on_record: TapCallback
    ) -> None:
        self._adapter = adapter
        self.exchange, self.binding_key = exchange, binding_key
        self._on_record = on_record
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._error: BaseException | None = None
        self._doing = f"binding a tap queue to exchange {exchange!r} with key {binding_key!r}"

    async def __aenter__(self) -> _BindingTap:
        """Its queue, read from now on: none of this needs the exchange (see :meth:`bind`)."""
        try:
            async with self._adapter._translated(self._doing):
                channel = await self._adapter._open_channel(publisher_confirms=False)
                self._channel = channel
                self._queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                underlay = await channel.get_underlay_channel()
                await underlay.basic_consume(self._queue.name, self._on_message, no_ack=True)
        except BaseException:
            await self._close()
            raise
        return self

    async def bind(self) -> None:
        """Bind the queue to the exchange, which the service has declared once it consumes."""
        assert self._queue is not None, "bind() is for an entered tap"
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

    async def _on_message(self, message: DeliveredMessage) -> None:
        if self._error is not None:
            return
        try:
            amqp = message.header.properties
            self._on_record(
                TapRecord(
                    event="landed",
                    destination=self.exchange,
                    message=_decode_message(message.body, amqp.headers),
                    seen_ns=time.perf_counter_ns(),
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                )
            )
        except Exception as exc:  # re-raised from __aexit__, never lost
            self._error = exc

    async def _close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(TimeoutError, OSError, RuntimeError, aiormq.exceptions.AMQPError):
            await channel.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()
        if self._error is None:
            return
        if exc is not None:
            exc.add_note(f"the tap on exchange {self.exchange!r} also failed: {self._error!r}")
            return
        raise self._error
