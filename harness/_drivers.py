"""One driver per broker kind, found by name: everything kind-specific sits behind it.

The core asks :func:`driver` for the kind a flow names and never compares a
kind string itself. A driver module (``brokers.<kind>``) exposes ``driver``,
an instance of :class:`BrokerDriver`, and imports no client library until a
method needs it, so looking a driver up costs nothing. A new broker is one
new folder under ``brokers/`` and one line in :data:`DRIVER_MODULES`.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from message_flow_harness._errors import InvalidArgument

if TYPE_CHECKING:
    from message_flow_harness._broker import BrokerAdapter, BrokerInfo
    from message_flow_harness._message import Endpoints, Message
    from message_flow_harness._topology import Topology
    from message_flow_harness.brokers._local import LocalRecipe

#: The registry: broker kind -> the module whose ``driver`` serves it.
DRIVER_MODULES: Mapping[str, str] = {
    "kafka": "message_flow_harness.brokers.kafka",
    "rabbitmq": "message_flow_harness.brokers.rabbitmq",
}
BROKER_KINDS: tuple[str, ...] = tuple(DRIVER_MODULES)

#: (listen port, upstream host, upstream port) of one fault proxy.
ProxyAddress = tuple[int, str, int]


class BrokerRestart:
    """What a broker kind needs around a restart of a broker the harness started.

    The core stops and starts the broker; the driver says whether the running
    services must be held off it until :meth:`after` returns (a tap that lives
    on the broker must be back first, or it misses what they do meanwhile).
    """

    #: Hold the services' connections (their proxies) from before the stop until after.
    holds_services: ClassVar[bool] = False

    async def before(self) -> None:
        """Prepare the harness's own clients for the broker going away."""

    async def after(self) -> list[str]:
        """Reconnect the harness's own clients; what they missed, one line each."""
        return []


class BrokerDriver(abc.ABC):
    """Everything the core needs to know about one kind of broker."""

    #: The name flows use (``Flow(broker=...)``) and the registry's key.
    kind: ClassVar[str]
    #: The broker's name in sentences ("Kafka").
    title: ClassVar[str]
    #: The environment variable and the pytest/CLI option naming an existing broker.
    url_env: ClassVar[str]
    url_option: ClassVar[str]
    #: What a URL of this kind looks like, for help texts and error messages.
    url_example: ClassVar[str]
    url_metavar: ClassVar[str] = "URL"
    #: The option for driver settings (security) of a broker given by URL, if any, and its help.
    settings_option: ClassVar[str | None] = None
    settings_help: ClassVar[str] = ""

    #: The broker itself reports deliveries to consumers (RabbitMQ's firehose):
    #: a run then taps its input for them too, seeing what no client probe sees.
    taps_deliveries: ClassVar[bool] = False

    #: What its client probes record that an After step can wait for (``TRIGGER_EVENTS``).
    trigger_events: ClassVar[tuple[str, ...]] = ("delivered", "sent", "output")

    #: How the harness's own producer can publish inputs here (``Flow(publishing=...)``),
    #: and what to do instead of a mode it cannot.
    publishing_modes: ClassVar[tuple[str, ...]] = ("plain",)
    publishing_fix: ClassVar[str] = "drop publishing"

    #: Its consumers hold sessions in groups, which a crashed member keeps until they
    #: time out (Kafka): ``Flow(crash_keeps_session=...)`` means something here.
    group_sessions: ClassVar[bool] = False

    #: Why a consumer with no committed position skips inputs, for a ``Flow(first_deploy=True)``
    #: run's verdict; None where consumers have no committed position (first_deploy is moot).
    first_deploy_note: ClassVar[str | None] = None

    # --- flows and endpoints ------------------------------------------------

    def check_flow(self, *, partitions: int) -> None:
        """Raise InvalidArgument if a flow asks for what this broker cannot do."""
        return None

    def check_publishing(self, publishing: str) -> None:
        """Raise InvalidArgument if this broker's adapter cannot publish as ``publishing`` asks."""
        if publishing not in self.publishing_modes:
            raise InvalidArgument(
                f"publishing={publishing!r} is invalid for {self.title}: it publishes"
                f" {' or '.join(map(repr, self.publishing_modes))} only ({self.publishing_fix})"
            )

    def check_topology(self, topology: Topology) -> None:
        """Raise InvalidArgument if ``topology`` names what this broker cannot isolate per run."""
        raise InvalidArgument(
            f"topology=... is invalid for {self.title}: it cannot isolate a service's own"
            " destinations per run yet (drop topology)"
        )

    def check_queues(
        self, *, queue_type: object, queue_arguments: Mapping[str, object]
    ) -> Mapping[str, object]:
        """The input queue's arguments as the broker takes them, or InvalidArgument with the fix.

        By default a broker has no queue types: a flow naming one is refused.
        """
        if queue_type is not None or queue_arguments:
            named = "queue_type" if queue_type is not None else "queue_arguments"
            raise InvalidArgument(
                f"{named} is invalid for {self.title}: its destinations are not queues with"
                f" types or arguments; drop {named} (it is for RabbitMQ flows)"
            )
        return {}

    # --- what the broker says about a message ---------------------------------

    def deliveries_said(self, message: Message, *, queue: str | None) -> int | None:
        """How many times the broker says it delivered ``message`` from ``queue``, or None.

        Read from what the broker adds to a delivered or dead-lettered message
        (RabbitMQ: ``x-delivery-count``, ``x-death``); None where it says nothing.
        """
        return None

    def dead_letter_reason(self, message: Message) -> str | None:
        """Why the broker dead-lettered ``message`` (RabbitMQ: ``x-death``), or None."""
        return None

    @abc.abstractmethod
    def address(self, info: BrokerInfo, *, prefix: str) -> dict[str, Any]:
        """The Endpoints fields that tell a service of this kind where to connect."""

    @abc.abstractmethod
    def check_endpoints(self, endpoints: Endpoints) -> None:
        """Raise InvalidArgument if ``endpoints`` lacks what a service of this kind needs."""

    @property
    def url_help(self) -> str:
        """Help for :attr:`url_option`, in the CLI and in pytest."""
        return (
            f"use this {self.title} broker (e.g. {self.url_example}) instead of starting one"
            f" (env {self.url_env})"
        )

    # --- readiness ----------------------------------------------------------

    def readiness_fix(self, endpoints: Endpoints) -> str:
        """What to check or change when a service never became ready to consume."""
        return f"does the service consume {endpoints.input!r} (endpoints.input)?"

    def consumed_nothing_causes(self, endpoints: Endpoints) -> str:
        """The likely causes of a run in which the service consumed none of its inputs."""
        return f"it may not consume {endpoints.input!r} (endpoints.input)"

    # --- getting a broker ---------------------------------------------------

    def shell_settings(self, info: BrokerInfo) -> dict[str, str]:
        """The environment variables that point the harness at ``info`` from a shell."""
        return {self.url_env: info.url}

    @abc.abstractmethod
    def info_from_url(self, url: str, *, settings: Mapping[str, str] | None = None) -> BrokerInfo:
        """Describe an existing broker, rejecting a URL or settings of the wrong shape."""

    def parse_settings(self, items: Sequence[str]) -> dict[str, str]:
        """``NAME=VALUE`` items of :attr:`settings_option` as settings."""
        if items:
            raise InvalidArgument(f"{self.title} takes no settings option: drop {items[0]!r}")
        return {}

    @abc.abstractmethod
    def recipe(self) -> LocalRecipe:
        """How to start a broker of this kind as a local process."""

    def local_slot(self) -> str:
        """The name under which the local broker :meth:`recipe` starts is kept and shared.

        Recipes that start different brokers (another installation, another
        version) need different slots, or one would be reused for the other.
        """
        return self.kind

    @abc.abstractmethod
    def start_container(self) -> tuple[BrokerInfo, Callable[[], None]]:
        """A broker in a container (testcontainers) and the function that stops it."""

    # --- talking to it ------------------------------------------------------

    @abc.abstractmethod
    def adapter(self, info: BrokerInfo, *, timeout: float = 10.0) -> BrokerAdapter:
        """An unopened adapter: ``async with driver.adapter(info) as a``."""

    # --- the service's own clients -------------------------------------------

    #: The module that probes the client library: its ``install()``, ``uninstall()``,
    #: ``close_leftover(client, *, abort) -> bool`` and ``group_member(client) -> str |
    #: None`` serve the four methods below.
    probes_module: ClassVar[str]

    def install_client_probes(self) -> None:
        """Patch the client library so runs record what in-process services do (idempotent)."""
        importlib.import_module(self.probes_module).install()

    def uninstall_client_probes(self) -> None:
        """Undo :meth:`install_client_probes`."""
        importlib.import_module(self.probes_module).uninstall()

    async def close_leftover(self, client: object, *, abort: bool = False) -> bool:
        """Close one client a stopped service left open; whether it was open.

        ``abort``: the service crashed, so nothing it buffered may go out (no flush,
        no final commit or goodbye), before its exit runs.
        """
        module = importlib.import_module(self.probes_module)
        closed: bool = await module.close_leftover(client, abort=abort)
        return closed

    def group_members_of(self, clients: Sequence[object]) -> set[str]:
        """The consumer-group member ids ``clients`` hold (none where there are no groups)."""
        member_of = importlib.import_module(self.probes_module).group_member
        return {member for client in clients if (member := member_of(client)) is not None}

    @abc.abstractmethod
    def detach_randomness(self) -> None:
        """Keep the client library off the global ``random`` generator (idempotent)."""

    # --- faults -------------------------------------------------------------

    @abc.abstractmethod
    def proxy_addresses(self, info: BrokerInfo) -> list[ProxyAddress]:
        """The fault proxies ``info`` allows, one per service instance at most."""

    @abc.abstractmethod
    def through_proxy(self, endpoints: Endpoints, info: BrokerInfo, port: int) -> Endpoints:
        """``endpoints`` with the broker's address replaced by the proxy on ``port``."""

    def broker_restart(self, info: BrokerInfo) -> BrokerRestart:
        """What a restart of ``info`` needs around it (by default: nothing)."""
        return BrokerRestart()


def check_kind(kind: object) -> str:
    """``kind`` if a driver serves it, else InvalidArgument listing the kinds."""
    if isinstance(kind, str) and kind in DRIVER_MODULES:
        return kind
    raise InvalidArgument(f"broker={kind!r} is invalid: use one of {', '.join(BROKER_KINDS)}")


def driver(kind: str) -> BrokerDriver:
    """The driver of ``kind`` (its module is imported on first use, like anyio's backends)."""
    module = importlib.import_module(DRIVER_MODULES[check_kind(kind)])
    found: BrokerDriver = module.driver
    return found


def drivers() -> list[BrokerDriver]:
    """Every registered driver, in registry order."""
    return [driver(kind) for kind in BROKER_KINDS]
