"""The Kafka driver: what the core asks of a Kafka broker, each answer loaded when asked."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from message_flow_harness._drivers import BrokerDriver, ProxyAddress
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._message import Endpoints
from message_flow_harness.brokers.kafka import _settings

if TYPE_CHECKING:
    from message_flow_harness._broker import BrokerAdapter, BrokerInfo
    from message_flow_harness._topology import Topology
    from message_flow_harness.brokers._local import LocalRecipe

#: How many fault proxies a broker the harness started advertises listeners for, at most.
_MAX_PROXIES = 16


class KafkaDriver(BrokerDriver):
    kind = "kafka"
    title = "Kafka"
    trigger_events = ("delivered", "committed", "sent", "output")
    url_env = _settings.URL_ENV
    probes_module = "message_flow_harness.brokers.kafka._probes"
    url_option = _settings.URL_OPTION
    url_example = "127.0.0.1:9092"
    url_metavar = "HOST:PORT"
    settings_option = _settings.KAFKA_OPTION
    settings_help = (
        "a security setting for the --kafka-bootstrap broker, repeatable: "
        + ", ".join(_settings.KAFKA_SETTINGS)
        + " (env HARNESS_KAFKA_<NAME>; prefer the environment for passwords)"
    )

    publishing_modes = ("plain", "idempotent", "transactional")

    group_sessions = True
    first_deploy_note = (
        "with no committed offsets (Flow(first_deploy=True)) a consumer with"
        " auto_offset_reset='latest' starts at the end of the partition, after the inputs"
        " published before it got its assignment"
    )

    def readiness_fix(self, endpoints: Endpoints) -> str:
        return (
            f"does the service subscribe to endpoints.input ({endpoints.input!r}) with"
            f" group_id=endpoints.group_id ({endpoints.group_id!r})? A service that takes its"
            " group id from its own settings cannot be awaited by group: give it"
            " endpoints.group_id, or pass Flow(ready=...) (an async check of your own, or False"
            " not to wait)"
        )

    def consumed_nothing_causes(self, endpoints: Endpoints) -> str:
        return (
            f"it may not subscribe to {endpoints.input!r} (endpoints.input), or start at the end"
            " of the topic (auto_offset_reset='latest')"
        )

    def check_topology(self, topology: Topology) -> None:
        for role, entry in (
            *(("input", e) for e in topology.inputs),
            *(("output", e) for e in topology.outputs),
            ("dead_letter", topology.dead_letter),
        ):
            if isinstance(entry, tuple):
                raise InvalidArgument(
                    f"Topology({role}={entry!r}) is invalid on Kafka: (exchange, binding_key) is a"
                    " RabbitMQ route; name a topic, or several in a list:"
                    f" {role}={list(entry)!r}"
                )
        if topology.publish is not None:
            raise InvalidArgument(
                f"Topology(publish={topology.publish!r}) is invalid on Kafka: inputs are published"
                " to their topic (drop publish; Message(to=...) picks the input)"
            )

    def address(self, info: BrokerInfo, *, prefix: str) -> dict[str, Any]:
        return {
            "bootstrap_servers": info.url,
            "group_id": f"{prefix}-group",
            "kafka_options": info.client_options,
        }

    def check_endpoints(self, endpoints: Endpoints) -> None:
        if not endpoints.bootstrap_servers:
            raise InvalidArgument("kind='kafka' needs bootstrap_servers='host:port'")

    def info_from_url(self, url: str, *, settings: Mapping[str, str] | None = None) -> BrokerInfo:
        return _settings.info_from_url(url, settings=settings)

    def parse_settings(self, items: Sequence[str]) -> dict[str, str]:
        return _settings.parse_kafka_settings(items)

    def recipe(self) -> LocalRecipe:
        from message_flow_harness.brokers.kafka._recipe import KafkaRecipe

        return KafkaRecipe()

    def start_container(self) -> tuple[BrokerInfo, Callable[[], None]]:
        from message_flow_harness.brokers.kafka._docker import start_container

        return start_container()

    def adapter(self, info: BrokerInfo, *, timeout: float = 10.0) -> BrokerAdapter:
        from message_flow_harness.brokers.kafka._adapter import KafkaAdapter

        return KafkaAdapter(info, timeout=timeout)

    def detach_randomness(self) -> None:
        # aiokafka picks nodes and shuffles fetches with the global ``random``.
        import aiokafka.client
        import aiokafka.conn
        import aiokafka.consumer.fetcher
        import aiokafka.partitioner

        private = random.Random()
        for module in (
            aiokafka.client,
            aiokafka.conn,
            aiokafka.consumer.fetcher,
            aiokafka.partitioner,
        ):
            if getattr(module, "random", None) is random:
                module.random = private

    def proxy_addresses(self, info: BrokerInfo) -> list[ProxyAddress]:
        # Clients connect to the *advertised* listeners: a proxy works only where
        # the broker advertises a listener at it (brokers the harness started).
        found = []
        for n in range(_MAX_PROXIES):
            listen = info.extra.get(f"proxy{n}.listen")
            advertised = info.extra.get(f"proxy{n}.advertised")
            if not (listen and advertised):
                break
            host, _, port = listen.rpartition(":")
            found.append((int(advertised.rpartition(":")[2]), host, int(port)))
        return found

    def through_proxy(self, endpoints: Endpoints, info: BrokerInfo, port: int) -> Endpoints:
        return dataclasses.replace(endpoints, bootstrap_servers=f"127.0.0.1:{port}")
