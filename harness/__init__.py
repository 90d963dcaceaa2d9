"""Test asynchronous Kafka and RabbitMQ services against real brokers.

This file pulls together the friendly public API; the work happens in the
private modules behind it, in layers that import only downwards:

- what flows: ``_message`` (Message, Endpoints), ``_schedule`` (the steps of
  a run), ``_history`` (the recorded events), ``_checks`` (history -> verdicts);
- the broker boundary: ``_drivers`` (one BrokerDriver per kind, found by
  name) and ``_broker`` (the adapter interface); the drivers themselves live
  in the ``brokers`` package, one folder per kind, and nothing here imports
  a client library;
- one run: ``_isolation`` (fresh destinations, or a vhost per run for a
  service's own ``_topology``), ``_instances`` (the service's
  instances and their faults, through ``_proxy``), ``_environment`` (the
  run's values as environment variables), ``_service_process`` (a service
  that is an OS process), ``_probes`` (client-side recording), ``_runner``
  (schedule -> history -> verdicts);
- many runs: the fuzzer (Hypothesis search, then shrinking), ``stateful``,
  the bench, and ``_report`` (what a person reads);
- the edges: ``_cli`` (the ``harness`` command) and ``pytest_plugin``.
"""

from message_flow_harness import checks, schedule, stateful, strategies
from message_flow_harness._bench.result import BenchResult
from message_flow_harness._bench.run import bench
from message_flow_harness._broker import (
    BrokerAdapter,
    BrokerInfo,
    DestinationSpec,
    PublishReceipt,
    TapRecord,
)
from message_flow_harness._compat import serialize_ast_parsing
from message_flow_harness._correlation import Correlation, by_json_field, by_key
from message_flow_harness._errors import (
    BrokerError,
    BrokerStartError,
    BrokerUnavailable,
    DatabaseUnavailable,
    DestinationError,
    HarnessError,
    HarnessTimeout,
    InvalidArgument,
    ServiceError,
)
from message_flow_harness._fault_model import Faults
from message_flow_harness._flow import Flow, RunResult
from message_flow_harness._fuzz import ChecksFailed, fuzz
from message_flow_harness._history import Event, History, Kind
from message_flow_harness._message import HARNESS_ID_HEADER, Endpoints, Message
from message_flow_harness._report import FuzzReport
from message_flow_harness._runner import run
from message_flow_harness._service_process import process
from message_flow_harness._topology import Topic, Topology
from message_flow_harness._waiting import eventually

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
    "Correlation",
    "DatabaseUnavailable",
    "DestinationError",
    "DestinationSpec",
    "Endpoints",
    "Event",
    "Faults",
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
    "Topic",
    "Topology",
    "bench",
    "by_json_field",
    "by_key",
    "checks",
    "eventually",
    "fuzz",
    "process",
    "run",
    "schedule",
    "stateful",
    "strategies",
)
