"""Test asynchronous Kafka and RabbitMQ services against real brokers."""

from harness import checks
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
    ServiceError,
)
from harness._flow import Flow, RunResult
from harness._history import Event, History, Kind
from harness._message import HARNESS_ID_HEADER, Endpoints, Message
from harness._runner import run
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
    "Event",
    "Flow",
    "HarnessError",
    "HarnessTimeout",
    "History",
    "InvalidArgument",
    "Kind",
    "Message",
    "PublishReceipt",
    "RunResult",
    "ServiceError",
    "TapRecord",
    "checks",
    "eventually",
    "run",
)
