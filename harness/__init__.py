"""Test asynchronous Kafka and RabbitMQ services against real brokers."""

from harness import checks, schedule, stateful, strategies
from harness._bench import BenchResult, bench
from harness._broker import (
    BrokerAdapter,
    BrokerInfo,
    DestinationSpec,
    PublishReceipt,
    TapRecord,
)
from harness._compat import serialize_ast_parsing
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
from harness._fuzz import ChecksFailed, fuzz
from harness._history import Event, History, Kind
from harness._message import HARNESS_ID_HEADER, Endpoints, Message
from harness._report import FuzzReport
from harness._runner import run
from harness._waiting import eventually

serialize_ast_parsing()  # before any thread the harness starts (see harness._compat)

__all__ = (
    "HARNESS_ID_HEADER",
    "BenchResult",
    "BrokerAdapter",
    "BrokerError",
    "BrokerInfo",
    "BrokerStartError",
    "BrokerUnavailable",
    "ChecksFailed",
    "DestinationError",
    "DestinationSpec",
    "Endpoints",
    "Event",
    "Flow",
    "FuzzReport",
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
    "bench",
    "checks",
    "eventually",
    "fuzz",
    "run",
    "schedule",
    "stateful",
    "strategies",
)
