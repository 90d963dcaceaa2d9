"""Test asynchronous Kafka and RabbitMQ services against real brokers."""

from harness._broker import (
    BrokerAdapter,
    BrokerInfo,
    DestinationSpec,
    PublishReceipt,
    TapRecord,
)
from harness._errors import (
    BrokerError,
    BrokerStartError,
    BrokerUnavailable,
    DestinationError,
    HarnessError,
    HarnessTimeout,
    InvalidArgument,
)
from harness._message import HARNESS_ID_HEADER, Endpoints, Message
from harness._waiting import eventually

__all__ = (
    "HARNESS_ID_HEADER",
    "BrokerAdapter",
    "BrokerError",
    "BrokerInfo",
    "BrokerStartError",
    "BrokerUnavailable",
    "DestinationError",
    "DestinationSpec",
    "Endpoints",
    "HarnessError",
    "HarnessTimeout",
    "InvalidArgument",
    "Message",
    "PublishReceipt",
    "TapRecord",
    "eventually",
)
