"""Steps of a run's schedule: ``from harness.schedule import Publish, Crash, ...``."""

from harness._schedule import (
    FAULT_KINDS,
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
