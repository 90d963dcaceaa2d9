"""What flows: messages, and the endpoints a system under test is told about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from message_flow_harness._drivers import BROKER_KINDS, check_kind, driver
from message_flow_harness._errors import InvalidArgument
from message_flow_harness._redact import redact_options, redact_url

#: A broker kind: a key of the driver registry (see harness._drivers).
BrokerKind = str

#: Header stamped on every input message the harness publishes; services that
#: copy headers to their outputs are correlated through it automatically.
HARNESS_ID_HEADER = "x-harness-id"


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """One message: an optional key, a byte payload and string-keyed byte headers.

    ``to`` names the input an input message is published to, as the flow's
    ``Topology`` names it (``Message(b'{"id": 1}', to="payments")``); None:
    the flow's first (or only) input.
    """

    value: bytes = b""
    key: bytes | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)
    to: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes):
            raise InvalidArgument(
                f"Message value={self.value!r} is {type(self.value).__name__}: "
                "pass bytes (encode text with .encode())"
            )
        if self.key is not None and not isinstance(self.key, bytes):
            raise InvalidArgument(
                f"Message key={self.key!r} is {type(self.key).__name__}: pass bytes or None"
            )
        for name, header in self.headers.items():
            if not isinstance(name, str) or not isinstance(header, bytes):
                raise InvalidArgument(
                    f"Message header {name!r}={header!r} is invalid: "
                    "header names are str and values are bytes"
                )
        if self.to is not None and (not isinstance(self.to, str) or not self.to):
            raise InvalidArgument(
                f"Message to={self.to!r} is invalid: name an input of the flow's topology,"
                " e.g. to='payments', or leave it None for the first input"
            )

    def __repr__(self) -> str:
        # Valid Python, as schedules print it; ``to`` only when it says something.
        to = "" if self.to is None else f", to={self.to!r}"
        return f"Message(value={self.value!r}, key={self.key!r}, headers={self.headers!r}{to})"

    @property
    def harness_id(self) -> str | None:
        """The harness id header, decoded, or None for a message the harness did not stamp."""
        raw = self.headers.get(HARNESS_ID_HEADER)
        return None if raw is None else raw.decode("utf-8", "replace")

    def with_headers(self, **extra: bytes) -> Message:
        """A copy with headers added (or replaced)."""
        return Message(
            value=self.value, key=self.key, headers={**self.headers, **extra}, to=self.to
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Endpoints:
    """What the system under test is told for one run: where the broker is and what to use.

    ``input``, ``output`` and ``dead_letter`` are destination names (Kafka
    topics or RabbitMQ queues), unique per run, created by the harness before
    the service starts and deleted after it stops. Under
    ``Flow(topology=...)`` they are the run's names of the topology's first
    input, first output and dead letter, and ``names`` maps every name the
    topology gives to the run's: on Kafka a topic unique to the run
    (``{"orders": "h-1a2b-orders", ...}``), on RabbitMQ the same name, in the
    run's own vhost (``amqp_url`` points into it).

    ``kafka_options`` are the keyword arguments a Kafka client needs beyond
    ``bootstrap_servers`` to reach this broker (SASL/TLS: ``security_protocol``,
    ``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``,
    ``ssl_context``); empty for a plaintext broker. Pass them to every client:
    ``AIOKafkaConsumer(..., bootstrap_servers=endpoints.bootstrap_servers,
    **endpoints.kafka_options)``. An ``amqp_url`` carries its TLS settings
    itself (``amqps://...?cafile=...``). The repr masks passwords.
    """

    kind: BrokerKind
    input: str
    output: str
    dead_letter: str
    bootstrap_servers: str | None = None
    amqp_url: str | None = None
    group_id: str | None = None
    kafka_options: Mapping[str, object] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        fields = [
            f"kind={self.kind!r}",
            f"input={self.input!r}",
            f"output={self.output!r}",
            f"dead_letter={self.dead_letter!r}",
            f"bootstrap_servers={self.bootstrap_servers!r}",
            f"amqp_url={None if self.amqp_url is None else redact_url(self.amqp_url)!r}",
            f"group_id={self.group_id!r}",
        ]
        if self.kafka_options:
            fields.append(f"kafka_options={redact_options(self.kafka_options)!r}")
        if self.names:
            fields.append(f"names={dict(self.names)!r}")
        return f"Endpoints({', '.join(fields)})"

    def __post_init__(self) -> None:
        if self.kind not in BROKER_KINDS:
            raise InvalidArgument(f"kind={self.kind!r} is invalid: use one of {BROKER_KINDS}")
        driver(check_kind(self.kind)).check_endpoints(self)
