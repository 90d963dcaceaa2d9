"""The RabbitMQ adapter: queue administration, publishing, taps, and carrying them over restarts.

:class:`RabbitAdapter` is what the core talks to on one vhost (see
``brokers/rabbitmq/__init__.py`` for how the harness's model maps onto AMQP):
it owns the aio-pika connection and its channels, creates and deletes queues
with their dead-letter wiring (asking its :class:`ManagementClient` what
exists and for the policies), publishes with confirms, starts the shared
firehose that feeds its taps, and reconnects after a broker restart fault,
turning driver errors into the harness's own on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection

from message_flow_harness._broker import (
    BrokerAdapter,
    BrokerInfo,
    DestinationSpec,
    Publishing,
    PublishReceipt,
    TapCallback,
    check_producer,
    check_publishing,
)
from message_flow_harness._drivers import driver
from message_flow_harness._errors import BrokerUnavailable, DestinationError, InvalidArgument
from message_flow_harness._message import BrokerKind, Message
from message_flow_harness._redact import redact_url
from message_flow_harness.brokers.rabbitmq._binding_tap import _BindingQueue, _BindingTap
from message_flow_harness.brokers.rabbitmq._codec import (
    _DEAD_LETTER_ROUTER,
    _MAX_NAME_BYTES,
    _MAX_TRACEABLE_BYTES,
    DEAD_LETTER_EXCHANGE,
    _encode_headers,
    _some,
    _validate_queue_name,
)
from message_flow_harness.brokers.rabbitmq._connection import (
    _OPEN_ADAPTERS,
    _close_quietly,
    _connect_amqp,
    _explain_failure,
    _finish_before_cancel,
    _why_failed,
)
from message_flow_harness.brokers.rabbitmq._firehose import Reconciled, _Firehose, _FirehoseTap
from message_flow_harness.brokers.rabbitmq._management import ManagementClient
from message_flow_harness.brokers.rabbitmq._queue_types import check_for_broker
from message_flow_harness.brokers.rabbitmq._urls import (
    _URL_FIX,
    _check_url,
    _vhost_of,
    with_vhost,
)

__all__ = ("RabbitAdapter",)


class RabbitAdapter(BrokerAdapter):
    """Administration, publishing and firehose taps on one RabbitMQ vhost.

    Uses a plain (not robust) aio-pika connection so that connection loss is
    seen, never hidden by reconnects. Every call is bounded by ``timeout``.
    """

    kind: BrokerKind = "rabbitmq"

    def __init__(self, info: BrokerInfo, *, timeout: float = 10.0) -> None:
        if info.kind != "rabbitmq":
            raise InvalidArgument(
                f"info.kind={info.kind!r} is invalid: RabbitAdapter needs 'rabbitmq'"
            )
        _check_url(info.url)
        if not timeout > 0:
            raise InvalidArgument(
                f"timeout={timeout!r} is invalid: pass a positive number of seconds"
            )
        self.info = info
        self._timeout = float(timeout)
        self._where = redact_url(info.url)
        self._vhost = _vhost_of(info.url)
        self._connection: AbstractConnection | None = None
        self._channels: dict[int, AbstractChannel] = {}  # publishing channels, by producer
        self._idle_admin_channels: list[AbstractChannel] = []  # see _scratch_channel
        self._management = ManagementClient(
            info, timeout=self._timeout, in_use=lambda: self._connection is not None
        )
        self._last_channel_number = 1  # the connection's first channel: see _open_channel
        self._closing = False
        self._lost: BaseException | None = None
        self._firehose: _Firehose | None = None
        self._firehose_lock = asyncio.Lock()
        # The binding taps' queues, kept for the runs after on a reused vhost.
        self._binding_queues: list[_BindingQueue] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it was opened on
        self._restarting = False  # between prepare_for_restart() and reconnect()
        self._busy = 0  # administrative calls in flight
        # Queues this adapter created, and those it set a dead-letter policy on.
        self._created: set[str] = set()
        self._policies: set[str] = set()
        self._dead_letters_wired = False  # the exchanges, declared once a connection
        self._idle = asyncio.Event()
        self._idle.set()

    # -- life cycle

    async def open(self) -> None:
        """Connect and open the publishing channel within ``timeout``."""
        if self._connection is not None and not self._connection.is_closed:
            return
        self._closing = False
        self._lost = None
        try:
            connection, channel = await self._connect()
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(
                await _explain_failure(exc, url=self.info.url, within=self._timeout)
            ) from exc
        self._install(connection, channel)

    async def _connect(self) -> tuple[AbstractConnection, AbstractChannel]:
        """A new connection and publishing channel, within ``timeout`` (closed again on failure)."""
        connection: AbstractConnection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                connection = await _connect_amqp(self.info.url, within=self._timeout)
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            if connection is not None:
                await _close_quietly(connection, within=self._timeout)
            raise
        return connection, channel

    def _install(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        connection.close_callbacks.add(self._on_connection_closed)
        self._connection = connection
        self._channels = {0: channel}
        self._idle_admin_channels = []
        self._dead_letters_wired = False
        self._loop = asyncio.get_running_loop()
        _OPEN_ADAPTERS.add(self)

    def _broker_version(self) -> str | None:
        """The version the broker gave when this adapter connected, if it gave one."""
        transport = self._connection.transport if self._connection is not None else None
        said = transport.connection.server_properties.get("version") if transport else None
        if isinstance(said, bytes):
            said = said.decode("utf-8", "replace")
        return said if isinstance(said, str) else None

    def _on_connection_closed(self, connection: object, exc: BaseException | None) -> None:
        if connection is not self._connection:
            return  # an old connection, replaced by reconnect()
        if not self._closing:
            self._lost = exc or ConnectionError("the connection closed")

    # -- broker restarts

    async def prepare_for_restart(self) -> None:
        """Get ready for a restart of the broker that is about to happen.

        Waits (bounded by ``timeout``) for the administrative calls in flight
        (creating or deleting queues), so none is cut in half, and notes which
        tapped queues have consumers now: :meth:`reconnect` leaves those alone.
        Until :meth:`reconnect`, new taps are refused (the live ones are kept).
        Call it while the broker still runs, before cutting the services off.
        """
        self._restarting = True
        with contextlib.suppress(TimeoutError):  # a call that hangs fails by itself
            async with asyncio.timeout(self._timeout):
                await self._idle.wait()
        firehose = self._firehose
        if firehose is None or self._connection is None:
            return
        for name in firehose.tapped():
            if await self._consumers(name):
                firehose.mark_consumed(name)

    async def _consumers(self, name: str) -> int:
        """How many consumers queue ``name`` has (0 for a missing queue)."""
        async with self._translated(f"counting the consumers of queue {name!r}"):
            try:
                async with self._scratch_channel() as channel:
                    declared = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return 0
            except aiormq.exceptions.ChannelLockedResource:
                return 1  # exclusive to another connection: consumed there, as far as we know
        result = declared.declaration_result
        return 0 if result is None else int(result.consumer_count or 0)

    async def unready(
        self, destination: str, *, group_id: str | None, partitions: int
    ) -> str | None:
        """None once queue ``destination`` has a consumer (a passive declare counts them)."""
        if await self._consumers(destination):
            return None
        return f"queue {destination!r} had no consumer"

    async def reconnect(self) -> list[Reconciled]:
        """After the broker restarted: reconnect, resume the firehose, report what it missed.

        Opens a fresh connection and publishing channel (other producers'
        channels open again on first use) and resumes the shared firehose on
        it: a new channel and exclusive queue bound to every publish and
        delivery trace and to the dead-letter exchange for each queue that
        still has live taps, and the sentinel check that tracing is on. Live
        taps carry on, and do not raise on exit for the restart.

        The traces the broker had accepted but not yet handed to the old
        firehose queue were lost with it. So each tapped queue that nobody
        consumes (no consumer when :meth:`prepare_for_restart` looked, no
        delivery traced, nothing published to it by this adapter: a run's
        output and dead-letter queues) is read without consuming it (basic.get
        without ack, then requeued), and every message its taps had not
        reported is reported ``landed`` now, in queue order. Messages are
        told apart by AMQP ``message_id`` with body and headers, counted as a
        multiset, so identical messages are not merged. Returns what each
        queue held; raises BrokerUnavailable (naming the URL and the fix) if
        the broker does not answer within ``timeout``.

        Sound only while nothing else touches those queues: hold the
        services off the broker until this returns, and tap queues before
        anything lands in them (a message that was in the queue before its
        first tap started would be reported too).
        """
        self._restarting = True
        try:
            return await self._reconnect()
        finally:
            self._restarting = False

    async def _reconnect(self) -> list[Reconciled]:
        old, self._connection = self._connection, None
        self._channels = {}
        if old is not None:
            await _close_quietly(old, within=self._timeout)
        self._closing = False
        self._lost = None
        try:
            connection, channel = await self._connect()
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            log = self.info.extra.get("log")
            raise BrokerUnavailable(
                f"cannot reconnect to RabbitMQ at {self._where} after a broker restart"
                f" ({_why_failed(exc, url=self.info.url, within=self._timeout)}):"
                " check that the broker came back" + (f" (its log: {log})" if log else "")
            ) from exc
        self._install(connection, channel)
        firehose = self._firehose
        if firehose is None:
            return []
        await firehose.resume()
        return await firehose.reconcile()

    @contextlib.asynccontextmanager
    async def _administering(self) -> AsyncIterator[None]:
        """Count an administrative call in flight (prepare_for_restart waits for them)."""
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    def _is_lost(self) -> bool:
        """True once the connection has died under the adapter (not closed by close())."""
        connection = self._connection
        if self._closing or connection is None:
            return False
        return self._lost is not None or not connection.connected.is_set()

    async def close(self) -> None:
        """Close the connection (and with it every tap); safe to call twice."""
        self._closing = True
        _OPEN_ADAPTERS.discard(self)
        firehose, self._firehose = self._firehose, None
        if firehose is not None:
            await firehose.close()
        queues, self._binding_queues = self._binding_queues, []
        for queue in queues:
            await queue.close()
        connection, self._connection = self._connection, None
        self._channels.clear()
        self._idle_admin_channels.clear()
        self._management.close()
        if connection is not None:
            await _close_quietly(connection, within=self._timeout)

    def _require_connection(self) -> AbstractConnection:
        connection = self._connection
        if connection is None:
            raise BrokerUnavailable(
                f"not connected to RabbitMQ at {self._where}: call open() first "
                "(or use `async with RabbitAdapter(info) as adapter`)"
            )
        if connection.is_closed or self._is_lost():
            raise BrokerUnavailable(
                f"the connection to RabbitMQ at {self._where} was lost ({self._lost!r}): "
                "check that the broker is still running; " + _URL_FIX
            )
        return connection

    @contextlib.asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[None]:
        """Bound the block by ``timeout`` and turn driver errors into harness errors."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {self._where} did not finish {doing} within {self._timeout:g} s: "
                "check that the broker is up and not overloaded"
            ) from exc
        except aiormq.exceptions.ChannelClosed as exc:
            raise DestinationError(
                f"RabbitMQ at {self._where} refused {doing}: {_reply(exc)}"
            ) from exc
        except (
            aiormq.exceptions.AMQPConnectionError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            OSError,
        ) as exc:
            raise BrokerUnavailable(
                f"lost the connection to RabbitMQ at {self._where} while {doing} "
                f"({type(exc).__name__}: {exc}): check that the broker is still running"
            ) from exc
        except aiormq.exceptions.AMQPError as exc:
            raise DestinationError(f"RabbitMQ at {self._where} failed {doing}: {exc!r}") from exc
        except RuntimeError as exc:
            # aiormq says "connection closed" with a bare RuntimeError.
            if not self._is_lost():
                raise
            raise BrokerUnavailable(
                f"lost the connection to RabbitMQ at {self._where} while {doing} "
                f"({self._lost!r}): check that the broker is still running"
            ) from exc

    async def _open_channel(self, **options: Any) -> AbstractChannel:
        """A channel on the adapter's connection, under a number not used lately.

        aiormq numbers a new channel one past the highest open one, so a channel
        the broker has just closed (a passive declare's 404) hands its number
        to the next; opened while the broker is still closing the old one, that
        is a connection error ("second 'channel.open' seen") that drops every
        channel. Cycling through the numbers the broker allows leaves a closed
        number unused for a couple of thousand opens.
        """
        connection = self._require_connection()
        underlay = connection.transport
        if underlay is None:
            raise BrokerUnavailable(f"the connection to RabbitMQ at {self._where} is closed")
        in_use = underlay.connection.channels
        top = min(underlay.connection.connection_tune.channel_max or 2047, 2047)
        for _ in range(top):
            self._last_channel_number = self._last_channel_number % top + 1
            if self._last_channel_number not in in_use:
                return await connection.channel(channel_number=self._last_channel_number, **options)
        raise BrokerUnavailable(
            f"all {top} channels of the connection to RabbitMQ at {self._where} are open:"
            " the adapter leaks channels (report it)"
        )

    @contextlib.asynccontextmanager
    async def _scratch_channel(self) -> AsyncIterator[AbstractChannel]:
        """A channel for one administrative step: a 404 or 406 closes it, not the adapter's.

        A step that went well hands its channel on to the next (opening and
        closing one costs more than the step); one that failed closes it.
        """
        self._require_connection()
        idle = self._idle_admin_channels
        while idle and idle[-1].is_closed:
            idle.pop()
        channel = idle.pop() if idle else await self._open_channel(publisher_confirms=False)
        try:
            yield channel
        except BaseException:
            if not channel.is_closed:
                await channel.close()
            raise
        if not channel.is_closed:
            idle.append(channel)

    # -- destinations

    async def create(self, spec: DestinationSpec) -> None:
        """Declare a durable queue of ``spec.queue_type`` with ``spec.arguments``.

        Dead-lettering to ``spec.dead_letter`` is wired by a policy, not an
        argument: a service that declares the queue with the same arguments
        as ``spec`` (its own, as deployed) declares an equivalent queue.
        """
        await self.create_all([spec])

    @_finish_before_cancel
    async def create_all(self, specs: Sequence[DestinationSpec]) -> None:
        """Create several queues in one batch; a broker restart waits for all of them.

        The existence checks and policies go out at once and the declarations
        share a channel: a campaign creates three queues per example.
        """
        async with self._administering():
            await self._create_all(specs)

    async def _create_all(self, specs: Sequence[DestinationSpec]) -> None:
        names = [_validate_queue_name(spec.name, limit=_MAX_TRACEABLE_BYTES) for spec in specs]
        for spec in specs:
            if spec.partitions != 1:
                raise InvalidArgument(
                    f"partitions={spec.partitions!r} is invalid for RabbitMQ queue"
                    f" {spec.name!r}: a queue has no partitions; pass partitions=1"
                )
            if spec.dead_letter is not None:
                _validate_queue_name(
                    spec.dead_letter, what="dead_letter", limit=_MAX_TRACEABLE_BYTES
                )
            check_for_broker(spec.arguments, version=self._broker_version())
        async with self._translated(f"creating queue(s) {_some(names)}"):
            existing = await self._management.existing(names)
            taken = [name for name in names if name in existing]
            if taken or len(set(names)) < len(names):
                name = taken[0] if taken else names[0]
                raise DestinationError(
                    f"queue {name!r} already exists on vhost {self._vhost!r} at {self._where}"
                    " (or is named twice): pick another name or delete it first"
                )
            # A policy, not queue arguments: a service that declares its own
            # queue (durable, no arguments) must not clash with the harness's.
            await asyncio.gather(
                *(
                    self._set_dead_letter_policy(spec.name, spec.dead_letter)
                    for spec in specs
                    if spec.dead_letter is not None
                )
            )
            async with self._scratch_channel() as channel:
                await self._wire_dead_letters(channel)
                for spec in specs:
                    queue = await channel.declare_queue(
                        spec.name, durable=True, arguments=_declared_arguments(spec)
                    )
                    await queue.bind(_DEAD_LETTER_ROUTER, routing_key=spec.name)
                    self._created.add(spec.name)
            dead_letters = {spec.dead_letter for spec in specs if spec.dead_letter is not None}
            outside = sorted(dead_letters - set(names))
            if outside:  # dead-letter queues made earlier, or outside the harness
                found = await self._management.existing(outside)
                async with self._scratch_channel() as channel:
                    for dead_letter in (name for name in outside if name in found):
                        dead = await channel.declare_queue(dead_letter, passive=True)
                        await dead.bind(_DEAD_LETTER_ROUTER, routing_key=dead_letter)

    async def _wire_dead_letters(self, channel: AbstractChannel) -> None:
        """Declare the dead-letter fanout and its router, bound, once a connection."""
        if self._dead_letters_wired:
            return
        fanout = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        router = await channel.declare_exchange(
            _DEAD_LETTER_ROUTER, aio_pika.ExchangeType.DIRECT, durable=True
        )
        await router.bind(fanout)  # the routing key (the target queue's name) carries over
        self._dead_letters_wired = True

    async def _set_dead_letter_policy(self, name: str, dead_letter: str) -> None:
        await self._management.set_dead_letter_policy(name, dead_letter)
        self._policies.add(name)

    async def delete(self, name: str) -> None:
        """Delete queue ``name`` with its messages; a missing queue is not an error."""
        await self.delete_all([name])

    @_finish_before_cancel
    async def delete_all(self, names: Sequence[str]) -> None:
        """Delete several queues at once; a broker restart waits for all of them.

        A queue's dead-letter policy goes with it. A queue this adapter created
        without one has none to delete: that saves an HTTP call per queue.
        """
        for name in names:
            _validate_queue_name(name)
        async with self._administering():
            await asyncio.gather(*(self._delete(name) for name in names))

    async def _delete(self, name: str) -> None:
        async with self._translated(f"deleting queue {name!r}"):
            try:
                async with self._scratch_channel() as channel:
                    await channel.queue_delete(name)
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass  # brokers that answer 404 for a missing queue
        if name in self._policies or name not in self._created:
            await self._management.delete_dead_letter_policy(name)
        self._policies.discard(name)
        self._created.discard(name)

    async def list_destinations(self, prefix: str = "") -> list[str]:
        """Queue names on this vhost starting with ``prefix``, from the management HTTP API."""
        self._require_connection()
        names = await self._management.queue_names()
        return sorted(name for name in names if name.startswith(prefix))

    # -- traffic

    async def _publishing_channel(self, producer: int = 0) -> AbstractChannel:
        self._require_connection()  # a lost connection fails here, even with a channel cached
        check_producer(producer)
        channel = self._channels.get(producer)
        if channel is None or channel.is_closed:
            # The broker closes a channel on some refusals; the connection is still good.
            channel = await self._open_channel(publisher_confirms=True, on_return_raises=True)
            self._channels[producer] = channel
        return channel

    async def publish(
        self, destination: str, message: Message, *, partition: int | None = None
    ) -> PublishReceipt:
        """Publish persistently to queue ``destination`` and wait for the broker's confirm.

        ``message.key`` travels in the :data:`KEY_HEADER` header.
        """
        if partition is not None:
            raise InvalidArgument(
                f"partition={partition!r} is invalid for RabbitMQ queue {destination!r}: "
                "queues have no partitions; pass partition=None"
            )
        [receipt] = await self.publish_many(destination, [message])  # which checks the name
        return receipt

    async def publish_many(
        self,
        destination: str,
        messages: Sequence[Message],
        *,
        producer: int = 0,
        publishing: Publishing = "plain",
    ) -> list[PublishReceipt]:
        """Publish persistently, in order, all awaiting their confirms at once.

        ``producer`` > 0 is a publishing channel of its own on the adapter's
        connection (the broker runs each channel as its own process).
        ``publishing`` is ``"plain"`` only (the others are Kafka producer modes).
        """
        driver(self.kind).check_publishing(check_publishing(publishing))
        if not isinstance(destination, str) or len(destination.encode()) > _MAX_NAME_BYTES:
            raise InvalidArgument(
                f"destination={destination!r:.60} is invalid: pass a queue name of at most "
                f"{_MAX_NAME_BYTES} bytes"
            )
        if self._firehose is not None:
            self._firehose.published_to(destination)
        return await self._publish("", destination, messages, producer=producer)

    async def publish_routed(
        self, exchange: str, routing_key: str, messages: Sequence[Message], *, producer: int = 0
    ) -> list[PublishReceipt]:
        """Publish persistently to ``exchange`` with ``routing_key``, awaiting the confirms.

        For a service that declares its own exchange (``Flow(topology=...)``):
        a message its bindings route nowhere is an error (``mandatory``).
        """
        if not isinstance(exchange, str) or not exchange:
            raise InvalidArgument(f"exchange={exchange!r} is invalid: name the exchange")
        return await self._publish(exchange, routing_key, messages, producer=producer)

    async def _publish(
        self, exchange_name: str, destination: str, messages: Sequence[Message], *, producer: int
    ) -> list[PublishReceipt]:
        """Publish through ``exchange_name`` ("" the default exchange) with ``destination`` as
        routing key; the receipts name ``destination``."""
        bodies = [
            aio_pika.Message(
                body=message.value,
                headers=_encode_headers(message),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            for message in messages
        ]
        where = f"exchange {exchange_name!r} with routing key" if exchange_name else "queue"
        async with self._translated(f"publishing to {where} {destination!r}"):
            channel = await self._publishing_channel(producer)
            exchange = (
                await channel.get_exchange(exchange_name, ensure=False)
                if exchange_name
                else channel.default_exchange
            )
            # The publishes start in this order and nothing suspends them before
            # the channel's lock, which hands out in arrival order: frames go out
            # in order and only the confirms are awaited together.
            try:
                await asyncio.gather(
                    *(
                        exchange.publish(
                            body, routing_key=destination, mandatory=True, timeout=self._timeout
                        )
                        for body in bodies
                    )
                )
            except aiormq.exceptions.PublishError as exc:
                if exchange_name:
                    raise DestinationError(
                        f"exchange {exchange_name!r} on vhost {self._vhost!r} at {self._where}"
                        f" routed routing key {destination!r} to no queue: does the service"
                        " bind its input queue with that key? (Topology(publish=...))"
                    ) from exc
                raise DestinationError(
                    f"queue {destination!r} does not exist on vhost {self._vhost!r} at "
                    f"{self._where}: the broker returned the message as unroutable; "
                    "create the queue first"
                ) from exc
            except aiormq.exceptions.DeliveryError as exc:
                raise DestinationError(
                    f"RabbitMQ at {self._where} refused a message for queue {destination!r} "
                    f"(negative confirm: {exc!r}): check the queue's limits and policies"
                ) from exc
        return [PublishReceipt(destination=destination) for _ in messages]

    def tap_binding(self, exchange: str, binding_key: str, on_record: TapCallback) -> _BindingTap:
        """Observe what ``exchange`` routes with ``binding_key``, through a queue of the tap's own.

        For a service that declares its own exchanges (``Flow(topology=...)``):
        the tap's exclusive queue is read from when it is entered and bound to
        the exchange by ``bind()`` (the exchange must exist by then); it reports
        each message as ``landed`` on ``exchange``. Unlike the firehose, it also
        sees what the broker dead-letters there. The queue stays with the
        adapter for the next run on a reused vhost (see :meth:`clear_vhost`).
        """
        return _BindingTap(self, exchange, binding_key, on_record)

    async def _binding_queue(
        self, exchange: str, binding_key: str, on_record: TapCallback
    ) -> _BindingQueue:
        """An idle binding queue for ``exchange`` and ``binding_key`` (made if there is
        none), now reporting to ``on_record``."""
        self._binding_queues = [queue for queue in self._binding_queues if queue.usable]
        idle = (
            queue
            for queue in self._binding_queues
            if (queue.exchange, queue.binding_key) == (exchange, binding_key)
            and queue.on_record is None
        )
        queue = next(idle, None)
        if queue is None:
            queue = _BindingQueue(self, exchange, binding_key)
            await queue.open()
            self._binding_queues.append(queue)
        queue.on_record = on_record
        return queue

    # -- a virtual host per run (Flow(topology=...))

    async def open_vhost(self, name: str) -> RabbitAdapter:
        """Create vhost ``name`` (tracing on, the user granted) and an adapter open on it.

        The new adapter's firehose is started at once: a run's first tap then
        costs nothing, and a campaign prepares it ahead of the run.
        """
        await self._management.create_vhost(name)
        info = dataclasses.replace(self.info, url=with_vhost(self.info.url, name))
        space = RabbitAdapter(info, timeout=self._timeout)
        try:
            await space.open()
            await space._shared_firehose()
        except BaseException:
            await space.close()
            with contextlib.suppress(Exception):
                await self._management.delete_vhost(name)
            raise
        return space

    async def delete_vhost(self, name: str) -> None:
        """Delete vhost ``name`` with everything declared in it; a missing one is fine."""
        await self._management.delete_vhost(name)

    async def clear_vhost(self) -> None:
        """Delete what was declared on this adapter's vhost but the harness's own, for reuse.

        Every queue and exchange goes but the built-in ones, the server-named
        (exclusive) queues of the harness's taps and its dead-letter exchanges
        (a binding tap's queue loses its binding with the service's exchange);
        then the taps catch up, so nothing of before reaches a later run.
        """
        async with self._administering():
            queues, exchanges = await asyncio.gather(
                self._management.queue_names(), self._management.exchange_names()
            )
            own = {"", DEAD_LETTER_EXCHANGE, _DEAD_LETTER_ROUTER}
            async with (
                self._translated(f"clearing vhost {self._vhost!r}"),
                self._scratch_channel() as channel,
            ):
                for queue in queues:
                    if not queue.startswith("amq."):
                        await channel.queue_delete(queue)
                for exchange in exchanges:
                    if exchange not in own and not exchange.startswith("amq."):
                        await channel.exchange_delete(exchange)
        firehose = self._firehose
        drains = [queue.drain() for queue in self._binding_queues]
        if firehose is not None:
            drains.append(firehose.drain())
        await asyncio.gather(*drains)

    async def list_vhosts(self, prefix: str = "") -> list[str]:
        """The broker's virtual hosts whose name starts with ``prefix``."""
        return sorted(v for v in await self._management.vhost_names() if v.startswith(prefix))

    def tap(self, destination: str, on_record: TapCallback) -> AbstractAsyncContextManager[None]:
        """Observe ``destination`` through the firehose without consuming it.

        Records: ``landed`` when a publish is routed to the queue (or a message is
        dead-lettered into it), ``delivered`` when the broker hands a message from
        it to a consumer (``redelivered`` from the trace). An exception raised by
        ``on_record`` stops the tap's callbacks and is re-raised on exit.
        """
        _validate_queue_name(destination, what="destination", limit=_MAX_TRACEABLE_BYTES)
        return _FirehoseTap(self, destination, on_record)

    async def _shared_firehose(self) -> _Firehose:
        """The firehose consumer every tap shares, started on first use (or after a loss)."""
        firehose = self._firehose
        if firehose is not None and firehose.usable and not self._restarting:
            return firehose  # the common case: no task, no lock (a run starts three taps)
        return await self._start_firehose()

    @_finish_before_cancel
    async def _start_firehose(self) -> _Firehose:
        if self._restarting:
            raise BrokerUnavailable(
                f"RabbitMQ at {self._where} is restarting (a broker restart fault): start taps"
                " once it is back and the adapter has reconnected"
            )
        async with self._firehose_lock:
            firehose = self._firehose
            if firehose is None or not firehose.usable:
                self._firehose = None
                if firehose is not None:
                    await firehose.close()
                firehose = _Firehose(self)
                try:
                    await firehose.start()
                except BaseException:
                    await firehose.close()
                    raise
                self._firehose = firehose
            return firehose


def _declared_arguments(spec: DestinationSpec) -> dict[str, Any] | None:
    """The arguments queue ``spec`` is declared with (None: a plain classic queue)."""
    arguments: dict[str, Any] = dict(spec.arguments)
    if spec.queue_type not in (None, "classic"):
        # Classic is the default: a service declaring its queue without the argument
        # then declares an equivalent queue.
        arguments["x-queue-type"] = spec.queue_type
    return arguments or None


def _reply(exc: aiormq.exceptions.AMQPError) -> str:
    # aiormq puts (reply_code, reply_text) in args; the text names the cause.
    texts = [str(arg) for arg in exc.args if isinstance(arg, str)]
    return texts[-1] if texts else repr(exc)
