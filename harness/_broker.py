"""The interface the core owns and every broker module implements.

The core never imports a driver: ``brokers.kafka`` and ``brokers.rabbitmq``
implement :class:`BrokerAdapter` and translate their drivers' errors into
:mod:`harness._errors` at this boundary.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import BrokerKind, Message
from message_flow_harness._redact import redact_options, redact_url

ProviderName = Literal["url", "local", "docker"]

#: How the harness's own producer publishes a flow's inputs (``Flow(publishing=...)``).
Publishing = Literal["plain", "idempotent", "transactional"]
PUBLISHING: tuple[Publishing, ...] = ("plain", "idempotent", "transactional")


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerInfo:
    """How to reach one running broker.

    ``url`` is what clients use: Kafka bootstrap servers (``host:port``) or an
    AMQP URL. ``extra`` carries provider details worth printing (management
    URL, fault-proxy listeners, process id, data directory).

    ``client_options`` are keyword arguments every Kafka client for this
    broker gets (aiokafka's ``security_protocol``, ``sasl_mechanism``,
    ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_context``), from
    ``brokers.kafka._settings.kafka_client_options``; the services under test get them as
    ``Endpoints.kafka_options``. An AMQP URL carries its TLS settings itself
    (``amqps://...?cafile=...``). The repr masks passwords.
    """

    kind: BrokerKind
    url: str
    provider: ProviderName
    extra: Mapping[str, str] = field(default_factory=dict)
    client_options: Mapping[str, object] = field(default_factory=dict)

    def __repr__(self) -> str:
        options = f", client_options={redact_options(self.client_options)!r}"
        return (
            f"BrokerInfo(kind={self.kind!r}, url={redact_url(self.url)!r},"
            f" provider={self.provider!r}, extra={dict(self.extra)!r}"
            + (options if self.client_options else "")
            + ")"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class DestinationSpec:
    """One isolated destination to create: a Kafka topic or a RabbitMQ queue.

    ``dead_letter`` names the destination that rejected messages go to; a
    RabbitMQ adapter wires it with a dead-letter exchange, Kafka has no
    broker-side wiring (the service publishes there itself).

    ``config`` are a Kafka topic's configs. ``queue_type`` and ``arguments``
    are what a RabbitMQ queue is declared
    with (``"quorum"``, ``{"x-delivery-limit": 5}``); None and none: the
    broker's default, a classic queue. The flow's driver has checked them
    (:meth:`~harness._drivers.BrokerDriver.check_queues`).
    """

    name: str
    partitions: int = 1
    dead_letter: str | None = None
    queue_type: str | None = None
    arguments: Mapping[str, object] = field(default_factory=dict)
    #: Kafka topic configs (``{"retention.ms": "60000"}``), as a service's own topic has them.
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishReceipt:
    """Where the broker put a published message (Kafka partition/offset; None for RabbitMQ)."""

    destination: str
    partition: int | None = None
    offset: int | None = None


TapEvent = Literal["landed", "delivered"]


@dataclass(frozen=True, kw_only=True, slots=True)
class TapRecord:
    """What a broker-side tap saw, with the broker's own metadata.

    ``landed``: the message was stored on ``destination`` (Kafka: appended to a
    partition; RabbitMQ: routed to the queue). ``delivered``: the broker handed
    it to a consumer of ``destination`` (RabbitMQ firehose only).
    ``seen_ns`` is the tap's ``perf_counter_ns`` on receipt. ``aborted``: the
    record belongs to a Kafka transaction that aborted, so no ``read_committed``
    consumer sees it (the history records it as ``Kind.ABORTED``).
    """

    event: TapEvent
    destination: str
    message: Message
    seen_ns: int
    partition: int | None = None
    offset: int | None = None
    broker_timestamp_ms: int | None = None
    redelivered: bool | None = None
    exchange: str | None = None
    routing_key: str | None = None
    aborted: bool = False


TapCallback = Callable[[TapRecord], None]


def check_producer(producer: object) -> int:
    """``producer`` for :meth:`BrokerAdapter.publish_many`, or InvalidArgument with the fix."""
    if isinstance(producer, bool) or not isinstance(producer, int) or producer < 0:
        raise InvalidArgument(f"producer={producer!r} is invalid: give a number >= 0")
    return producer


def check_publishing(publishing: object) -> Publishing:
    """``publishing`` as given, if it is one of :data:`PUBLISHING`, else InvalidArgument."""
    for mode in PUBLISHING:
        if publishing == mode and isinstance(publishing, str):
            return mode
    raise InvalidArgument(
        f"publishing={publishing!r} is invalid: use one of {', '.join(map(repr, PUBLISHING))}"
    )


class BrokerAdapter(abc.ABC):
    """One connection's worth of administration and traffic on a broker.

    Adapters are async context managers: ``async with connect(info) as adapter``.
    Every method raises :class:`~harness.BrokerUnavailable` when the broker is
    unreachable and :class:`~harness.DestinationError` when it refuses.
    """

    kind: BrokerKind
    info: BrokerInfo

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (bounded); raise BrokerUnavailable naming the URL and the fix."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection and tap; safe to call twice."""

    @abc.abstractmethod
    async def create(self, spec: DestinationSpec) -> None:
        """Create a destination and wait until it is usable."""

    @abc.abstractmethod
    async def delete(self, name: str) -> None:
        """Delete a destination; deleting one that does not exist is not an error."""

    @abc.abstractmethod
    async def list_destinations(self, prefix: str = "") -> list[str]:
        """Names of existing destinations starting with ``prefix``."""

    @abc.abstractmethod
    async def publish(
        self, destination: str, message: Message, *, partition: int | None = None
    ) -> PublishReceipt:
        """Publish one message and wait until the broker has it."""

    @abc.abstractmethod
    async def publish_many(
        self,
        destination: str,
        messages: Sequence[Message],
        *,
        producer: int = 0,
        publishing: Publishing = "plain",
    ) -> list[PublishReceipt]:
        """Publish ``messages`` in order, all in flight at once; wait until the broker has each.

        ``producer`` picks one of the adapter's publishing connections (a
        Kafka producer, a RabbitMQ channel), created on first use: calls on
        different producers run concurrently and the broker may interleave
        them, while one producer's messages keep their order. ``publishing``
        is how (:data:`PUBLISHING`; its driver's ``publishing_modes`` say which
        a broker offers): ``"transactional"`` publishes the call's messages in
        one transaction.
        """

    @abc.abstractmethod
    def tap(self, destination: str, on_record: TapCallback) -> AbstractAsyncContextManager[None]:
        """Observe everything that lands on ``destination`` without consuming it.

        Entering returns once the tap is live (a message published after that
        is seen); ``on_record`` is called for each record, in broker order per
        partition or queue, and must not block.
        """

    async def create_all(self, specs: Sequence[DestinationSpec]) -> None:
        """Create several destinations, in order; brokers that can do it in one request do."""
        for spec in specs:
            await self.create(spec)

    async def delete_all(self, names: Sequence[str]) -> None:
        """Delete several destinations (missing ones are fine); batched where the broker can."""
        for name in names:
            await self.delete(name)

    async def forget_group(self, group_id: str) -> None:
        """Delete a consumer group the service used (Kafka); nothing to do elsewhere."""
        return None

    async def list_groups(self, prefix: str = "") -> list[str]:
        """Consumer groups whose id starts with ``prefix`` (Kafka; none elsewhere)."""
        return []

    async def group_members(self, group_id: str) -> frozenset[str]:
        """The member ids of consumer group ``group_id`` now (Kafka; none elsewhere)."""
        return frozenset()

    async def end_sessions(self, group_id: str, members: frozenset[str]) -> None:
        """End ``members``' sessions in ``group_id`` now, as timing out would (Kafka)."""
        return None

    async def unready(
        self, destination: str, *, group_id: str | None, partitions: int
    ) -> str | None:
        """What the service's consumers of ``destination`` still lack, or None once they consume.

        Kafka: ``group_id`` is Stable and its members hold every one of
        ``partitions``; RabbitMQ: the queue has a consumer. A broker with no
        way to tell answers None (ready).
        """
        return None

    async def commit_start(self, destination: str, *, group_id: str, partitions: int) -> None:
        """Commit the start of ``destination`` for ``group_id`` on every partition (Kafka).

        What a deployed service's group has: a committed position, so its
        ``auto_offset_reset`` does not apply. Nothing to do elsewhere.
        """
        return None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
