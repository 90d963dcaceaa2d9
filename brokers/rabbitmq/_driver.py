"""The RabbitMQ driver: what the core asks of a RabbitMQ broker, each answer loaded when asked."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from message_flow_harness._broker import BrokerInfo
from message_flow_harness._drivers import BrokerDriver, BrokerRestart, ProxyAddress
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import Endpoints, Message
from message_flow_harness._redact import redact_url
from message_flow_harness._topology import Topic, Topology
from message_flow_harness.brokers._local import free_port
from message_flow_harness.brokers.rabbitmq import _queue_types

if TYPE_CHECKING:
    from message_flow_harness._broker import BrokerAdapter
    from message_flow_harness.brokers._local import LocalRecipe
    from message_flow_harness.brokers.rabbitmq._adapter import RabbitAdapter

URL_ENV = "HARNESS_AMQP_URL"
URL_OPTION = "--amqp-url"
#: Query options of an amqps:// URL that name files (aiormq reads them).
_AMQP_FILE_OPTIONS = ("cafile", "capath", "certfile", "keyfile")
_AMQP_TLS_OPTIONS = (*_AMQP_FILE_OPTIONS, "cadata", "no_verify_ssl")
_HOST_AND_PORT = re.compile(r"^amqps?://(?:[^@/]*@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?")
#: A RabbitMQ proxy can listen anywhere: this many per run is plenty for its instances.
_PROXIES = 8


class _RabbitRestart(BrokerRestart):
    """The firehose queue the taps read dies with the broker.

    So the services are held off the broker until the harness's adapters have
    reconnected, resumed the firehose and reported what it missed.
    """

    holds_services: ClassVar[bool] = True

    def __init__(self, adapters: list[RabbitAdapter]) -> None:
        self._adapters = adapters

    async def before(self) -> None:
        for adapter in self._adapters:
            await adapter.prepare_for_restart()

    async def after(self) -> list[str]:
        return [str(found) for adapter in self._adapters for found in await adapter.reconnect()]


class RabbitDriver(BrokerDriver):
    kind = "rabbitmq"
    title = "RabbitMQ"
    trigger_events = ("delivered", "acked", "sent", "output")
    url_env = URL_ENV
    probes_module = "message_flow_harness.brokers.rabbitmq._probes"
    url_option = URL_OPTION
    url_example = "amqp://guest:guest@127.0.0.1:5672/"
    taps_deliveries = True
    # Idempotent and transactional publishing are Kafka producer modes; the harness already
    # waits for RabbitMQ's publisher confirm of every input.
    publishing_fix = (
        "the harness publishes every input with publisher confirms already; idempotent and"
        " transactional producers are Kafka's: drop publishing"
    )

    def readiness_fix(self, endpoints: Endpoints) -> str:
        return (
            f"does the service basic_consume queue {endpoints.input!r} (endpoints.input)?"
            " A service that consumes elsewhere needs Flow(ready=...) (an async check of your"
            " own, or False not to wait)"
        )

    def check_flow(self, *, partitions: int) -> None:
        if partitions != 1:
            raise InvalidArgument(
                f"partitions={partitions} is invalid for RabbitMQ: queues have no partitions"
            )

    def check_topology(self, topology: Topology) -> None:
        for entry in (*topology.inputs, *topology.outputs, topology.dead_letter):
            if isinstance(entry, Topic):
                raise InvalidArgument(
                    f"Topology has {entry!r}, a Kafka topic: on RabbitMQ name the queue"
                    f" ({entry.name!r}), or an exchange route (exchange, binding_key); the"
                    " service declares its queues' arguments itself"
                )

    def check_queues(
        self, *, queue_type: object, queue_arguments: Mapping[str, object]
    ) -> Mapping[str, object]:
        return _queue_types.check_queues(queue_type=queue_type, queue_arguments=queue_arguments)

    def deliveries_said(self, message: Message, *, queue: str | None) -> int | None:
        return _queue_types.deliveries_said(message, queue=queue)

    def dead_letter_reason(self, message: Message) -> str | None:
        return _queue_types.dead_letter_reason(message)

    def address(self, info: BrokerInfo, *, prefix: str) -> dict[str, Any]:
        return {"amqp_url": info.url}

    def check_endpoints(self, endpoints: Endpoints) -> None:
        if not endpoints.amqp_url:
            raise InvalidArgument("kind='rabbitmq' needs amqp_url='amqp://user:pass@host:port/'")

    def info_from_url(self, url: str, *, settings: Mapping[str, str] | None = None) -> BrokerInfo:
        """An AMQP URL carries its own TLS settings (``amqps://...?cafile=...``)."""
        if settings:
            raise InvalidArgument(
                "--kafka-option applies to Kafka only: give RabbitMQ's TLS settings in the URL"
                " (amqps://user:pass@host:5671/vhost?cafile=/path/ca.pem)"
            )
        url = url.strip()
        if not re.match(r"^amqps?://[^/]+", url):
            raise InvalidArgument(
                f"{URL_OPTION}={redact_url(url)!r} is invalid:"
                " give amqp://user:password@host:port/vhost (or amqps://)"
            )
        _check_tls_options(url)
        return BrokerInfo(kind=self.kind, url=url, provider="url")

    def shell_settings(self, info: BrokerInfo) -> dict[str, str]:
        """The AMQP URL, and the management API when the broker has its own (a local one)."""
        from message_flow_harness.brokers.rabbitmq._urls import _MANAGEMENT_ENV

        management = (
            {_MANAGEMENT_ENV: info.extra["management"]} if "management" in info.extra else {}
        )
        return {self.url_env: info.url, **management}

    def recipe(self) -> LocalRecipe:
        """A private node of the system's rabbitmq-server, or of HARNESS_RABBITMQ_ROOT's."""
        from message_flow_harness.brokers.rabbitmq._node import RabbitRecipe
        from message_flow_harness.brokers.rabbitmq._root import Installation

        return RabbitRecipe(installation=Installation.from_env())

    def local_slot(self) -> str:
        """One slot per installation: a 3.10 node never serves a 4.x request, nor the reverse."""
        from message_flow_harness.brokers.rabbitmq._root import Installation

        return Installation.from_env().slot

    def start_container(self) -> tuple[BrokerInfo, Callable[[], None]]:
        from message_flow_harness.brokers.rabbitmq._docker import start_container

        return start_container()

    def adapter(self, info: BrokerInfo, *, timeout: float = 10.0) -> BrokerAdapter:
        from message_flow_harness.brokers.rabbitmq._adapter import RabbitAdapter

        return RabbitAdapter(info, timeout=timeout)

    def detach_randomness(self) -> None:
        # aiormq draws consumer tags and message ids from the global ``random``.
        import aiormq.channel

        if getattr(aiormq.channel, "getrandbits", None) is random.getrandbits:
            aiormq.channel.getrandbits = random.Random().getrandbits  # type: ignore[attr-defined]

    def proxy_addresses(self, info: BrokerInfo) -> list[ProxyAddress]:
        match = _HOST_AND_PORT.match(info.url)
        if match is None:
            return []
        amqp_port = int(match["port"] or 5672)
        return [(free_port(), match["host"], amqp_port) for _ in range(_PROXIES)]

    def through_proxy(self, endpoints: Endpoints, info: BrokerInfo, port: int) -> Endpoints:
        # The endpoints' own URL: under Flow(topology=...) it points into the run's vhost.
        url = re.sub(
            r"^(amqps?://(?:[^@/]*@)?)[^:/]+(?::\d+)?",
            rf"\g<1>127.0.0.1:{port}",
            endpoints.amqp_url or info.url,
        )
        return dataclasses.replace(endpoints, amqp_url=url)

    def broker_restart(self, info: BrokerInfo) -> BrokerRestart:
        from message_flow_harness.brokers.rabbitmq._connection import open_adapters

        return _RabbitRestart(open_adapters(info))


def _check_tls_options(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    tls_options = [name for name in _AMQP_TLS_OPTIONS if name in query]
    if parts.scheme == "amqp" and tls_options:
        raise InvalidArgument(
            f"{URL_OPTION}={redact_url(url)!r}: {tls_options[0]} only applies to TLS:"
            " use amqps:// (and the broker's TLS port, usually 5671)"
        )
    for name in _AMQP_FILE_OPTIONS:
        for path in query.get(name, []):
            exists = os.path.isdir(path) if name == "capath" else os.path.isfile(path)
            if not exists:
                raise InvalidArgument(
                    f"{URL_OPTION}={redact_url(url)!r}: {name}={path!r} does not"
                    " exist: give the path of a PEM file readable here"
                )
