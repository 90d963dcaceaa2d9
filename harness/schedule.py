"""Steps of a run's schedule: ``from message_flow_harness.schedule import Publish, Crash, ...``."""

from message_flow_harness._schedule import (
    FAULT_KINDS,
    OPT_IN_FAULT_KINDS,
    TRIGGER_EVENTS,
    After,
    BrokerRestart,
    Crash,
    Cut,
    Fault,
    Join,
    Latency,
    Leave,
    Pause,
    Publish,
    Restart,
    Settle,
    Step,
)

__all__ = (
    "FAULT_KINDS",
    "OPT_IN_FAULT_KINDS",
    "TRIGGER_EVENTS",
    "After",
    "BrokerRestart",
    "Crash",
    "Cut",
    "Fault",
    "Join",
    "Latency",
    "Leave",
    "Pause",
    "Publish",
    "Restart",
    "Settle",
    "Step",
)
