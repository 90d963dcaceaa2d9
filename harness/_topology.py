"""``Topology``: a RabbitMQ service that declares its own exchanges and queues, run in a vhost.

By default the harness creates a run's three queues under unique names and
hands them to the service. A service that declares its own topology (a topic
exchange, a queue with ``x-dead-letter-exchange`` arguments, TTL retry
queues) cannot take those names: redeclaring a queue with other arguments
fails, and what it declares would stay on the broker. Under
``Flow(topology=Topology(...))`` each run gets a virtual host of its own
instead (created, with tracing on, before the run and deleted with everything
in it after), the service declares what it likes under its own fixed names,
and the topology says where the harness publishes and what it observes.

The broker adapter does the work (see ``brokers/rabbitmq/_vhosts.py``); this
module holds the description and the protocols the core calls it through.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from message_flow_harness._errors import InvalidArgument

if TYPE_CHECKING:
    from message_flow_harness._broker import BrokerAdapter, PublishReceipt, TapCallback
    from message_flow_harness._message import Message

#: Where messages are observed: a queue's name, or ``(exchange, binding key)``.
Route = str | tuple[str, str]


@dataclass(frozen=True, kw_only=True)
class Topology:
    """Where a service that declares its own RabbitMQ topology is fed and observed.

    ``input`` is the queue the service consumes (the run waits for it to
    have a consumer before publishing). Inputs are published to it through
    the default exchange, or with ``publish=(exchange, routing_key)`` to the
    service's exchange. ``output`` and ``dead_letter`` are each a queue name
    (the broker's trace shows what is published to it) or ``(exchange,
    binding_key)``: the harness binds a queue of its own to that exchange
    with that key, once the service consumes (it declares the exchange when
    it starts), and reads it. Observe dead letters through the service's
    dead-letter exchange: messages the broker dead-letters into a queue are
    not traced. ``Endpoints.input``, ``output`` and ``dead_letter`` are the
    names given here (for a route, the exchange's name).
    """

    #: Flows with a topology run on this broker kind only.
    broker: ClassVar[str] = "rabbitmq"

    input: str
    output: Route
    dead_letter: Route
    publish: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.input, str) or not self.input:
            raise InvalidArgument(
                f"Topology(input={self.input!r}) is invalid: name the queue the service consumes"
            )
        for role in ("output", "dead_letter"):
            _check_route(role, getattr(self, role))
        if self.publish is not None and not _is_pair(self.publish):
            raise InvalidArgument(
                f"Topology(publish={self.publish!r}) is invalid: pass (exchange, routing_key),"
                " e.g. ('payments', 'payment.requested'), or None to publish to the input queue"
            )

    def names(self) -> tuple[str, str, str]:
        """What ``Endpoints.input``, ``output`` and ``dead_letter`` say under this topology."""
        return self.input, route_name(self.output), route_name(self.dead_letter)


def route_name(route: Route) -> str:
    return route if isinstance(route, str) else route[0]


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and bool(value[0])
        and isinstance(value[1], str)
    )


def _check_route(role: str, route: object) -> None:
    if (isinstance(route, str) and route) or _is_pair(route):
        return
    raise InvalidArgument(
        f"Topology({role}={route!r}) is invalid: pass a queue name, or (exchange, binding_key)"
        " such as ('payments', 'payment.completed')"
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
    ) -> AbstractAsyncContextManager[None]: ...


def vhosts_of(adapter: BrokerAdapter) -> VhostAdapter:
    if not isinstance(adapter, VhostAdapter):
        raise InvalidArgument(
            f"Flow(topology=...) needs a broker with virtual hosts: {type(adapter).__name__}"
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
