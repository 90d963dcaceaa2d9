"""``Topology``: a service's own destinations under its own names, isolated per run.

By default the harness creates a run's three destinations (input, output,
dead letter) under unique names and hands them to the service. A service as
the field writes it has fixed names in its settings, several inputs and
outputs, and destinations shaped its own way. Under
``Flow(topology=Topology(...))`` the flow names them, and each run isolates
them the way its broker can:

- RabbitMQ: the run gets a virtual host of its own (created, with tracing
  on, before the run and deleted with everything in it after); the service
  declares what it likes under its own fixed names (a topic exchange, queues
  with ``x-dead-letter-exchange`` arguments, TTL retry queues), and the
  topology says where the harness publishes and what it observes.
- Kafka: each topic the topology names (:class:`Topic`: partitions and topic
  configs of its own) is created under a name unique to the run
  (``h-<run>-orders``) before the service starts and deleted after;
  ``Endpoints.names`` maps the service's name to the run's, and
  ``Flow(env={"ORDERS_TOPIC": "{names[orders]}"})`` hands it over.

Either way ``Endpoints.names`` maps each name the topology gives to the
run's, messages say which input they go to (``Message(to="payments")``), and
each output is recorded with the output it came out of. The broker adapters
do the work (``brokers/rabbitmq/_vhosts.py``, Kafka's ``create_all``); this
module holds the description and the protocols the core calls them through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from message_flow_harness._errors import InvalidArgument

if TYPE_CHECKING:
    from types import TracebackType

    from message_flow_harness._broker import BrokerAdapter, PublishReceipt, TapCallback
    from message_flow_harness._message import Message

#: Where messages are observed: a queue's or topic's name, or ``(exchange, binding key)``.
Route = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic the service names, with its own ``partitions`` and topic ``config``.

    ``Topic("orders", partitions=3, config={"cleanup.policy": "compact"})``;
    a plain name in a :class:`Topology` is ``Topic(name)``: one partition,
    the broker's defaults. Each run creates it under a name of its own.
    """

    name: str
    partitions: int = 1
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgument(
                f"Topic(name={self.name!r}) is invalid: give the topic's name as the service"
                " knows it, e.g. Topic('orders')"
            )
        if (
            isinstance(self.partitions, bool)
            or not isinstance(self.partitions, int)
            or self.partitions < 1
        ):
            raise InvalidArgument(
                f"Topic({self.name!r}, partitions={self.partitions!r}) is invalid: a topic"
                " needs at least one partition"
            )
        if not isinstance(self.config, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.config.items()
        ):
            raise InvalidArgument(
                f"Topic({self.name!r}, config={self.config!r}) is invalid: pass topic configs"
                ' as str to str, e.g. {"retention.ms": "60000"}'
            )


#: One destination a topology names: a name, a Kafka :class:`Topic`, or an exchange route.
Named = str | Topic | tuple[str, str]


@dataclass(frozen=True, kw_only=True)
class Topology:
    """A service's own destinations: which it consumes, where it answers, where it dead-letters.

    ``input`` is what the service consumes: one name, or several
    (``["orders", "payments"]``); a :class:`Message` says which it goes to
    with ``to=`` (by default, the first). ``output`` is one or several
    destinations it publishes results to (several in a list: a tuple of two
    names is an exchange route), each output recorded with the one
    it came out of (so one input answered on two outputs is fan-out, not a
    duplicate). ``dead_letter`` is where it sends what it gives up on.

    On Kafka each is a topic name or a :class:`Topic` with partitions and
    configs; each run creates them under names of its own
    (``Endpoints.names`` maps the service's names to the run's).

    On RabbitMQ the run has a vhost of its own and the names are the
    service's. The run waits for each input queue to have a consumer before
    publishing. Inputs are published to their queue through the default
    exchange, or with ``publish=(exchange, routing_key)`` (one input) to the
    service's exchange. An output or dead letter is a queue name (the
    broker's trace shows what is published to it) or ``(exchange,
    binding_key)``: the harness binds a queue of its own to that exchange with
    that key, once the service consumes (it declares the exchange when it
    starts), and reads it. Observe dead letters through the service's
    dead-letter exchange: messages the broker dead-letters into a queue are
    not traced.

    ``Endpoints.input``, ``output`` and ``dead_letter`` are the run's names of
    the first input, the first output and the dead letter.
    """

    input: Named | Sequence[Named]
    output: Named | Sequence[Named]
    dead_letter: Named
    publish: tuple[str, str] | None = None
    #: ``input`` and ``output`` as tuples, each entry checked.
    inputs: tuple[Named, ...] = field(init=False, repr=False)
    outputs: tuple[Named, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inputs = _several("input", self.input)
        outputs = _several("output", self.output)
        for entry in inputs:
            if isinstance(entry, tuple):
                raise InvalidArgument(
                    f"Topology(input={self.input!r}) is invalid: an input is the queue or topic"
                    " the service consumes (to publish through an exchange, add"
                    " publish=(exchange, routing_key))"
                )
        _check_named("dead_letter", self.dead_letter)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "outputs", outputs)
        names = [label_of(entry) for entry in (*inputs, *outputs)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InvalidArgument(
                f"Topology names {', '.join(map(repr, repeated))} more than once: each input"
                " and output is a destination of its own (list each name once)"
            )
        if self.publish is not None:
            if not _is_pair(self.publish):
                raise InvalidArgument(
                    f"Topology(publish={self.publish!r}) is invalid: pass (exchange,"
                    " routing_key), e.g. ('payments', 'payment.requested'), or None to"
                    " publish to the input queue"
                )
            if len(inputs) > 1:
                raise InvalidArgument(
                    f"Topology(publish={self.publish!r}) is invalid with several inputs: each"
                    " input queue gets its messages through the default exchange (drop"
                    " publish, or give one input)"
                )

    def names(self) -> tuple[str, str, str]:
        """The service's names of its first input, its first output and its dead letter."""
        return name_of(self.inputs[0]), name_of(self.outputs[0]), name_of(self.dead_letter)

    def input_names(self) -> tuple[str, ...]:
        return tuple(name_of(entry) for entry in self.inputs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(name_of(entry) for entry in self.outputs)

    def topics(self) -> list[Topic]:
        """Each destination as a :class:`Topic` (a name alone: one partition), dead letter first."""
        return [
            entry if isinstance(entry, Topic) else Topic(name_of(entry))
            for entry in (self.dead_letter, *self.outputs, *self.inputs)
        ]

    def partitions_of(self, name: str) -> int:
        """How many partitions the topology gives destination ``name`` (1 unless a Topic says)."""
        for topic in self.topics():
            if topic.name == name:
                return topic.partitions
        return 1

    def input_for(self, message: Message) -> str:
        """The service's name of the input ``message`` goes to; InvalidArgument naming the fix."""
        names = self.input_names()
        if message.to is None:
            return names[0]
        if message.to not in names:
            raise InvalidArgument(
                f"Message(to={message.to!r}) names no input of this topology: its inputs are"
                f" {', '.join(map(repr, names))}"
            )
        return message.to


def label_of(entry: Named) -> str:
    """How the history names an output: its name, or ``exchange:binding_key`` for a route."""
    return ":".join(entry) if isinstance(entry, tuple) else name_of(entry)


def name_of(entry: Named) -> str:
    """A destination's name (for an exchange route, the exchange's)."""
    if isinstance(entry, Topic):
        return entry.name
    return entry if isinstance(entry, str) else entry[0]


def _several(role: str, value: object) -> tuple[Named, ...]:
    """One entry, or several in a list (inputs: a list or a tuple). A tuple of two names is an
    exchange route where one may be (an output): several outputs are ``["shipments", "invoices"]``.
    """
    several = list | tuple if role == "input" else list
    entries = tuple(value) if isinstance(value, several) and value else (value,)
    for entry in entries:
        _check_named(role, entry)
    return entries


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and bool(value[0])
        and isinstance(value[1], str)
    )


def _check_named(role: str, entry: object) -> None:
    if (isinstance(entry, str) and entry) or isinstance(entry, Topic) or _is_pair(entry):
        return
    raise InvalidArgument(
        f"Topology({role}={entry!r}) is invalid: pass a queue or topic name, a Topic('name',"
        " partitions=..., config=...) (Kafka), or (exchange, binding_key) such as"
        " ('payments', 'payment.completed') (RabbitMQ); several in a list"
    )


@runtime_checkable
class VhostAdapter(Protocol):
    """An adapter that can give a run a virtual host of its own (RabbitMQ)."""

    async def open_vhost(self, name: str) -> BrokerAdapter:
        """Create vhost ``name`` (permissions, tracing) and an adapter opened on it."""
        ...

    async def delete_vhost(self, name: str) -> None:
        """Delete vhost ``name`` and everything in it; a missing one is not an error."""
        ...


@runtime_checkable
class ReusableVhost(Protocol):
    """An adapter on a run's vhost that can empty it for another run (a campaign reuses them)."""

    async def clear_vhost(self) -> None:
        """Delete everything the run's service declared in the vhost."""
        ...


@runtime_checkable
class RoutedAdapter(Protocol):
    """An adapter that publishes to an exchange and taps an exchange through a binding."""

    async def publish_routed(
        self, exchange: str, routing_key: str, messages: Sequence[Message], *, producer: int = 0
    ) -> list[PublishReceipt]: ...

    def tap_binding(
        self, exchange: str, binding_key: str, on_record: TapCallback
    ) -> BindingTap: ...


class BindingTap(Protocol):
    """A tap on what an exchange routes: entered before the exchange exists, bound once it does.

    Entering makes what needs no exchange (a queue of the tap's own, read as it
    fills) while the service starts; :meth:`bind` is the one round trip left
    once the service has declared its exchange.
    """

    async def __aenter__(self) -> BindingTap: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def bind(self) -> None:
        """Bind the tap's queue to the exchange (which the service has declared by now)."""
        ...


def vhosts_of(adapter: BrokerAdapter) -> VhostAdapter:
    if not isinstance(adapter, VhostAdapter):
        raise InvalidArgument(
            f"this topology needs a broker with virtual hosts: {type(adapter).__name__}"
            " has none (use broker='rabbitmq')"
        )
    return adapter


def routed(adapter: BrokerAdapter) -> RoutedAdapter:
    if not isinstance(adapter, RoutedAdapter):
        raise InvalidArgument(
            f"Flow(topology=...) routes through exchanges: {type(adapter).__name__} has none"
            " (use broker='rabbitmq')"
        )
    return adapter
